//! `kind = "kafka"` settings.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;

use serde::Deserialize;

use super::gate::ChunkLimits;
use super::topic::TopicTemplate;
use crate::config::{ConfigError, Secret};
use crate::format::FormatSpec;
use crate::sinks::oversize::OversizePolicy;

pub const DEFAULT_TOPIC: &str = "{pipeline}.{schema}.{table}";
/// Just under the broker's default `message.max.bytes` (1048588).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;
pub const DEFAULT_DELIVERY_TIMEOUT_MS: u64 = 120_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "AWS_MSK_IAM")]
    AwsMskIam,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    /// Topic per event, a template over `{pipeline}`, `{database}`, `{schema}`, `{table}`.
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default)]
    pub format: FormatSpec,
    /// Follow each delete with a tombstone (same key, null value) for compacted topics.
    #[serde(default = "default_true")]
    pub tombstones: bool,
    /// Create missing topics (admin API); otherwise a missing topic stops the pipeline.
    #[serde(default)]
    pub create_topics: bool,
    #[serde(default = "default_partitions")]
    pub topic_partitions: NonZeroU32,
    #[serde(default = "default_replication")]
    pub topic_replication_factor: NonZeroU32,
    /// Largest message (key + value + headers, approximately) sent; larger ones follow `oversize`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    #[serde(default)]
    pub oversize: OversizePolicy,
    /// Where `oversize = "dead_letter"` writes oversized events.
    #[serde(default)]
    pub dead_letter_path: Option<PathBuf>,
    /// A message not confirmed within this long fails its batch (and restarts the pipeline).
    #[serde(default = "default_delivery_timeout")]
    pub delivery_timeout_ms: u64,
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    #[serde(default)]
    pub sasl_mechanism: Option<SaslMechanism>,
    #[serde(default)]
    pub sasl_username: Option<String>,
    /// Region of the MSK cluster, for AWS_MSK_IAM (else AWS_REGION or the profile's).
    #[serde(default)]
    pub aws_region: Option<String>,
    #[serde(default)]
    pub sasl_password: Option<Secret>,
    /// CA certificates (PEM) to verify the brokers.
    #[serde(default)]
    pub ssl_ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    #[serde(default)]
    pub ssl_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub ssl_key_file: Option<PathBuf>,
    #[serde(default)]
    pub ssl_key_password: Option<Secret>,
    /// Any librdkafka setting, passed through (after the ones above).
    #[serde(default)]
    pub properties: BTreeMap<String, Secret>,
}

fn default_topic() -> String {
    DEFAULT_TOPIC.to_owned()
}
fn default_true() -> bool {
    true
}
fn default_partitions() -> NonZeroU32 {
    NonZeroU32::new(3).expect("nonzero")
}
fn default_replication() -> NonZeroU32 {
    NonZeroU32::new(1).expect("nonzero")
}
fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}
fn default_delivery_timeout() -> u64 {
    DEFAULT_DELIVERY_TIMEOUT_MS
}

impl KafkaSinkConfig {
    pub fn validate(&self, key: &str) -> Result<TopicTemplate, ConfigError> {
        let template = TopicTemplate::parse(&self.topic)
            .map_err(|e| ConfigError::invalid(format!("{key}.topic"), e))?;
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.brokers"),
                "list at least one host:port",
            ));
        }
        if self.oversize == OversizePolicy::DeadLetter && self.dead_letter_path.is_none() {
            return Err(ConfigError::invalid(
                format!("{key}.dead_letter_path"),
                "required when oversize = \"dead_letter\"",
            ));
        }
        let sasl = matches!(
            self.security_protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        );
        match (sasl, self.sasl_mechanism) {
            (true, None) => {
                return Err(ConfigError::invalid(
                    format!("{key}.sasl_mechanism"),
                    "required with a SASL security_protocol",
                ))
            }
            (false, Some(_)) => {
                return Err(ConfigError::invalid(
                    format!("{key}.security_protocol"),
                    "use sasl_plaintext or sasl_ssl with sasl_mechanism",
                ))
            }
            (true, Some(SaslMechanism::AwsMskIam))
                if self.security_protocol != SecurityProtocol::SaslSsl =>
            {
                return Err(ConfigError::invalid(
                    format!("{key}.security_protocol"),
                    "AWS_MSK_IAM needs sasl_ssl (MSK's IAM listener, port 9098, is TLS only)",
                ))
            }
            (true, Some(SaslMechanism::AwsMskIam))
                if self.sasl_username.is_some() || self.sasl_password.is_some() =>
            {
                return Err(ConfigError::invalid(
                    format!("{key}.sasl_username"),
                    "AWS_MSK_IAM takes its credentials from the AWS chain, not sasl_username/sasl_password",
                ))
            }
            (true, Some(SaslMechanism::AwsMskIam)) => {}
            (true, Some(_)) if self.sasl_username.is_none() || self.sasl_password.is_none() => {
                return Err(ConfigError::invalid(
                    format!("{key}.sasl_username"),
                    "sasl_username and sasl_password are required for SCRAM and PLAIN",
                ))
            }
            _ => {}
        }
        if let Some(reserved) = self
            .properties
            .keys()
            .find(|k| RESERVED.contains(&k.as_str()))
        {
            return Err(ConfigError::invalid(
                format!("{key}.properties.{reserved}"),
                "set by cdc-bridge for its delivery guarantees, key partitioning and memory bound; it cannot be overridden",
            ));
        }
        Ok(template)
    }

    /// How much the sink hands librdkafka per partition at a time: one request's worth, by
    /// `batch.num.messages` and `batch.size` (librdkafka's defaults unless `properties` sets
    /// them), and `message.max.bytes`, which also bounds a request.
    pub fn chunk_limits(&self) -> ChunkLimits {
        let setting = |name: &str, default: usize| {
            self.properties
                .get(name)
                .and_then(|value| value.expose().trim().parse().ok())
                .unwrap_or(default)
        };
        let defaults = ChunkLimits::LIBRDKAFKA_DEFAULTS;
        ChunkLimits {
            records: setting("batch.num.messages", defaults.records),
            bytes: setting("batch.size", defaults.bytes).min(self.message_max_bytes()),
        }
    }

    /// librdkafka's `message.max.bytes`: room for the largest record and its framing.
    fn message_max_bytes(&self) -> usize {
        self.max_message_bytes + 64 * 1024
    }

    /// The librdkafka settings of the producer (secrets included: never log the result).
    pub fn client_settings(&self) -> Vec<(String, String)> {
        let mut settings: Vec<(String, String)> = vec![
            ("bootstrap.servers".into(), self.brokers.clone()),
            ("enable.idempotence".into(), "true".into()),
            ("acks".into(), "all".into()),
            ("max.in.flight.requests.per.connection".into(), "5".into()),
            (
                "message.timeout.ms".into(),
                self.delivery_timeout_ms.to_string(),
            ),
            (
                "message.max.bytes".into(),
                self.message_max_bytes().to_string(),
            ),
            // The sink gives every record its partition (Kafka's own key hashing) and hands
            // librdkafka one request's worth per partition at a time (gate.rs); how much is
            // in flight is bounded by the pipeline, so librdkafka's own queue limits are off.
            ("partitioner".into(), "murmur2_random".into()),
            ("queue.buffering.max.messages".into(), "0".into()),
            ("queue.buffering.max.kbytes".into(), i32::MAX.to_string()),
            // The pipeline already hands over whole batches, as soon as the source goes
            // quiet: a longer wait in librdkafka only adds latency (bench/latency.rs: p99 32 ms
            // at 5, 110 ms at 50).
            ("linger.ms".into(), "5".into()),
            ("client.id".into(), "cdc-bridge".into()),
        ];
        let protocol = match self.security_protocol {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        };
        settings.push(("security.protocol".into(), protocol.into()));
        if let Some(mechanism) = self.sasl_mechanism {
            let name = match mechanism {
                SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
                SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
                SaslMechanism::Plain => "PLAIN",
                SaslMechanism::AwsMskIam => "OAUTHBEARER",
            };
            settings.push(("sasl.mechanism".into(), name.into()));
        }
        if let Some(user) = &self.sasl_username {
            settings.push(("sasl.username".into(), user.clone()));
        }
        if let Some(password) = &self.sasl_password {
            settings.push(("sasl.password".into(), password.expose().to_owned()));
        }
        let paths = [
            ("ssl.ca.location", &self.ssl_ca_file),
            ("ssl.certificate.location", &self.ssl_cert_file),
            ("ssl.key.location", &self.ssl_key_file),
        ];
        for (name, path) in paths {
            if let Some(path) = path {
                settings.push((name.into(), path.display().to_string()));
            }
        }
        if let Some(password) = &self.ssl_key_password {
            settings.push(("ssl.key.password".into(), password.expose().to_owned()));
        }
        settings.extend(
            self.properties
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned())),
        );
        settings
    }
}

/// Settings that guarantee delivery, ordering and Kafka's key partitioning, or that the
/// pipeline's memory bound replaces; `properties` may not change them.
const RESERVED: [&str; 7] = [
    "enable.idempotence",
    "acks",
    "max.in.flight.requests.per.connection",
    "bootstrap.servers",
    "partitioner",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<KafkaSinkConfig, String> {
        let config: KafkaSinkConfig =
            toml::from_str(&format!("brokers = \"127.0.0.1:9092\"\n{extra}"))
                .map_err(|e| e.to_string())?;
        config.validate("s").map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn defaults_are_safe_and_properties_cannot_weaken_them() {
        let config = parse("").unwrap();
        let settings = config.client_settings();
        assert!(settings.contains(&("enable.idempotence".into(), "true".into())));
        assert!(settings.contains(&("acks".into(), "all".into())));
        assert_eq!(
            parse("properties = { acks = \"1\" }").unwrap_err(),
            "s.properties.acks: set by cdc-bridge for its delivery guarantees, key partitioning and memory bound; it cannot be overridden"
        );
        assert!(parse("properties = { \"linger.ms\" = \"20\" }").is_ok());
    }

    #[test]
    fn security_settings_are_checked_together() {
        assert!(parse("security_protocol = \"sasl_plaintext\"")
            .unwrap_err()
            .starts_with("s.sasl_mechanism: required"));
        let iam =
            parse("security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"AWS_MSK_IAM\"").unwrap();
        assert!(iam
            .client_settings()
            .contains(&("sasl.mechanism".into(), "OAUTHBEARER".into())));
        assert!(
            parse("security_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"AWS_MSK_IAM\"")
                .unwrap_err()
                .starts_with("s.security_protocol: AWS_MSK_IAM needs sasl_ssl")
        );
        assert!(parse("oversize = \"dead_letter\"")
            .unwrap_err()
            .starts_with("s.dead_letter_path: required"));
        let scram = parse("security_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"u\"\nsasl_password = \"hunter2\"").unwrap();
        assert!(!format!("{scram:?}").contains("hunter2"));
    }

    /// A chunk is what librdkafka sends as one request: its batch settings when set, the
    /// largest request `message.max.bytes` allows.
    #[test]
    fn chunks_follow_librdkafkas_batch_limits() {
        assert_eq!(
            parse("").unwrap().chunk_limits(),
            ChunkLimits::LIBRDKAFKA_DEFAULTS
        );
        let tuned =
            parse("properties = { \"batch.num.messages\" = \"500\", \"batch.size\" = \"65536\" }");
        assert_eq!(
            tuned.unwrap().chunk_limits(),
            ChunkLimits {
                records: 500,
                bytes: 65_536
            }
        );
        let small = parse("max_message_bytes = 100000").unwrap().chunk_limits();
        assert_eq!(small.bytes, 100_000 + 64 * 1024);
        // The sink assigns partitions and bounds the queue itself.
        for reserved in ["partitioner", "queue.buffering.max.messages"] {
            let error = parse(&format!("properties = {{ \"{reserved}\" = \"1\" }}")).unwrap_err();
            assert!(
                error.starts_with(&format!("s.properties.{reserved}: set by cdc-bridge")),
                "{error}"
            );
        }
    }
}
