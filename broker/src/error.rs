use std::path::PathBuf;

/// Errors of the messaging layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kafka {context}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("directory file {path}: {reason}")]
    Directory { path: PathBuf, reason: String },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether trying again cannot help: the record is too large for the
    /// producer or the topic, or this identity may not write to the topic.
    /// Anything else (a broker down, a timeout) may pass.
    pub fn is_permanent(&self) -> bool {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode as C};
        let code = match self {
            Error::Kafka { source, .. } => match source {
                KafkaError::MessageProduction(code) => *code,
                other => match other.rdkafka_error_code() {
                    Some(code) => code,
                    None => return false,
                },
            },
            _ => return false,
        };
        matches!(
            code,
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::InvalidTopic
                | C::InvalidRecord
        )
    }

    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            context: context.into(),
            source,
        }
    }
}
