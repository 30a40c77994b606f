//! Kafka administration that rust-rdkafka does not wrap: ACLs, SCRAM users and
//! incremental topic settings, called straight into librdkafka (2.10).
//!
//! This is the crate's only `unsafe` code. Every call follows one pattern
//! ([`request`]): build the C request objects, hand them to librdkafka with
//! fresh admin options and a fresh reply queue, wait on that queue for the one
//! result event (librdkafka always answers, with a result or an error, unless
//! `timeout` passes first), copy what the event says into Rust values, and
//! free everything. librdkafka copies the request objects when a call is made,
//! so the guards below free them once the call returns; everything read from
//! an event belongs to the event, which is freed after it has been copied.
//!
//! The functions block the calling thread for up to `timeout`: call them from
//! a plain thread or `tokio::task::spawn_blocking`. They use the native handle
//! of an [`AdminClient`] made from the sector operator's client settings.
#![allow(unsafe_code)]

use crate::Error;
use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char};
use std::time::Duration;

/// What an ACL is about. `Cluster` is the single `kafka-cluster` resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
    /// Anything else librdkafka reports.
    Unknown,
}

/// How an ACL's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PatternType {
    Literal,
    Prefixed,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    Allow,
    Deny,
    Unknown,
}

/// One ACL: `principal` (e.g. `User:oefa`) from `host` (`*`: any) is allowed
/// or denied `operation` on a resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    pub principal: String,
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    pub operation: Operation,
    pub permission: Permission,
    pub host: String,
}

impl AclBinding {
    /// Allows `principal`, from any host, `operation` on the resource named
    /// exactly `name`.
    pub fn allow(
        principal: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Self {
        Self {
            principal: principal.to_owned(),
            resource_type,
            name: name.to_owned(),
            pattern: PatternType::Literal,
            operation,
            permission: Permission::Allow,
            host: "*".to_owned(),
        }
    }
}

impl std::fmt::Display for AclBinding {
    /// `User:oefa ALLOW WRITE topic eco.inbox.minam`, with `prefixed` or the
    /// host only when they are not the usual literal name and any host.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let upper = |d: &dyn std::fmt::Debug| format!("{d:?}").to_uppercase();
        let operation = match self.operation {
            Operation::ClusterAction => "CLUSTER_ACTION".to_owned(),
            Operation::DescribeConfigs => "DESCRIBE_CONFIGS".to_owned(),
            Operation::AlterConfigs => "ALTER_CONFIGS".to_owned(),
            Operation::IdempotentWrite => "IDEMPOTENT_WRITE".to_owned(),
            other => upper(&other),
        };
        let resource = match self.resource_type {
            ResourceType::TransactionalId => "transactional-id".to_owned(),
            other => format!("{other:?}").to_lowercase(),
        };
        write!(
            f,
            "{} {} {operation} {resource}{} {}",
            self.principal,
            upper(&self.permission),
            if self.pattern == PatternType::Literal {
                ""
            } else {
                " prefixed"
            },
            self.name
        )?;
        if self.host != "*" {
            write!(f, " from {}", self.host)?;
        }
        Ok(())
    }
}

/// SCRAM iterations of the credentials this module makes (Kafka accepts 4096
/// to 16384).
pub const SCRAM_ITERATIONS: i32 = 8192;

/// Adds `acls`. Adding one that exists changes nothing.
pub fn create_acls<C: ClientContext>(
    admin: &AdminClient<C>,
    acls: &[AclBinding],
    timeout: Duration,
) -> Result<(), Error> {
    if acls.is_empty() {
        return Ok(());
    }
    let op = "create ACLs";
    let bindings = Bindings::new(op, acls, false)?;
    request(
        admin,
        op,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS,
        rd::RD_KAFKA_EVENT_CREATEACLS_RESULT,
        timeout,
        |rk, options, queue| unsafe {
            rd::rd_kafka_CreateAcls(
                rk,
                bindings.0.as_ptr() as *mut _,
                bindings.0.len(),
                options,
                queue,
            )
        },
        |event| unsafe {
            let result = rd::rd_kafka_event_CreateAcls_result(event);
            let mut count = 0;
            let results = rd::rd_kafka_CreateAcls_result_acls(result, &mut count);
            // One result per ACL, in the order given.
            for (i, acl) in acls.iter().enumerate().take(count) {
                let error = rd::rd_kafka_acl_result_error(*results.add(i));
                if let Some(error) = item_error(op, &acl.to_string(), error) {
                    return Err(error);
                }
            }
            Ok(())
        },
    )
}

/// Every ACL of `principal` (e.g. `User:oefa`), or every ACL of the cluster
/// when `principal` is `None`.
pub fn describe_acls<C: ClientContext>(
    admin: &AdminClient<C>,
    principal: Option<&str>,
    timeout: Duration,
) -> Result<Vec<AclBinding>, Error> {
    let op = "describe ACLs";
    let principal = principal.map(|p| c_string(op, p)).transpose()?;
    let mut errstr = [0 as c_char; 512];
    let filter = Bindings(vec![unsafe {
        rd::rd_kafka_AclBindingFilter_new(
            rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_ANY,
            std::ptr::null(),
            rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_ANY,
            principal.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()),
            std::ptr::null(),
            rd::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ANY,
            rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ANY,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    }]);
    if filter.0[0].is_null() {
        return Err(invalid(op, unsafe { text(errstr.as_ptr()) }));
    }
    request(
        admin,
        op,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEACLS,
        rd::RD_KAFKA_EVENT_DESCRIBEACLS_RESULT,
        timeout,
        |rk, options, queue| unsafe { rd::rd_kafka_DescribeAcls(rk, filter.0[0], options, queue) },
        |event| unsafe {
            let result = rd::rd_kafka_event_DescribeAcls_result(event);
            let mut count = 0;
            let acls = rd::rd_kafka_DescribeAcls_result_acls(result, &mut count);
            Ok((0..count).map(|i| read_binding(*acls.add(i))).collect())
        },
    )
}

/// Removes exactly `acls` (each one is matched as given: its name literally,
/// its host, operation and permission). Returns how many ACLs were removed.
pub fn delete_acls<C: ClientContext>(
    admin: &AdminClient<C>,
    acls: &[AclBinding],
    timeout: Duration,
) -> Result<usize, Error> {
    if acls.is_empty() {
        return Ok(0);
    }
    let op = "delete ACLs";
    let filters = Bindings::new(op, acls, true)?;
    request(
        admin,
        op,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DELETEACLS,
        rd::RD_KAFKA_EVENT_DELETEACLS_RESULT,
        timeout,
        |rk, options, queue| unsafe {
            rd::rd_kafka_DeleteAcls(
                rk,
                filters.0.as_ptr() as *mut _,
                filters.0.len(),
                options,
                queue,
            )
        },
        |event| unsafe {
            let result = rd::rd_kafka_event_DeleteAcls_result(event);
            let mut count = 0;
            let responses = rd::rd_kafka_DeleteAcls_result_responses(result, &mut count);
            let mut removed = 0;
            for (i, acl) in acls.iter().enumerate().take(count) {
                let response = *responses.add(i);
                let error = rd::rd_kafka_DeleteAcls_result_response_error(response);
                if let Some(error) = item_error(op, &acl.to_string(), error) {
                    return Err(error);
                }
                let mut matching = 0;
                rd::rd_kafka_DeleteAcls_result_response_matching_acls(response, &mut matching);
                removed += matching;
            }
            Ok(removed)
        },
    )
}

/// The SCRAM mechanisms each of `users` has credentials for (none: the user
/// does not exist).
pub fn describe_scram_users<C: ClientContext>(
    admin: &AdminClient<C>,
    users: &[&str],
    timeout: Duration,
) -> Result<BTreeMap<String, Vec<ScramMechanism>>, Error> {
    let mut found: BTreeMap<String, Vec<ScramMechanism>> =
        users.iter().map(|u| (u.to_string(), Vec::new())).collect();
    if users.is_empty() {
        return Ok(found);
    }
    let op = "describe SCRAM users";
    let names = users
        .iter()
        .map(|u| c_string(op, u))
        .collect::<Result<Vec<_>, _>>()?;
    let mut pointers: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    request(
        admin,
        op,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBEUSERSCRAMCREDENTIALS,
        rd::RD_KAFKA_EVENT_DESCRIBEUSERSCRAMCREDENTIALS_RESULT,
        timeout,
        |rk, options, queue| unsafe {
            rd::rd_kafka_DescribeUserScramCredentials(
                rk,
                pointers.as_mut_ptr(),
                pointers.len(),
                options,
                queue,
            )
        },
        |event| unsafe {
            let result = rd::rd_kafka_event_DescribeUserScramCredentials_result(event);
            let mut count = 0;
            let descriptions =
                rd::rd_kafka_DescribeUserScramCredentials_result_descriptions(result, &mut count);
            for i in 0..count {
                let description = *descriptions.add(i);
                let user = text(rd::rd_kafka_UserScramCredentialsDescription_user(
                    description,
                ));
                let error = rd::rd_kafka_UserScramCredentialsDescription_error(description);
                // A user without credentials is RESOURCE_NOT_FOUND: it does not exist.
                if !error.is_null()
                    && RDKafkaErrorCode::from(rd::rd_kafka_error_code(error))
                        == RDKafkaErrorCode::ResourceNotFound
                {
                    continue;
                }
                if let Some(error) = item_error(op, &user, error) {
                    return Err(error);
                }
                let infos = rd::rd_kafka_UserScramCredentialsDescription_scramcredentialinfo_count(
                    description,
                );
                let mechanisms = found.entry(user).or_default();
                for j in 0..infos {
                    let info = rd::rd_kafka_UserScramCredentialsDescription_scramcredentialinfo(
                        description,
                        j,
                    );
                    mechanisms.push(match rd::rd_kafka_ScramCredentialInfo_mechanism(info) {
                        rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_256 => {
                            ScramMechanism::Sha256
                        }
                        rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512 => {
                            ScramMechanism::Sha512
                        }
                        _ => ScramMechanism::Unknown,
                    });
                }
            }
            Ok(found)
        },
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
    Unknown,
}

/// Sets the SCRAM-SHA-512 password of each `(user, password)`, creating the
/// user if needed (a random salt, [`SCRAM_ITERATIONS`] iterations).
pub fn upsert_scram_users<C: ClientContext>(
    admin: &AdminClient<C>,
    credentials: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), Error> {
    if credentials.is_empty() {
        return Ok(());
    }
    let op = "set SCRAM credentials";
    let mut alterations = Alterations(Vec::with_capacity(credentials.len()));
    for (user, password) in credentials {
        let name = c_string(op, user)?;
        // No salt given: librdkafka makes a random 64-byte one (it is built
        // with OpenSSL, the `ssl` feature).
        let alteration = unsafe {
            rd::rd_kafka_UserScramCredentialUpsertion_new(
                name.as_ptr(),
                rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512,
                SCRAM_ITERATIONS,
                password.as_ptr(),
                password.len(),
                std::ptr::null(),
                0,
            )
        };
        alterations.0.push(alteration);
    }
    request(
        admin,
        op,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERUSERSCRAMCREDENTIALS,
        rd::RD_KAFKA_EVENT_ALTERUSERSCRAMCREDENTIALS_RESULT,
        timeout,
        |rk, options, queue| unsafe {
            rd::rd_kafka_AlterUserScramCredentials(
                rk,
                alterations.0.as_mut_ptr(),
                alterations.0.len(),
                options,
                queue,
            )
        },
        |event| unsafe {
            let result = rd::rd_kafka_event_AlterUserScramCredentials_result(event);
            let mut count = 0;
            let responses =
                rd::rd_kafka_AlterUserScramCredentials_result_responses(result, &mut count);
            for i in 0..count {
                let response = *responses.add(i);
                let user = text(rd::rd_kafka_AlterUserScramCredentials_result_response_user(
                    response,
                ));
                let error = rd::rd_kafka_AlterUserScramCredentials_result_response_error(response);
                if let Some(error) = item_error(op, &user, error) {
                    return Err(error);
                }
            }
            Ok(())
        },
    )
}

/// Sets topic `topic`'s `settings` (IncrementalAlterConfigs: the topic's
/// other settings stay as they are).
pub fn set_topic_configs<C: ClientContext>(
    admin: &AdminClient<C>,
    topic: &str,
    settings: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), Error> {
    if settings.is_empty() {
        return Ok(());
    }
    let op = "set topic settings";
    let name = c_string(op, topic)?;
    let resource = ConfigResource(unsafe {
        rd::rd_kafka_ConfigResource_new(
            rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
            name.as_ptr(),
        )
    });
    for (key, value) in settings {
        let (key, value) = (c_string(op, key)?, c_string(op, value)?);
        let error = unsafe {
            rd::rd_kafka_ConfigResource_add_incremental_config(
                resource.0,
                key.as_ptr(),
                rd::rd_kafka_AlterConfigOpType_t::RD_KAFKA_ALTER_CONFIG_OP_TYPE_SET,
                value.as_ptr(),
            )
        };
        if !error.is_null() {
            // This error is ours to free (unlike those read from events).
            let failure = unsafe { item_error(op, topic, error) };
            unsafe { rd::rd_kafka_error_destroy(error) };
            if let Some(failure) = failure {
                return Err(failure);
            }
        }
    }
    let mut resources = [resource.0];
    request(
        admin,
        op,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_INCREMENTALALTERCONFIGS,
        rd::RD_KAFKA_EVENT_INCREMENTALALTERCONFIGS_RESULT,
        timeout,
        |rk, options, queue| unsafe {
            rd::rd_kafka_IncrementalAlterConfigs(rk, resources.as_mut_ptr(), 1, options, queue)
        },
        |event| unsafe {
            let result = rd::rd_kafka_event_IncrementalAlterConfigs_result(event);
            let mut count = 0;
            let results = rd::rd_kafka_IncrementalAlterConfigs_result_resources(result, &mut count);
            for i in 0..count {
                let resource = *results.add(i);
                let code = RDKafkaErrorCode::from(rd::rd_kafka_ConfigResource_error(resource));
                if code != RDKafkaErrorCode::NoError {
                    let message = text(rd::rd_kafka_ConfigResource_error_string(resource));
                    return Err(failed(op, &format!("{topic}: {message}"), code));
                }
            }
            Ok(())
        },
    )
}

/// Runs one admin request. `submit` gets the client's native handle, the
/// options and the reply queue, and must make exactly one librdkafka admin
/// call; `read` gets the result event, which is checked to be of type
/// `expected` and without a request-level error, and is freed afterwards.
fn request<C: ClientContext, T>(
    admin: &AdminClient<C>,
    op: &str,
    api: rd::rd_kafka_admin_op_t,
    expected: i32,
    timeout: Duration,
    submit: impl FnOnce(
        *mut rd::rd_kafka_t,
        *const rd::rd_kafka_AdminOptions_t,
        *mut rd::rd_kafka_queue_t,
    ),
    read: impl FnOnce(*mut rd::rd_kafka_event_t) -> Result<T, Error>,
) -> Result<T, Error> {
    let rk = admin.inner().native_ptr();
    let millis = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    let options = AdminOptions(unsafe { rd::rd_kafka_AdminOptions_new(rk, api) });
    if options.0.is_null() {
        return Err(invalid(op, "librdkafka refused the admin options".into()));
    }
    let mut errstr = [0 as c_char; 512];
    let set = unsafe {
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options.0,
            millis,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if set != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Err(invalid(op, unsafe { text(errstr.as_ptr()) }));
    }
    let queue = Queue(unsafe { rd::rd_kafka_queue_new(rk) });
    submit(rk, options.0, queue.0);
    // librdkafka times the request out itself; the margin only guards
    // against waiting forever.
    let wait = millis.saturating_add(5_000);
    let event = Event(unsafe { rd::rd_kafka_queue_poll(queue.0, wait) });
    if event.0.is_null() {
        return Err(failed(
            op,
            &format!("no answer within {timeout:?}"),
            RDKafkaErrorCode::OperationTimedOut,
        ));
    }
    let code = RDKafkaErrorCode::from(unsafe { rd::rd_kafka_event_error(event.0) });
    if code != RDKafkaErrorCode::NoError {
        let message = unsafe { text(rd::rd_kafka_event_error_string(event.0)) };
        return Err(failed(op, &message, code));
    }
    let kind = unsafe { rd::rd_kafka_event_type(event.0) };
    if kind != expected {
        return Err(failed(
            op,
            &format!("librdkafka answered with event type {kind}"),
            RDKafkaErrorCode::Fail,
        ));
    }
    read(event.0)
}

/// The error of one item of a result (`error` belongs to the caller), if any.
unsafe fn item_error(op: &str, item: &str, error: *const rd::rd_kafka_error_t) -> Option<Error> {
    if error.is_null() {
        return None;
    }
    let code = RDKafkaErrorCode::from(unsafe { rd::rd_kafka_error_code(error) });
    if code == RDKafkaErrorCode::NoError {
        return None;
    }
    let message = unsafe { text(rd::rd_kafka_error_string(error)) };
    Some(failed(op, &format!("{item}: {message}"), code))
}

fn failed(op: &str, detail: &str, code: RDKafkaErrorCode) -> Error {
    Error::kafka(
        format!("could not {op}: {detail}"),
        KafkaError::AdminOp(code),
    )
}

fn invalid(op: &str, detail: String) -> Error {
    failed(op, &detail, RDKafkaErrorCode::InvalidArgument)
}

fn c_string(op: &str, text: &str) -> Result<CString, Error> {
    CString::new(text).map_err(|_| invalid(op, format!("{text:?} contains a NUL byte")))
}

/// A C string owned by librdkafka, copied; empty for NULL.
unsafe fn text(pointer: *const c_char) -> String {
    if pointer.is_null() {
        return String::new();
    }
    unsafe { CStr::from_ptr(pointer) }
        .to_string_lossy()
        .into_owned()
}

/// Copies an ACL binding owned by a result event.
unsafe fn read_binding(acl: *const rd::rd_kafka_AclBinding_t) -> AclBinding {
    use rd::rd_kafka_AclOperation_t as O;
    use rd::rd_kafka_ResourceType_t as R;
    unsafe {
        AclBinding {
            principal: text(rd::rd_kafka_AclBinding_principal(acl)),
            resource_type: match rd::rd_kafka_AclBinding_restype(acl) {
                R::RD_KAFKA_RESOURCE_TOPIC => ResourceType::Topic,
                R::RD_KAFKA_RESOURCE_GROUP => ResourceType::Group,
                R::RD_KAFKA_RESOURCE_BROKER => ResourceType::Cluster,
                R::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID => ResourceType::TransactionalId,
                _ => ResourceType::Unknown,
            },
            name: text(rd::rd_kafka_AclBinding_name(acl)),
            pattern: match rd::rd_kafka_AclBinding_resource_pattern_type(acl) {
                rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL => {
                    PatternType::Literal
                }
                rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED => {
                    PatternType::Prefixed
                }
                _ => PatternType::Unknown,
            },
            operation: match rd::rd_kafka_AclBinding_operation(acl) {
                O::RD_KAFKA_ACL_OPERATION_ALL => Operation::All,
                O::RD_KAFKA_ACL_OPERATION_READ => Operation::Read,
                O::RD_KAFKA_ACL_OPERATION_WRITE => Operation::Write,
                O::RD_KAFKA_ACL_OPERATION_CREATE => Operation::Create,
                O::RD_KAFKA_ACL_OPERATION_DELETE => Operation::Delete,
                O::RD_KAFKA_ACL_OPERATION_ALTER => Operation::Alter,
                O::RD_KAFKA_ACL_OPERATION_DESCRIBE => Operation::Describe,
                O::RD_KAFKA_ACL_OPERATION_CLUSTER_ACTION => Operation::ClusterAction,
                O::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS => Operation::DescribeConfigs,
                O::RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS => Operation::AlterConfigs,
                O::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE => Operation::IdempotentWrite,
                _ => Operation::Unknown,
            },
            permission: match rd::rd_kafka_AclBinding_permission_type(acl) {
                rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW => {
                    Permission::Allow
                }
                rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_DENY => {
                    Permission::Deny
                }
                _ => Permission::Unknown,
            },
            host: text(rd::rd_kafka_AclBinding_host(acl)),
        }
    }
}

/// ACL bindings (or, with `filter`, exact-match filters) made by librdkafka,
/// destroyed on drop.
struct Bindings(Vec<*mut rd::rd_kafka_AclBinding_t>);

impl Bindings {
    fn new(op: &str, acls: &[AclBinding], filter: bool) -> Result<Self, Error> {
        use rd::rd_kafka_AclOperation_t as O;
        use rd::rd_kafka_ResourceType_t as R;
        let mut made = Bindings(Vec::with_capacity(acls.len()));
        for acl in acls {
            let unsupported = || invalid(op, format!("{acl}: not a kind of ACL this tool makes"));
            let resource_type = match acl.resource_type {
                ResourceType::Topic => R::RD_KAFKA_RESOURCE_TOPIC,
                ResourceType::Group => R::RD_KAFKA_RESOURCE_GROUP,
                ResourceType::Cluster => R::RD_KAFKA_RESOURCE_BROKER,
                ResourceType::TransactionalId => R::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID,
                ResourceType::Unknown => return Err(unsupported()),
            };
            let pattern = match acl.pattern {
                PatternType::Literal => {
                    rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_LITERAL
                }
                PatternType::Prefixed => {
                    rd::rd_kafka_ResourcePatternType_t::RD_KAFKA_RESOURCE_PATTERN_PREFIXED
                }
                PatternType::Unknown => return Err(unsupported()),
            };
            let operation = match acl.operation {
                Operation::All => O::RD_KAFKA_ACL_OPERATION_ALL,
                Operation::Read => O::RD_KAFKA_ACL_OPERATION_READ,
                Operation::Write => O::RD_KAFKA_ACL_OPERATION_WRITE,
                Operation::Create => O::RD_KAFKA_ACL_OPERATION_CREATE,
                Operation::Delete => O::RD_KAFKA_ACL_OPERATION_DELETE,
                Operation::Alter => O::RD_KAFKA_ACL_OPERATION_ALTER,
                Operation::Describe => O::RD_KAFKA_ACL_OPERATION_DESCRIBE,
                Operation::ClusterAction => O::RD_KAFKA_ACL_OPERATION_CLUSTER_ACTION,
                Operation::DescribeConfigs => O::RD_KAFKA_ACL_OPERATION_DESCRIBE_CONFIGS,
                Operation::AlterConfigs => O::RD_KAFKA_ACL_OPERATION_ALTER_CONFIGS,
                Operation::IdempotentWrite => O::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE,
                Operation::Unknown => return Err(unsupported()),
            };
            let permission = match acl.permission {
                Permission::Allow => {
                    rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW
                }
                Permission::Deny => {
                    rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_DENY
                }
                Permission::Unknown => return Err(unsupported()),
            };
            let name = c_string(op, &acl.name)?;
            let principal = c_string(op, &acl.principal)?;
            let host = c_string(op, &acl.host)?;
            let mut errstr = [0 as c_char; 512];
            let new = if filter {
                rd::rd_kafka_AclBindingFilter_new
            } else {
                rd::rd_kafka_AclBinding_new
            };
            let binding = unsafe {
                new(
                    resource_type,
                    name.as_ptr(),
                    pattern,
                    principal.as_ptr(),
                    host.as_ptr(),
                    operation,
                    permission,
                    errstr.as_mut_ptr(),
                    errstr.len(),
                )
            };
            if binding.is_null() {
                let reason = unsafe { text(errstr.as_ptr()) };
                return Err(invalid(op, format!("{acl}: {reason}")));
            }
            made.0.push(binding);
        }
        Ok(made)
    }
}

impl Drop for Bindings {
    fn drop(&mut self) {
        for binding in &self.0 {
            if !binding.is_null() {
                // Filters are bindings too, freed the same way.
                unsafe { rd::rd_kafka_AclBinding_destroy(*binding) };
            }
        }
    }
}

/// SCRAM credential changes, destroyed on drop.
struct Alterations(Vec<*mut rd::rd_kafka_UserScramCredentialAlteration_t>);

impl Drop for Alterations {
    fn drop(&mut self) {
        for alteration in &self.0 {
            unsafe { rd::rd_kafka_UserScramCredentialAlteration_destroy(*alteration) };
        }
    }
}

struct ConfigResource(*mut rd::rd_kafka_ConfigResource_t);

impl Drop for ConfigResource {
    fn drop(&mut self) {
        unsafe { rd::rd_kafka_ConfigResource_destroy(self.0) };
    }
}

struct AdminOptions(*mut rd::rd_kafka_AdminOptions_t);

impl Drop for AdminOptions {
    fn drop(&mut self) {
        if !self.0.is_null() {
            unsafe { rd::rd_kafka_AdminOptions_destroy(self.0) };
        }
    }
}

/// A reply queue. Destroying it while a request is still in flight is safe:
/// librdkafka keeps the queue alive until the request's answer is dropped.
struct Queue(*mut rd::rd_kafka_queue_t);

impl Drop for Queue {
    fn drop(&mut self) {
        unsafe { rd::rd_kafka_queue_destroy(self.0) };
    }
}

struct Event(*mut rd::rd_kafka_event_t);

impl Drop for Event {
    fn drop(&mut self) {
        if !self.0.is_null() {
            unsafe { rd::rd_kafka_event_destroy(self.0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_read_as_an_operator_writes_them() {
        let acl = AclBinding::allow(
            "User:oefa",
            Operation::DescribeConfigs,
            ResourceType::Topic,
            "eco.inbox.oefa",
        );
        assert_eq!(
            acl.to_string(),
            "User:oefa ALLOW DESCRIBE_CONFIGS topic eco.inbox.oefa"
        );
    }

    /// Every binding this module makes is accepted by librdkafka, and is
    /// freed (run under a leak checker to see the latter).
    #[test]
    fn bindings_and_filters_are_made_and_freed() {
        let acls = [
            AclBinding::allow("User:a", Operation::Read, ResourceType::Group, "eco.node.a"),
            AclBinding::allow(
                "User:a",
                Operation::Write,
                ResourceType::Topic,
                "eco.inbox.b",
            ),
            AclBinding::allow(
                "User:a",
                Operation::IdempotentWrite,
                ResourceType::Cluster,
                "kafka-cluster",
            ),
        ];
        assert_eq!(Bindings::new("test", &acls, false).unwrap().0.len(), 3);
        assert_eq!(Bindings::new("test", &acls, true).unwrap().0.len(), 3);
        let bad = AclBinding {
            pattern: PatternType::Unknown,
            ..acls[0].clone()
        };
        assert!(Bindings::new("test", &[bad], false).is_err());
    }
}
