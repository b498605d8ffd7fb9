//! `kind = "kinesis"` settings.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::ConfigError;
use crate::format::FormatSpec;
use crate::sinks::oversize::OversizePolicy;

/// The service's limits (PutRecords and records).
pub const MAX_RECORDS_PER_CALL: usize = 500;
pub const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Streams with large records enabled accept up to 10 MiB.
pub const LARGEST_RECORD_BYTES: usize = 10 * 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisSinkConfig {
    /// Stream name, or its ARN.
    pub stream: String,
    /// AWS region; when absent, the standard chain (AWS_REGION, profile) or the ARN decides.
    #[serde(default)]
    pub region: Option<String>,
    /// Another endpoint (LocalStack, kinesalite, a VPC endpoint).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub format: FormatSpec,
    /// Records per PutRecords call (the service allows 500).
    #[serde(default = "default_records_per_call")]
    pub max_records_per_call: NonZeroUsize,
    /// How long a call that is not full waits for more records. 0 (the default): a call
    /// leaves as soon as no more batches are queued, with every batch that was.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// PutRecords calls in flight at once (records of one key are never in two at once).
    #[serde(default = "default_concurrent_calls")]
    pub max_concurrent_calls: NonZeroUsize,
    /// Largest record (data + partition key); 1 MiB unless the stream has larger records on.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    #[serde(default)]
    pub oversize: OversizePolicy,
    /// Where `oversize = "dead_letter"` writes oversized events.
    #[serde(default)]
    pub dead_letter_path: Option<PathBuf>,
    /// KPL aggregation: many events per Kinesis record. Off by default: Redshift streaming
    /// ingestion cannot read aggregated records (KCL and Lambda can de-aggregate).
    #[serde(default)]
    pub aggregation: bool,
    /// Pace calls to 1,000 records/s and 1 MiB/s per shard, so that a backlog drains without
    /// a storm of throttling errors.
    #[serde(default)]
    pub shard_pacing: bool,
    /// A record that keeps failing (throttling, service errors) for this long fails its
    /// batch; the pipeline then restarts from its checkpoint.
    #[serde(default = "default_retry_timeout_ms")]
    pub retry_timeout_ms: u64,
}

fn default_records_per_call() -> NonZeroUsize {
    NonZeroUsize::new(MAX_RECORDS_PER_CALL).expect("nonzero")
}
fn default_linger_ms() -> u64 {
    0
}
fn default_concurrent_calls() -> NonZeroUsize {
    NonZeroUsize::new(4).expect("nonzero")
}
fn default_max_record_bytes() -> usize {
    DEFAULT_MAX_RECORD_BYTES
}
fn default_retry_timeout_ms() -> u64 {
    300_000
}

/// Where the stream is: by name or by ARN (which also names the region).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRef {
    Name(String),
    Arn { arn: String, region: String },
}

impl KinesisSinkConfig {
    pub fn validate(&self, key: &str) -> Result<StreamRef, ConfigError> {
        let stream = parse_stream(&self.stream)
            .map_err(|reason| ConfigError::invalid(format!("{key}.stream"), reason))?;
        if self.max_records_per_call.get() > MAX_RECORDS_PER_CALL {
            return Err(ConfigError::invalid(
                format!("{key}.max_records_per_call"),
                format!("at most {MAX_RECORDS_PER_CALL} (the PutRecords limit)"),
            ));
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > LARGEST_RECORD_BYTES {
            return Err(ConfigError::invalid(
                format!("{key}.max_record_bytes"),
                format!("between 1 and {LARGEST_RECORD_BYTES} (10 MiB, the largest record a stream accepts)"),
            ));
        }
        if self.oversize == OversizePolicy::DeadLetter && self.dead_letter_path.is_none() {
            return Err(ConfigError::invalid(
                format!("{key}.dead_letter_path"),
                "required when oversize = \"dead_letter\"",
            ));
        }
        if let Some(url) = &self.endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    format!("{key}.endpoint_url"),
                    "must start with http:// or https://",
                ));
            }
        }
        Ok(stream)
    }

    /// The region named by the config, else by the stream's ARN.
    pub fn explicit_region(&self, stream: &StreamRef) -> Option<String> {
        match (&self.region, stream) {
            (Some(region), _) => Some(region.clone()),
            (None, StreamRef::Arn { region, .. }) => Some(region.clone()),
            (None, StreamRef::Name(_)) => None,
        }
    }
}

impl StreamRef {
    /// The name for messages and logs.
    pub fn display_name(&self) -> &str {
        match self {
            StreamRef::Name(name) => name,
            StreamRef::Arn { arn, .. } => arn.rsplit('/').next().unwrap_or(arn),
        }
    }
}

fn parse_stream(stream: &str) -> Result<StreamRef, String> {
    if let Some(rest) = stream.strip_prefix("arn:") {
        // arn:PARTITION:kinesis:REGION:ACCOUNT:stream/NAME
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        match parts.as_slice() {
            [_, "kinesis", region, _, resource]
                if !region.is_empty() && resource.starts_with("stream/") && resource.len() > 7 =>
            {
                Ok(StreamRef::Arn {
                    arn: stream.to_owned(),
                    region: (*region).to_owned(),
                })
            }
            _ => {
                Err("not a Kinesis stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)".into())
            }
        }
    } else {
        let valid = !stream.is_empty()
            && stream.len() <= 128
            && stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if valid {
            Ok(StreamRef::Name(stream.to_owned()))
        } else {
            Err("a stream name has 1 to 128 characters: letters, digits, '_', '.', '-'".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<(KinesisSinkConfig, StreamRef), String> {
        let config: KinesisSinkConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        let stream = config.validate("s").map_err(|e| e.to_string())?;
        Ok((config, stream))
    }

    #[test]
    fn stream_by_name_or_arn() {
        let (config, stream) = parse("stream = \"orders\"").unwrap();
        assert_eq!(stream, StreamRef::Name("orders".into()));
        assert_eq!(config.explicit_region(&stream), None);
        assert!(!config.aggregation, "aggregation is off by default");
        let (config, stream) =
            parse("stream = \"arn:aws:kinesis:eu-west-1:123456789012:stream/orders\"").unwrap();
        assert_eq!(stream.display_name(), "orders");
        assert_eq!(
            config.explicit_region(&stream).as_deref(),
            Some("eu-west-1")
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        assert!(parse("stream = \"a b\"")
            .unwrap_err()
            .starts_with("s.stream: a stream name"));
        assert!(parse("stream = \"arn:aws:s3:::bucket\"")
            .unwrap_err()
            .starts_with("s.stream: not a Kinesis stream ARN"));
        assert!(parse("stream = \"x\"\nmax_records_per_call = 501")
            .unwrap_err()
            .starts_with("s.max_records_per_call: at most 500"));
        assert!(parse("stream = \"x\"\nmax_record_bytes = 20000000")
            .unwrap_err()
            .starts_with("s.max_record_bytes"));
        assert!(parse("stream = \"x\"\noversize = \"dead_letter\"")
            .unwrap_err()
            .starts_with("s.dead_letter_path: required"));
        assert!(parse("stream = \"x\"\nendpoint_url = \"localhost:4567\"")
            .unwrap_err()
            .starts_with("s.endpoint_url"));
        assert!(parse("stream = \"x\"\nshards = 2")
            .unwrap_err()
            .contains("unknown field `shards`"));
    }
}
