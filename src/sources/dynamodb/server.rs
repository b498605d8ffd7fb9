//! The three DynamoDB Streams calls the source makes, behind a trait: the AWS client
//! implements it, and tests script shard trees (splits, closed parents, expired iterators,
//! trimmed data) through the same interface, since no emulator rolls shards.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::{AttributeValue, OperationType, ShardIteratorType};
use aws_sdk_dynamodbstreams::Client;

/// A shard as DescribeStream lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: String,
    pub parent: Option<String>,
    /// Has an ending sequence number: no new records will be added.
    pub closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    Enabling,
    Enabled,
    Disabling,
    Disabled,
}

#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub table: String,
    pub status: StreamStatus,
    /// KEYS_ONLY, NEW_IMAGE, OLD_IMAGE or NEW_AND_OLD_IMAGES.
    pub view_type: String,
    pub shards: Vec<ShardInfo>,
}

/// Where a shard iterator starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    TrimHorizon,
    Latest,
    After(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Insert,
    Modify,
    Remove,
}

/// One stream record.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    pub sequence_number: String,
    pub kind: RecordKind,
    pub keys: HashMap<String, AttributeValue>,
    pub new_image: Option<HashMap<String, AttributeValue>>,
    pub old_image: Option<HashMap<String, AttributeValue>>,
    /// ApproximateCreationDateTime, in ms since the epoch.
    pub created_ms: Option<i64>,
    /// Removed by DynamoDB's TTL (the service's principal), not by a client.
    pub ttl: bool,
}

/// A page of GetRecords; `next` is `None` once a closed shard has been read to its end.
#[derive(Debug, Clone)]
pub struct Page {
    pub records: Vec<StreamRecord>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("shard iterator expired")]
    ExpiredIterator,
    #[error("records were trimmed from the stream (older than 24 hours): {0}")]
    Trimmed(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("throttled: {0}")]
    Throttled(String),
    #[error("{0}")]
    Transient(String),
    #[error("access denied or refused credentials: {0}")]
    Denied(String),
    #[error("{0}")]
    Fatal(String),
}

#[async_trait]
pub trait StreamsApi: Send + Sync + 'static {
    /// The stream and all its shards (every page).
    async fn describe(&self, arn: &str) -> Result<StreamInfo, ApiError>;
    /// An iterator for `shard` from `start`; `None` when the shard has nothing left.
    async fn iterator(
        &self,
        arn: &str,
        shard: &str,
        start: &Start,
    ) -> Result<Option<String>, ApiError>;
    async fn records(&self, iterator: &str, limit: i32) -> Result<Page, ApiError>;
}

/// The AWS client.
pub struct AwsStreams(pub Client);

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(err: SdkError<E>) -> ApiError {
    let text = DisplayErrorContext(&err).to_string();
    let code = err.code().unwrap_or_default().to_owned();
    match code.as_str() {
        "ExpiredIteratorException" => ApiError::ExpiredIterator,
        "TrimmedDataAccessException" => ApiError::Trimmed(text),
        "ResourceNotFoundException" => ApiError::NotFound(text),
        "LimitExceededException"
        | "ThrottlingException"
        | "ProvisionedThroughputExceededException"
        | "RequestLimitExceeded" => ApiError::Throttled(text),
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "MissingAuthenticationToken" => ApiError::Denied(text),
        "ValidationException" => ApiError::Fatal(text),
        _ if matches!(err, SdkError::ServiceError(_)) && !code.is_empty() => {
            // InternalServerError and the like.
            ApiError::Transient(text)
        }
        _ if text.contains("credentials") => ApiError::Denied(text),
        _ => ApiError::Transient(text),
    }
}

/// A time as milliseconds since the epoch; `None` beyond that range (no real record's).
fn millis(time: &aws_sdk_dynamodbstreams::primitives::DateTime) -> Option<i64> {
    time.secs()
        .checked_mul(1000)?
        .checked_add(i64::from(time.subsec_nanos() / 1_000_000))
}

#[async_trait]
impl StreamsApi for AwsStreams {
    async fn describe(&self, arn: &str) -> Result<StreamInfo, ApiError> {
        let mut shards = Vec::new();
        let mut start_after: Option<String> = None;
        loop {
            let output = self
                .0
                .describe_stream()
                .stream_arn(arn)
                .set_exclusive_start_shard_id(start_after.take())
                .send()
                .await
                .map_err(classify)?;
            let description = output.stream_description().ok_or_else(|| {
                ApiError::Transient("DescribeStream without a description".into())
            })?;
            for shard in description.shards() {
                shards.push(ShardInfo {
                    id: shard.shard_id().unwrap_or_default().to_owned(),
                    parent: shard.parent_shard_id().map(str::to_owned),
                    closed: shard
                        .sequence_number_range()
                        .and_then(|r| r.ending_sequence_number())
                        .is_some(),
                });
            }
            start_after = description.last_evaluated_shard_id().map(str::to_owned);
            if start_after.is_none() {
                let status = match description.stream_status().map(|s| s.as_str()) {
                    Some("ENABLING") => StreamStatus::Enabling,
                    Some("DISABLING") => StreamStatus::Disabling,
                    Some("DISABLED") => StreamStatus::Disabled,
                    _ => StreamStatus::Enabled,
                };
                return Ok(StreamInfo {
                    table: description.table_name().unwrap_or_default().to_owned(),
                    status,
                    view_type: description
                        .stream_view_type()
                        .map(|v| v.as_str().to_owned())
                        .unwrap_or_default(),
                    shards,
                });
            }
        }
    }

    async fn iterator(
        &self,
        arn: &str,
        shard: &str,
        start: &Start,
    ) -> Result<Option<String>, ApiError> {
        let request = self.0.get_shard_iterator().stream_arn(arn).shard_id(shard);
        let request = match start {
            Start::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Start::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            Start::After(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
        };
        let output = request.send().await.map_err(classify)?;
        Ok(output.shard_iterator().map(str::to_owned))
    }

    async fn records(&self, iterator: &str, limit: i32) -> Result<Page, ApiError> {
        let output = self
            .0
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(classify)?;
        let mut records = Vec::with_capacity(output.records().len());
        for r in output.records() {
            // A record without these is not one DynamoDB sends; refuse it rather than skip it.
            // Named by its ids; its content (row values) goes to the debug log only.
            let malformed = || {
                tracing::debug!(record = ?r, "malformed stream record");
                ApiError::Fatal(format!(
                    "malformed stream record (event id {:?}, sequence number {:?})",
                    r.event_id(),
                    r.dynamodb().and_then(|d| d.sequence_number())
                ))
            };
            let data = r.dynamodb().ok_or_else(malformed)?;
            let kind = match r.event_name().ok_or_else(malformed)? {
                OperationType::Insert => RecordKind::Insert,
                OperationType::Modify => RecordKind::Modify,
                OperationType::Remove => RecordKind::Remove,
                _ => return Err(malformed()),
            };
            let ttl = r.user_identity().is_some_and(|u| {
                u.principal_id() == Some("dynamodb.amazonaws.com") && u.r#type() == Some("Service")
            });
            records.push(StreamRecord {
                sequence_number: data.sequence_number().ok_or_else(malformed)?.to_owned(),
                kind,
                keys: data.keys().cloned().unwrap_or_default(),
                new_image: data.new_image().cloned(),
                old_image: data.old_image().cloned(),
                created_ms: data.approximate_creation_date_time().and_then(millis),
                ttl,
            });
        }
        Ok(Page {
            records,
            next: output.next_shard_iterator().map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::primitives::DateTime;

    #[test]
    fn creation_times_beyond_the_millisecond_range_are_dropped() {
        assert_eq!(
            millis(&DateTime::from_secs_and_nanos(1, 2_500_000)),
            Some(1002)
        );
        assert_eq!(
            millis(&DateTime::from_secs_and_nanos(-1, 500_000_000)),
            Some(-500)
        );
        assert_eq!(millis(&DateTime::from_secs(i64::MAX)), None);
        assert_eq!(millis(&DateTime::from_secs(i64::MIN)), None);
    }
}
