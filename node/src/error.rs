//! The node's errors, and the one place that maps them to gRPC status codes.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// One field of a request that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<Violation>),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("store: {context}")]
    Store {
        context: String,
        #[source]
        source: rusqlite::Error,
    },
    /// The store was migrated by a newer release: this one must not touch it.
    #[error(
        "store {}: its schema version is {found}, newer than {known}, the newest this release knows; run a release that knows version {found}",
        path.display()
    )]
    StoreTooNew {
        path: std::path::PathBuf,
        found: u32,
        known: u32,
    },
    #[error("store {}: cannot migrate the schema from version {from} to {to}", path.display())]
    Migration {
        path: std::path::PathBuf,
        from: u32,
        to: u32,
        #[source]
        source: rusqlite_migration::Error,
    },
    /// Another process holds the data directory.
    #[error(
        "data directory {} is in use by another ecointegra process (it holds {}/node.lock); stop that one, or give this one another data_dir",
        path.display(),
        path.display()
    )]
    DataDirInUse { path: std::path::PathBuf },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Broker(#[from] ecointegra_broker::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    ResourceExhausted(String),
}

fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// The error and every cause under it, in words: "store: cannot commit:
    /// database or disk is full".
    pub fn with_causes(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.ends_with(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        text
    }

    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![Violation::new(field, description)])
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// For a task on a blocking thread that panicked or was cancelled.
    pub fn task(context: impl Into<String>) -> impl FnOnce(tokio::task::JoinError) -> Self {
        let context = context.into();
        move |e| Error::Io {
            context,
            source: std::io::Error::other(e),
        }
    }

    pub fn store(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> Self {
        let context = context.into();
        move |source| Error::Store { context, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match &error {
            Error::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                Status::with_error_details(Code::InvalidArgument, error.to_string(), details)
            }
            Error::NotFound(_) => Status::not_found(error.to_string()),
            Error::FailedPrecondition(_) => Status::failed_precondition(error.to_string()),
            Error::ShuttingDown => Status::unavailable(error.to_string()),
            Error::ResourceExhausted(_) => Status::resource_exhausted(error.to_string()),
            Error::Store { .. }
            | Error::StoreTooNew { .. }
            | Error::Migration { .. }
            | Error::Io { .. }
            | Error::DataDirInUse { .. }
            | Error::Broker(_)
            | Error::Config(_) => {
                tracing::error!(error = %error, "Request failed.");
                Status::internal("internal error; see the node's log")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_in_words_names_its_causes() {
        let error = Error::store("cannot commit")(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(13),
            None,
        ));
        assert_eq!(
            error.with_causes(),
            "store: cannot commit: Error code 13: Insertion failed because database is full"
        );
    }
}
