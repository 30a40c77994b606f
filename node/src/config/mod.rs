//! The node's configuration: defaults, then a TOML file, then `ECOINTEGRA_*`
//! environment variables (nested keys joined by `__`, e.g.
//! `ECOINTEGRA_KAFKA__BOOTSTRAP_SERVERS`). Unknown keys are rejected and every
//! invalid value is named.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub mod day;

/// Bounds of `kafka.max_record_bytes`.
pub const MIN_RECORD_BYTES: u32 = 128 * 1024;
pub const MAX_RECORD_BYTES: u32 = 64 << 20;
/// Room in a record for everything but a chunk's data: the envelope, its
/// signature, the encryption's overhead, the record's key and headers.
pub const RECORD_OVERHEAD: u32 = 32 * 1024;

/// A configuration that cannot be used, naming the field at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {message}")]
pub struct ConfigError {
    pub message: String,
}

impl ConfigError {
    fn field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self {
            message: format!("{field}: {problem}"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's institution id, e.g. `senamhi`: lowercase letters, digits, '-'.
    pub institution: String,
    /// A node on one local broker, for development and tests: it creates its
    /// topics when missing and accepts a replication factor of 1. Off (the
    /// default), the node expects the topics the sector operator provisioned
    /// and checks them, and refuses a replication factor below 2.
    #[serde(default)]
    pub development: bool,
    /// Where the node keeps its store and document files.
    pub data_dir: PathBuf,
    pub grpc: GrpcConfig,
    pub kafka: KafkaConfig,
    pub keys: KeysConfig,
    pub transfer: TransferConfig,
    pub health: HealthConfig,
    pub deadlines: DeadlineConfig,
    pub tracking: TrackingConfig,
    /// The HTTP server of `/metrics`, `/livez` and `/readyz`.
    #[serde(default)]
    pub http: HttpConfig,
    /// Trace export (OTLP/gRPC).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The web console for citizens, clerks and operators.
    #[serde(default)]
    pub web: WebConfig,
    pub auth: AuthConfig,
    /// Telling people when a filing moves: citizens by e-mail, institutional
    /// systems by webhook.
    #[serde(default)]
    pub notify: NotifyConfig,
    /// The PIDE `IOTramite` adapter: the institution's document-management
    /// system (SGD) sends and receives filings through the node as it did
    /// through PIDE.
    #[serde(default)]
    pub pide: Option<PideConfig>,
}

/// `[pide]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PideConfig {
    /// Where the node serves PIDE's hub side to the SGD: SOAP 1.1 at
    /// `/IOTramite` (WSDL at `/IOTramite?wsdl`), and the annex links.
    pub listen: SocketAddr,
    /// How the SGD reaches that listener (e.g. through a TLS proxy), for the
    /// annex links given to it; default `http://<listen>`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The SGD's user name when it calls the node (HTTP Basic).
    pub username: String,
    /// A file holding the SGD's password (never the password itself).
    pub password_file: PathBuf,
    /// The SGD's own endpoint (PIDE's entity side): filings for this
    /// institution are delivered to it, and the cargos of those it sent are
    /// pushed to it. Absent: the SGD only sends and asks.
    #[serde(default)]
    pub sgd_url: Option<String>,
    /// Credentials the node calls the SGD with (HTTP Basic), if it wants any.
    #[serde(default)]
    pub sgd_username: Option<String>,
    #[serde(default)]
    pub sgd_password_file: Option<PathBuf>,
    /// The largest SOAP request taken, in bytes, checked before parsing
    /// (the main PDF travels inside it, in base64).
    #[serde(default = "PideConfig::default_max_request_bytes")]
    pub max_request_bytes: u64,
    /// How long fetching one annex from `vurldocanx` may take.
    #[serde(default = "PideConfig::default_fetch_timeout_secs")]
    pub fetch_timeout_secs: u64,
    /// How long a link to a delivered filing's annexes works.
    #[serde(default = "PideConfig::default_link_minutes")]
    pub link_minutes: u64,
    /// What `getTipoDocumento` answers: the document types of the sector.
    #[serde(default = "PideConfig::default_document_types")]
    pub document_types: Vec<DocumentType>,
}

/// One document type of `getTipoDocumento`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentType {
    pub code: String,
    pub name: String,
}

impl PideConfig {
    fn default_max_request_bytes() -> u64 {
        64 << 20
    }
    fn default_fetch_timeout_secs() -> u64 {
        60
    }
    fn default_link_minutes() -> u64 {
        7 * 24 * 60
    }
    fn default_document_types() -> Vec<DocumentType> {
        [
            ("01", "OFICIO"),
            ("02", "CARTA"),
            ("03", "MEMORANDO"),
            ("04", "INFORME"),
            ("05", "SOLICITUD"),
            ("06", "RESOLUCION"),
            ("07", "OFICIO MULTIPLE"),
        ]
        .into_iter()
        .map(|(code, name)| DocumentType {
            code: code.into(),
            name: name.into(),
        })
        .collect()
    }
}

/// `[notify]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Mail to the citizens who gave an address, when their filing moves.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    /// JSON POSTs to the institution's own systems.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

/// `[notify.smtp]`: the institution's mail server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// `starttls` (the default), `tls` (implicit TLS, port 465) or `none`
    /// (a relay on loopback only).
    #[serde(default = "SmtpConfig::default_security")]
    pub security: String,
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (never the password itself).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The sender, e.g. `Mesa de partes OEFA <mesadepartes@oefa.gob.pe>`.
    pub from: String,
}

impl SmtpConfig {
    fn default_security() -> String {
        "starttls".into()
    }
}

/// `[[notify.webhooks]]`: one endpoint of the institution's systems.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://...` (or `http://` on loopback).
    pub url: String,
    /// The statuses to send (e.g. `["DELIVERED", "OBSERVED"]`); empty: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// A file holding the signing secret (`whsec_` and base64, as Standard
    /// Webhooks writes it, or any text).
    pub secret_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address the gRPC server listens on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// TLS for the gRPC server (rustls). Without it the server speaks plain
    /// HTTP/2: only for loopback.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert_file: PathBuf,
    /// PEM private key of the server.
    pub key_file: PathBuf,
    /// PEM CA certificate(s): when set, every client must present a
    /// certificate it issued (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// Client identities and their roles.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Role of callers with neither a known certificate nor a token.
    pub anonymous_role: Role,
    /// API tokens, by SHA-256 (`ecointegra keys token` makes one).
    pub tokens: Vec<TokenConfig>,
    /// Client certificate subjects (as `CN=...,O=...`) and their roles.
    pub certificates: Vec<CertificateRole>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            anonymous_role: Role::Public,
            tokens: Vec::new(),
            certificates: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds the token, for logs.
    pub name: String,
    pub role: Role,
    /// Lowercase hex SHA-256 of the token.
    pub token_sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRole {
    /// The certificate's subject, e.g. `CN=sgd.oefa.gob.pe`.
    pub subject: String,
    pub role: Role,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of Kafka brokers.
    pub bootstrap_servers: String,
    /// Prefix of every topic name.
    pub topic_prefix: String,
    /// Partitions of the topics this node creates.
    pub partitions: i32,
    /// Replicas of every partition of the sector's topics (3 by default;
    /// 1 only in development).
    pub replication_factor: i32,
    /// Whether the node creates its topics when missing. Unset: only in
    /// development; in production the sector operator provisions them
    /// (`ecointegra sector provision`) and the node checks them at start and
    /// in `/readyz`.
    #[serde(default)]
    pub manage_topics: Option<bool>,
    /// How long a record may wait for Kafka before its delivery is retried.
    pub message_timeout_ms: u64,
    /// The largest Kafka record, in bytes. The producer's `message.max.bytes`
    /// and the `max.message.bytes` of the topics this node creates are set
    /// from it, so every record the node produces (chunks, manifests, dead
    /// letters) fits; a record read that is larger is dead-lettered without
    /// being decoded.
    pub max_record_bytes: u32,
    /// Free-form librdkafka options, passed through as given (TLS, SASL, tuning).
    pub options: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topic_prefix", &self.topic_prefix)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("manage_topics", &self.manage_topics)
            .field("message_timeout_ms", &self.message_timeout_ms)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// This institution's Ed25519 secret key (`ecointegra keys generate`); its
    /// X25519 encryption key is derived from it.
    pub signing_key_file: PathBuf,
    /// Earlier key files of this institution, kept after a rotation so that
    /// content encrypted to the old key can still be opened.
    pub previous_signing_key_files: Vec<PathBuf>,
    /// The sector authority's Ed25519 public key (64 hex): the trust anchor.
    /// Directory entries it did not sign are refused.
    pub authority_public_key: String,
    /// Bootstrap file of signed directory entries; newer entries arrive on the
    /// `<prefix>.directory` topic.
    pub directory_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferConfig {
    /// Bytes of document per Kafka record, 1 KiB to 900 KiB.
    pub chunk_size: u32,
    /// Largest document accepted at submission, in bytes.
    pub max_document_size: u64,
    /// Largest filing (all its documents together) accepted, in bytes.
    pub max_filing_size: u64,
    /// Seconds to wait for a delivery receipt before the transfer is re-sent.
    /// Each later full send waits twice as long as the one before, up to
    /// `max_resend_interval_secs`.
    pub receipt_timeout_secs: u64,
    /// The longest wait for a receipt between two full sends, in seconds.
    pub max_resend_interval_secs: u64,
    /// Full sends of a transfer the relay makes by itself; with no receipt
    /// after the last, the filing is shown in trouble until an operator
    /// re-sends it (`ecointegra resend`).
    pub max_sends: u32,
    /// Large transfers the relay publishes at once: it keeps at most this
    /// many transfers' windows of records (16 each) in flight, and a small
    /// filing (one record) takes one record of that room.
    pub relay_concurrency: usize,
    /// Seconds a partial document received here is kept after its last
    /// chunk if its manifest never comes (an upload abandoned half-way after
    /// its first chunks went out): then its chunks are forgotten.
    pub partial_expiry_secs: u64,
}

/// Response periods of the filings this institution receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadlineConfig {
    /// Business days to answer a filing whose type has no period of its own.
    pub default_business_days: u32,
    /// Business days per filing type, e.g. `"acceso-a-la-informacion" = 10`.
    pub business_days_by_type: BTreeMap<String, u32>,
    /// Holidays (YYYY-MM-DD) that do not count as business days.
    pub holidays: Vec<String>,
    /// The institution's offset from UTC in minutes (Peru: -300).
    pub utc_offset_minutes: i32,
    /// "Near" the due date: within this many business days.
    pub warn_business_days: u32,
}

impl Default for DeadlineConfig {
    fn default() -> Self {
        Self {
            default_business_days: 15,
            business_days_by_type: BTreeMap::new(),
            holidays: Vec::new(),
            utc_offset_minutes: -300,
            warn_business_days: 3,
        }
    }
}

/// Citizen tracking.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingConfig {
    /// Failed look-ups (unknown code or wrong verification code) one client
    /// may make per minute before it is refused with RESOURCE_EXHAUSTED.
    pub max_failures_per_minute: u32,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        Self {
            max_failures_per_minute: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// How often Kafka's reachability is checked, in milliseconds.
    pub probe_interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            institution: String::new(),
            development: false,
            data_dir: PathBuf::from("data"),
            grpc: GrpcConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
                tls: None,
            },
            kafka: KafkaConfig {
                bootstrap_servers: "127.0.0.1:9092".into(),
                topic_prefix: "ecointegra".into(),
                partitions: 3,
                replication_factor: 3,
                manage_topics: None,
                message_timeout_ms: 30_000,
                max_record_bytes: ecointegra_broker::kafka::DEFAULT_MAX_RECORD_BYTES,
                options: BTreeMap::new(),
            },
            keys: KeysConfig {
                signing_key_file: PathBuf::from("node.key"),
                previous_signing_key_files: Vec::new(),
                authority_public_key: String::new(),
                directory_file: PathBuf::from("directory.toml"),
            },
            transfer: TransferConfig {
                chunk_size: 512 * 1024,
                max_document_size: 1 << 30,
                max_filing_size: 2 << 30,
                receipt_timeout_secs: 300,
                max_resend_interval_secs: 3600,
                max_sends: 10,
                relay_concurrency: 8,
                partial_expiry_secs: 3 * 24 * 3600,
            },
            health: HealthConfig {
                probe_interval_ms: 2_000,
            },
            deadlines: DeadlineConfig::default(),
            tracking: TrackingConfig::default(),
            http: HttpConfig::default(),
            telemetry: TelemetryConfig::default(),
            web: WebConfig::default(),
            auth: AuthConfig::default(),
            notify: NotifyConfig::default(),
            pide: None,
        }
    }
}

impl Config {
    /// Layers defaults, the TOML file (if any) and the environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::field(
                    "--config",
                    format!("{} does not exist", file.display()),
                ));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(
            Env::prefixed("ECOINTEGRA_")
                .split("__")
                .filter(|key| is_config_key(key.as_str())),
        );
        Self::from_figment(figment, file.and_then(Path::parent))
    }

    /// Parses a configuration from TOML text alone (no environment).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text));
        Self::from_figment(figment, None)
    }

    fn from_figment(figment: Figment, base: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config: Config = figment.extract().map_err(|e| ConfigError {
            message: describe_figment_error(e),
        })?;
        if let Some(base) = base {
            for path in [
                &mut config.data_dir,
                &mut config.keys.signing_key_file,
                &mut config.keys.directory_file,
            ]
            .into_iter()
            .chain(config.keys.previous_signing_key_files.iter_mut())
            .chain(config.grpc.tls.iter_mut().flat_map(|t| {
                [&mut t.cert_file, &mut t.key_file]
                    .into_iter()
                    .chain(t.client_ca_file.as_mut())
            }))
            .chain(
                config
                    .notify
                    .smtp
                    .iter_mut()
                    .flat_map(|s| s.password_file.as_mut()),
            )
            .chain(
                config
                    .notify
                    .webhooks
                    .iter_mut()
                    .map(|h| &mut h.secret_file),
            )
            .chain(config.pide.iter_mut().flat_map(|p| {
                std::iter::once(&mut p.password_file).chain(p.sgd_password_file.as_mut())
            })) {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Whether the node creates its topics when missing (see
    /// [`KafkaConfig::manage_topics`]).
    pub fn manage_topics(&self) -> bool {
        self.kafka.manage_topics.unwrap_or(self.development)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !ecointegra_broker::directory::is_institution_id(&self.institution) {
            return Err(ConfigError::field(
                "institution",
                format!(
                    "{:?} is not an institution id (1 to 32 lowercase letters, digits or '-')",
                    self.institution
                ),
            ));
        }
        if self.kafka.replication_factor < 1
            || (self.kafka.replication_factor < 2 && !self.development)
        {
            return Err(ConfigError::field(
                "kafka.replication_factor",
                format!(
                    "{} keeps a single copy of every filing: a lost broker loses them; production \
                     runs 3 (set development = true for one local broker)",
                    self.kafka.replication_factor
                ),
            ));
        }
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::field(
                "kafka.bootstrap_servers",
                "must not be empty",
            ));
        }
        if self.kafka.topic_prefix.is_empty()
            || !self
                .kafka
                .topic_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(ConfigError::field(
                "kafka.topic_prefix",
                "must be letters, digits, '.', '_' or '-'",
            ));
        }
        for (i, t) in self.auth.tokens.iter().enumerate() {
            if t.token_sha256.len() != 64 || hex::decode(&t.token_sha256).is_err() {
                return Err(ConfigError::field(
                    &format!("auth.tokens[{i}].token_sha256"),
                    "must be 64 hex characters (the SHA-256 of the token, never the token)",
                ));
            }
        }
        if let Err(e) = ecointegra_broker::keys::parse_public_key(&self.keys.authority_public_key) {
            return Err(ConfigError::field("keys.authority_public_key", e));
        }
        if self.kafka.partitions < 1 {
            return Err(ConfigError::field("kafka.partitions", "must be at least 1"));
        }
        if self.kafka.replication_factor < 1 {
            return Err(ConfigError::field(
                "kafka.replication_factor",
                "must be at least 1",
            ));
        }
        if !(MIN_RECORD_BYTES..=MAX_RECORD_BYTES).contains(&self.kafka.max_record_bytes) {
            return Err(ConfigError::field(
                "kafka.max_record_bytes",
                format!("must be between {MIN_RECORD_BYTES} and {MAX_RECORD_BYTES} bytes"),
            ));
        }
        let chunk_limit = self.kafka.max_record_bytes - RECORD_OVERHEAD;
        if !(1024..=chunk_limit).contains(&self.transfer.chunk_size) {
            return Err(ConfigError::field(
                "transfer.chunk_size",
                format!(
                    "must be between 1024 and {chunk_limit} bytes, so a chunk with its \
                     envelope fits one Kafka record of kafka.max_record_bytes"
                ),
            ));
        }
        if let Err(why) = crate::clients::TrustedProxies::parse(&self.web.trusted_proxies) {
            return Err(ConfigError::field("web.trusted_proxies", why));
        }
        if let Some(pide) = &self.pide {
            if pide.username.trim().is_empty() {
                return Err(ConfigError::field("pide.username", "must not be empty"));
            }
            if pide.max_request_bytes < 1024 {
                return Err(ConfigError::field(
                    "pide.max_request_bytes",
                    "must be at least 1024",
                ));
            }
            if pide.fetch_timeout_secs == 0 || pide.link_minutes == 0 {
                return Err(ConfigError::field(
                    "pide.fetch_timeout_secs",
                    "and pide.link_minutes must be at least 1",
                ));
            }
            if let Some(url) = &pide.sgd_url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(ConfigError::field("pide.sgd_url", "must be an http(s) URL"));
            }
        }
        if self.transfer.max_filing_size < self.transfer.max_document_size {
            return Err(ConfigError::field(
                "transfer.max_filing_size",
                "must be at least transfer.max_document_size",
            ));
        }
        if self.transfer.max_document_size == 0 {
            return Err(ConfigError::field(
                "transfer.max_document_size",
                "must be at least 1",
            ));
        }
        if self.transfer.receipt_timeout_secs == 0 {
            return Err(ConfigError::field(
                "transfer.receipt_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.transfer.max_resend_interval_secs < self.transfer.receipt_timeout_secs {
            return Err(ConfigError::field(
                "transfer.max_resend_interval_secs",
                "must be at least transfer.receipt_timeout_secs",
            ));
        }
        if self.transfer.max_sends == 0 {
            return Err(ConfigError::field(
                "transfer.max_sends",
                "must be at least 1",
            ));
        }
        if self.transfer.relay_concurrency == 0 {
            return Err(ConfigError::field(
                "transfer.relay_concurrency",
                "must be at least 1",
            ));
        }
        if self.transfer.partial_expiry_secs == 0 {
            return Err(ConfigError::field(
                "transfer.partial_expiry_secs",
                "must be at least 1",
            ));
        }
        for (i, holiday) in self.deadlines.holidays.iter().enumerate() {
            if day::Day::parse(holiday).is_none() {
                return Err(ConfigError::field(
                    &format!("deadlines.holidays[{i}]"),
                    format!("{holiday:?} is not a date (YYYY-MM-DD)"),
                ));
            }
        }
        if let Some(smtp) = &self.notify.smtp {
            if !["starttls", "tls", "none"].contains(&smtp.security.as_str()) {
                return Err(ConfigError::field(
                    "notify.smtp.security",
                    format!("{:?}: use starttls, tls or none", smtp.security),
                ));
            }
            if smtp.from.parse::<lettre::message::Mailbox>().is_err() {
                return Err(ConfigError::field(
                    "notify.smtp.from",
                    format!("{:?} is not a mail address", smtp.from),
                ));
            }
        }
        for (i, hook) in self.notify.webhooks.iter().enumerate() {
            let field = format!("notify.webhooks[{i}]");
            if !(hook.url.starts_with("https://") || hook.url.starts_with("http://"))
                || hook.url.parse::<http::Uri>().is_err()
            {
                return Err(ConfigError::field(
                    &format!("{field}.url"),
                    format!("{:?} is not an http(s) URL", hook.url),
                ));
            }
            for event in &hook.events {
                if ecointegra_proto::v1::FilingStatus::from_short_name(event).is_none() {
                    return Err(ConfigError::field(
                        &format!("{field}.events"),
                        format!("{event:?} is not a filing status (DELIVERED, OBSERVED, ...)"),
                    ));
                }
            }
        }
        if !(-720..=840).contains(&self.deadlines.utc_offset_minutes) {
            return Err(ConfigError::field(
                "deadlines.utc_offset_minutes",
                "must be between -720 and 840",
            ));
        }
        if self.health.probe_interval_ms == 0 {
            return Err(ConfigError::field(
                "health.probe_interval_ms",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    pub fn kafka_settings(&self) -> ecointegra_broker::kafka::KafkaSettings {
        ecointegra_broker::kafka::KafkaSettings {
            bootstrap_servers: self.kafka.bootstrap_servers.clone(),
            options: self.kafka.options.clone(),
            max_record_bytes: self.kafka.max_record_bytes,
        }
    }
}

/// The top-level tables and keys of [`Config`]. Other `ECOINTEGRA_*` variables
/// (`ECOINTEGRA_CONFIG`, `ECOINTEGRA_LOG`, tools' own) are not configuration;
/// an unknown key inside a known table is still rejected.
const TOP_LEVEL_KEYS: [&str; 14] = [
    "pide",
    "institution",
    "data_dir",
    "grpc",
    "kafka",
    "keys",
    "transfer",
    "health",
    "deadlines",
    "tracking",
    "http",
    "web",
    "auth",
    "telemetry",
];

fn is_config_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    TOP_LEVEL_KEYS.iter().any(|top| {
        key == *top || key.starts_with(&format!("{top}.")) || key.starts_with(&format!("{top}__"))
    })
}

/// Figment names the key at fault; keep its words but drop the provider noise.
fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let kind = e.kind.to_string();
            if path.is_empty() {
                kind
            } else {
                format!("{path}: {kind}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "institution = \"oefa\"\n[keys]\nauthority_public_key = \"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\"\n";

    #[test]
    fn defaults_and_minimal_file() {
        let config = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(config.institution, "oefa");
        assert_eq!(config.transfer.chunk_size, 512 * 1024);
        assert_eq!(config.transfer.max_document_size, 1 << 30);
    }

    #[test]
    fn the_example_config_is_valid() {
        let config =
            Config::from_toml(include_str!("../../../deploy/config/node.example.toml")).unwrap();
        let defaults = Config::default();
        assert_eq!(config.transfer.chunk_size, defaults.transfer.chunk_size);
        assert_eq!(
            config.transfer.max_document_size,
            defaults.transfer.max_document_size
        );
        assert_eq!(
            config.kafka.bootstrap_servers,
            defaults.kafka.bootstrap_servers
        );
    }

    #[test]
    fn one_replica_is_refused_outside_development() {
        let one = format!("{MINIMAL}[kafka]\nreplication_factor = 1\n");
        let err = Config::from_toml(&one).unwrap_err();
        assert!(err.message.contains("kafka.replication_factor"), "{err}");
        let dev = Config::from_toml(&format!("development = true\n{one}")).unwrap();
        assert!(dev.manage_topics(), "development creates its topics");
        let production = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(production.kafka.replication_factor, 3);
        assert!(
            !production.manage_topics(),
            "production checks, not creates"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err =
            Config::from_toml(&format!("{MINIMAL}[grpc]\nlisten_addr = \"x\"\n")).unwrap_err();
        assert!(err.message.contains("listen_addr"), "{err}");
    }

    #[test]
    fn unparseable_address_is_named() {
        let err = Config::from_toml(&format!("{MINIMAL}[grpc]\nlisten = \"nowhere:port\"\n"))
            .unwrap_err();
        assert!(err.message.contains("grpc.listen"), "{err}");
    }

    #[test]
    fn invalid_values_are_named() {
        let err = Config::from_toml("institution = \"OEFA!\"\n").unwrap_err();
        assert!(err.message.starts_with("institution:"), "{err}");
        let err =
            Config::from_toml(&format!("{MINIMAL}[transfer]\nchunk_size = 2000000\n")).unwrap_err();
        assert!(err.message.contains("transfer.chunk_size"), "{err}");
    }

    #[test]
    fn only_config_keys_are_taken_from_the_environment() {
        for key in [
            "institution",
            "kafka.bootstrap_servers",
            "KAFKA__OPTIONS",
            "grpc.listen",
        ] {
            assert!(is_config_key(key), "{key}");
        }
        for key in ["config", "log", "kafka_script", "bin", "cache"] {
            assert!(!is_config_key(key), "{key}");
        }
    }

    #[test]
    fn kafka_options_are_not_printed() {
        let config = Config::from_toml(&format!(
            "{MINIMAL}[kafka.options]\n\"sasl.password\" = \"hunter2\"\n"
        ))
        .unwrap();
        let printed = format!("{config:?}");
        assert!(printed.contains("sasl.password"));
        assert!(!printed.contains("hunter2"));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Clerk,
    Operator,
    Public,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Clerk => "clerk",
            Role::Operator => "operator",
            Role::Public => "public",
        }
    }
}

/// The HTTP server (`/metrics`, `/livez`, `/readyz`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address the HTTP server listens on; port 0 picks a free port. Unset:
    /// no HTTP server.
    pub listen: Option<SocketAddr>,
}

/// Where traces go.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`. Unset: no export.
    pub otlp_endpoint: Option<String>,
}

/// The web console.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address the console listens on; port 0 picks a free port. Unset: no
    /// console. The bound address is written to `<data_dir>/web.addr`.
    pub listen: Option<SocketAddr>,
    /// How long a clerk's or operator's sign-in lasts, in minutes.
    pub session_minutes: u32,
    /// The console's address as citizens reach it (e.g.
    /// `https://tramites.minam.gob.pe`), printed in the verification link of
    /// a cargo. Unset: the address the request came to.
    pub public_url: Option<String>,
    /// Reverse proxies (addresses or ADDRESS/PREFIX blocks) whose
    /// `Forwarded` / `X-Forwarded-For` / `X-Forwarded-Proto` headers are
    /// believed: the client address limits count, and whether the request
    /// came over TLS (the session cookie is then `Secure`). Nobody else's.
    pub trusted_proxies: Vec<String>,
    /// Failed sign-ins one client (an IPv4 address, an IPv6 /64) may make
    /// per minute before the sign-in page refuses it. Failed tracking
    /// look-ups have their own limit, `tracking.max_failures_per_minute`.
    pub max_sign_in_failures_per_minute: u32,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: None,
            session_minutes: 480,
            public_url: None,
            trusted_proxies: Vec::new(),
            max_sign_in_failures_per_minute: 10,
        }
    }
}
