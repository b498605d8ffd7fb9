//! `kind = "dynamodb"` settings.

use serde::Deserialize;

use crate::config::ConfigError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// The oldest record still in the stream (up to 24 hours back).
    #[default]
    TrimHorizon,
    /// Only changes made after the first start.
    Latest,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTrimmed {
    /// Stop and say what was lost.
    #[default]
    Fail,
    /// Go on from the oldest record still in the stream (the lost records stay lost).
    RestartFromOldest,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoDbConfig {
    /// The table whose stream to read (its latest stream).
    #[serde(default)]
    pub table: Option<String>,
    /// The stream's ARN (instead of `table`).
    #[serde(default)]
    pub stream_arn: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Another endpoint (DynamoDB Local, LocalStack).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub start: StartAt,
    /// How long to wait before polling a shard again after it returned nothing.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// What to do when the records after a checkpoint are gone (older than 24 hours).
    #[serde(default)]
    pub on_trimmed: OnTrimmed,
}

fn default_poll_interval_ms() -> u64 {
    1000
}

impl DynamoDbConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        match (&self.table, &self.stream_arn) {
            (None, None) | (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    format!("{key}.table"),
                    "set exactly one of `table` and `stream_arn`",
                ))
            }
            (_, Some(arn)) if !(arn.starts_with("arn:") && arn.contains(":table/") && arn.contains("/stream/")) => {
                return Err(ConfigError::invalid(
                    format!("{key}.stream_arn"),
                    "not a DynamoDB stream ARN (arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL)",
                ))
            }
            _ => {}
        }
        if let Some(url) = &self.endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    format!("{key}.endpoint_url"),
                    "must start with http:// or https://",
                ));
            }
        }
        if self.poll_interval_ms < 200 {
            return Err(ConfigError::invalid(
                format!("{key}.poll_interval_ms"),
                "at least 200 (each poll of an idle shard is a billed GetRecords request)",
            ));
        }
        Ok(())
    }

    /// The region named by the config, else by the stream's ARN.
    pub fn explicit_region(&self) -> Option<String> {
        self.region.clone().or_else(|| {
            self.stream_arn
                .as_deref()
                .and_then(|arn| arn.split(':').nth(3))
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DynamoDbConfig, String> {
        let config: DynamoDbConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate("s").map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn table_or_stream_and_sane_polling() {
        let config = parse("table = \"orders\"").unwrap();
        assert_eq!(config.start, StartAt::TrimHorizon);
        assert_eq!(config.on_trimmed, OnTrimmed::Fail);
        let arn =
            "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2025-01-01T00:00:00.000";
        let config = parse(&format!("stream_arn = \"{arn}\"")).unwrap();
        assert_eq!(config.explicit_region().as_deref(), Some("eu-west-1"));
        assert!(parse("")
            .unwrap_err()
            .starts_with("s.table: set exactly one"));
        assert!(parse("stream_arn = \"orders\"")
            .unwrap_err()
            .starts_with("s.stream_arn: not a DynamoDB stream ARN"));
        assert!(parse("table = \"t\"\npoll_interval_ms = 10")
            .unwrap_err()
            .starts_with("s.poll_interval_ms"));
        assert!(parse("table = \"t\"\nstart = \"now\"")
            .unwrap_err()
            .contains("unknown variant"));
    }
}
