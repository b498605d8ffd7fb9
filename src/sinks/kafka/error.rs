//! Errors of the Kafka sink, each with its disposition.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::error::{ConnectorError, Disposition};

#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    #[error("cannot create the Kafka producer")]
    Client(#[source] KafkaError),
    #[error("brokers {brokers} are not reachable or refused the connection")]
    Unreachable {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error("authentication with brokers {brokers} failed: check sasl_username, sasl_password and sasl_mechanism")]
    Authentication {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error("TLS with brokers {brokers} failed: {reason} (check ssl_ca_file and the brokers' certificate)")]
    Tls { brokers: String, reason: String },
    #[error("topic {topic:?} does not exist: create it, or set create_topics = true")]
    MissingTopic { topic: String },
    #[error("cannot create topic {topic:?}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("delivery to topic {topic:?} failed")]
    Delivery {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("the producer dropped a delivery report (shutting down?)")]
    Canceled,
    #[error("AWS_MSK_IAM needs a region: set aws_region in the sink, AWS_REGION, or a region in the AWS profile")]
    MskIamRegion,
    #[error("AWS_MSK_IAM cannot sign a token: {0} (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity, or run with an instance role)")]
    MskIamCredentials(String),
}

fn code_of(err: &KafkaError) -> Option<RDKafkaErrorCode> {
    err.rdkafka_error_code()
}

/// Errors the operator must fix; everything else is retried by restarting from the checkpoint.
fn is_fatal(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        Authentication
            | SaslAuthenticationFailed
            | TopicAuthorizationFailed
            | ClusterAuthorizationFailed
            | UnknownTopicOrPartition
            | UnknownTopic
            | InvalidConfig
            | MessageSizeTooLarge
            | InvalidTopic
    )
}

impl ConnectorError for KafkaSinkError {
    fn disposition(&self) -> Disposition {
        match self {
            KafkaSinkError::Client(_)
            | KafkaSinkError::Authentication { .. }
            | KafkaSinkError::Tls { .. }
            | KafkaSinkError::MissingTopic { .. }
            | KafkaSinkError::CreateTopic { .. }
            | KafkaSinkError::MskIamRegion
            | KafkaSinkError::MskIamCredentials(_) => Disposition::Fatal,
            KafkaSinkError::Delivery { source, .. } if code_of(source).is_some_and(is_fatal) => {
                Disposition::Fatal
            }
            KafkaSinkError::Unreachable { .. }
            | KafkaSinkError::Delivery { .. }
            | KafkaSinkError::Canceled => Disposition::Transient,
        }
    }
}
