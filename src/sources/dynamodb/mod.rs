//! The `dynamodb` source: a table's DynamoDB Stream (INSERT / MODIFY / REMOVE with keys, new
//! and old images) into change events.
//!
//! Flow: the stream's ARN (from `stream_arn`, or the table's latest stream) -> the
//! [`stream::Reader`] lists the shards, reads each parent to its end before its children
//! ([`lineage`]), maps records to events ([`value`] for the values) with a checkpoint per
//! shard (partition = shard id, position = sequence number; a finished shard is stored as
//! `END` and never read again). The event's `source.position` is `<shard id>:<sequence number>`.
//!
//! Errors ([`DynamoDbError`]): a missing table, stream or permission, records lost to the
//! 24-hour retention and a disabled stream are fatal with the fix; service trouble that
//! outlasts the retries is transient.

mod config;
mod error;
#[doc(hidden)]
pub mod fuzz;
mod lineage;
mod server;
mod stream;
mod value;

use std::sync::Arc;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region};

pub use config::{DynamoDbConfig, OnTrimmed, StartAt};
pub use error::DynamoDbError;
pub use server::{
    ApiError, Page, RecordKind, ShardInfo, Start, StreamInfo, StreamRecord, StreamStatus,
    StreamsApi,
};
pub use stream::{finished_position, seq_position, FINISHED};
pub use value::{row as attribute_row, value as attribute_value};

use crate::check::Finding;
use crate::error::BoxError;
use crate::source::{Halt, Source, SourceContext};
use server::AwsStreams;

pub struct DynamoDbSource {
    config: DynamoDbConfig,
    /// A scripted API and stream ARN instead of AWS (tests).
    api: Option<(Arc<dyn StreamsApi>, String)>,
}

impl DynamoDbSource {
    pub fn new(config: DynamoDbConfig) -> Self {
        DynamoDbSource { config, api: None }
    }

    /// Reads `arn` through `api` instead of the AWS client.
    pub fn with_api(
        config: DynamoDbConfig,
        api: Arc<dyn StreamsApi>,
        arn: impl Into<String>,
    ) -> Self {
        DynamoDbSource {
            config,
            api: Some((api, arn.into())),
        }
    }
}

#[async_trait]
impl Source for DynamoDbSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<(), BoxError> {
        let (api, arn, region) = match self.api {
            Some((api, arn)) => (api, arn, "local".to_owned()),
            None => {
                let connected = connect(&self.config).await?;
                (
                    Arc::new(AwsStreams(connected.streams)) as Arc<dyn StreamsApi>,
                    connected.arn,
                    connected.region,
                )
            }
        };
        tracing::info!(stream = %arn, "reading DynamoDB stream");
        let reader = stream::Reader::new(api, arn, self.config, &region, &ctx);
        Ok(reader.run(&mut ctx).await.or_else(Halt::into_result)?)
    }
}

struct Connected {
    streams: aws_sdk_dynamodbstreams::Client,
    arn: String,
    region: String,
    view_type: Option<String>,
}

async fn connect(config: &DynamoDbConfig) -> Result<Connected, DynamoDbError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = config.explicit_region() {
        loader = loader.region(Region::new(region));
    }
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    let region = sdk.region().ok_or(DynamoDbError::NoRegion)?.to_string();
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let (arn, view_type) = match (&config.stream_arn, &config.table) {
        (Some(arn), _) => (arn.clone(), None),
        (None, Some(table)) => {
            let output = aws_sdk_dynamodb::Client::new(&sdk)
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(|err| {
                    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
                    let detail = aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string();
                    match err.code() {
                        Some("ResourceNotFoundException") => DynamoDbError::NotFound {
                            what: format!("table {table:?} in region {region}"),
                            detail,
                        },
                        Some("AccessDeniedException" | "UnrecognizedClientException") => {
                            DynamoDbError::Denied(detail)
                        }
                        _ if detail.contains("credentials") => DynamoDbError::Denied(detail),
                        _ => DynamoDbError::Unavailable(detail),
                    }
                })?;
            let description = output.table();
            let arn = description
                .and_then(|t| t.latest_stream_arn())
                .filter(|_| {
                    description
                        .and_then(|t| t.stream_specification())
                        .is_some_and(|s| s.stream_enabled())
                })
                .ok_or_else(|| DynamoDbError::NoStream {
                    table: table.clone(),
                })?;
            let view_type = description
                .and_then(|t| t.stream_specification())
                .and_then(|s| s.stream_view_type())
                .map(|v| v.as_str().to_owned());
            (arn.to_owned(), view_type)
        }
        (None, None) => unreachable!("validated: table or stream_arn"),
    };
    Ok(Connected {
        streams,
        arn,
        region,
        view_type,
    })
}

/// `cdc-bridge check` for this source: the table has a stream, its view type, shard count.
pub async fn check(config: &DynamoDbConfig) -> Vec<Finding> {
    let connected = match connect(config).await {
        Ok(connected) => connected,
        Err(err) => return vec![Finding::fail(err.to_string())],
    };
    let api = AwsStreams(connected.streams);
    let info = match api.describe(&connected.arn).await {
        Ok(info) => info,
        Err(err) => {
            return vec![Finding::fail(format!(
                "DescribeStream {}: {err}",
                connected.arn
            ))]
        }
    };
    let open = info.shards.iter().filter(|s| !s.closed).count();
    let mut findings = vec![Finding::ok(format!(
        "stream {} of table {} is {:?}, {} shard(s) ({} open)",
        connected.arn,
        info.table,
        info.status,
        info.shards.len(),
        open
    ))];
    let view_type = connected.view_type.unwrap_or(info.view_type);
    findings.push(match view_type.as_str() {
        "NEW_AND_OLD_IMAGES" => Finding::ok("view type NEW_AND_OLD_IMAGES: events carry before and after rows"),
        "KEYS_ONLY" => Finding::warn("view type KEYS_ONLY: events carry only keys (no before, no after); NEW_AND_OLD_IMAGES gives full rows"),
        other => Finding::warn(format!("view type {other}: events carry {} only; NEW_AND_OLD_IMAGES gives both", if other == "NEW_IMAGE" { "after rows" } else { "before rows" })),
    });
    if info.status != StreamStatus::Enabled {
        findings.push(Finding::fail(format!(
            "the stream is {:?}: enable DynamoDB Streams on the table",
            info.status
        )));
    }
    findings
}

#[cfg(test)]
mod tests;
