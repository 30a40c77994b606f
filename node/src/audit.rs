//! Who did what: the caller behind every state-changing call, and the
//! node's append-only audit log of those calls.
//!
//! An [`Actor`] is who the node authenticated (the configured name of an API
//! token or client certificate, never the token, and its role) and where the
//! call came from (`grpc::auth::actor_of` for gRPC, the console's session
//! for the web). Clerk actions and submissions carry it into their tracking
//! events; `Store::audit` appends one [`Entry`] per call to the store's
//! append-only `audit_log`, which operators list with `ecointegra audit`
//! (gRPC `OperationsService.ListAuditLog`).

use crate::config::Role;
use std::net::IpAddr;

/// Who made a call, and from where.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The token's or certificate's configured name, or "anonymous".
    pub name: String,
    pub role: Role,
    pub address: Option<IpAddr>,
}

impl Actor {
    pub fn new(name: impl Into<String>, role: Role, address: Option<IpAddr>) -> Self {
        Self {
            name: name.into(),
            role,
            address,
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub role: String,
    pub address: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
}

impl Entry {
    /// The line for `action` on `target` by `actor`, ending now in `outcome`
    /// (its id is the log's to give).
    pub fn of<T, E: std::fmt::Display>(
        actor: &Actor,
        action: &str,
        target: &str,
        outcome: &std::result::Result<T, E>,
    ) -> Self {
        Self {
            id: 0,
            at_ms: ecointegra_broker::now_ms(),
            actor: actor.name.clone(),
            role: actor.role.name().to_owned(),
            address: actor.address.map(|a| a.to_string()).unwrap_or_default(),
            action: action.to_owned(),
            target: target.chars().take(200).collect(),
            outcome: match outcome {
                Ok(_) => "ok".to_owned(),
                Err(e) => e.to_string().chars().take(500).collect(),
            },
        }
    }

    pub fn to_proto(&self) -> ecointegra_proto::v1::AuditEntry {
        ecointegra_proto::v1::AuditEntry {
            id: self.id,
            at_ms: self.at_ms,
            actor: self.actor.clone(),
            role: self.role.clone(),
            address: self.address.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            outcome: self.outcome.clone(),
        }
    }
}
