//! Errors of the DynamoDB Streams source, each with its disposition and the fix.

use crate::error::{ConnectorError, Disposition};

#[derive(Debug, Clone, thiserror::Error)]
pub enum DynamoDbError {
    #[error(
        "no AWS region: set `region` in the source, AWS_REGION, or a region in the AWS profile"
    )]
    NoRegion,
    #[error("table {table:?} has no stream: enable DynamoDB Streams on it (NEW_AND_OLD_IMAGES gives before and after rows)")]
    NoStream { table: String },
    #[error("{what} not found: {detail}")]
    NotFound { what: String, detail: String },
    #[error("access to DynamoDB Streams denied: {0} (the credentials need dynamodb:DescribeTable, dynamodb:DescribeStream, dynamodb:GetShardIterator and dynamodb:GetRecords)")]
    Denied(String),
    #[error("records of shard {shard} after {after} are gone (DynamoDB Streams keeps 24 hours): the changes between the checkpoint and the oldest record still in the stream are lost. To go on from the oldest record, set on_trimmed = \"restart_from_oldest\"; to start over, reset the checkpoints and copy the table again")]
    Trimmed { shard: String, after: String },
    #[error("the stream of table {table} is disabled and every record it held has been read. Enable a stream on the table (it gets a new ARN), then reset this pipeline's checkpoints to read it")]
    Disabled { table: String },
    #[error("stored checkpoint {token:?} of shard {shard} is not a sequence number; reset this pipeline's checkpoints")]
    BadCheckpoint { shard: String, token: String },
    #[error("DynamoDB Streams keeps failing: {0}")]
    Unavailable(String),
    #[error("DynamoDB Streams: {0}")]
    Fatal(String),
}

impl ConnectorError for DynamoDbError {
    fn disposition(&self) -> Disposition {
        match self {
            DynamoDbError::Unavailable(_) => Disposition::Transient,
            _ => Disposition::Fatal,
        }
    }
}

impl From<DynamoDbError> for crate::source::Halt<DynamoDbError> {
    fn from(err: DynamoDbError) -> Self {
        crate::source::Halt::Failed(err)
    }
}
