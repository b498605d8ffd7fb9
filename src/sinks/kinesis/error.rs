//! Errors of the Kinesis sink, each with its disposition, and the classification of the
//! service's error codes into "retry" and "stop and tell the operator".

use crate::error::{ConnectorError, Disposition};

#[derive(Debug, Clone, thiserror::Error)]
pub enum KinesisSinkError {
    #[error("no AWS region: set `region` in the sink, AWS_REGION, or a region in the AWS profile")]
    NoRegion,
    #[error("stream {stream:?} does not exist in region {region} ({code}): create it, or fix `stream`, `region` or `endpoint_url`")]
    StreamNotFound {
        stream: String,
        region: String,
        code: String,
    },
    #[error("stream {stream:?} is {status}, not ACTIVE: wait until it is, or check the stream in the console")]
    NotActive { stream: String, status: String },
    #[error("access to stream {stream:?} denied ({code}: {message}): the credentials need kinesis:PutRecords, kinesis:DescribeStreamSummary and kinesis:ListShards on it")]
    AccessDenied {
        stream: String,
        code: String,
        message: String,
    },
    #[error("the AWS credentials were refused ({code}: {message}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the instance role")]
    Credentials { code: String, message: String },
    #[error("no usable AWS credentials: {0} (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity, or run with an instance role)")]
    NoCredentials(String),
    #[error("stream {stream:?} rejected the request ({code}: {message})")]
    Rejected {
        stream: String,
        code: String,
        message: String,
    },
    #[error("stream {stream:?} rejected the record of table {table} at position {position} ({code}: {message})")]
    RecordRejected {
        stream: String,
        table: String,
        position: String,
        code: String,
        message: String,
    },
    #[error("the record of table {table} at position {position} still fails after {attempts} attempts over {seconds} s ({last_error}); restarting from the checkpoint")]
    RetriesExhausted {
        table: String,
        position: String,
        attempts: u32,
        seconds: u64,
        last_error: String,
    },
    #[error("cannot reach Kinesis for stream {stream:?}: {message}")]
    Unavailable { stream: String, message: String },
    #[error("the Kinesis sink stopped: {0}")]
    Stopped(String),
}

impl ConnectorError for KinesisSinkError {
    fn disposition(&self) -> Disposition {
        match self {
            KinesisSinkError::Unavailable { .. }
            | KinesisSinkError::RetriesExhausted { .. }
            | KinesisSinkError::Stopped(_) => Disposition::Transient,
            KinesisSinkError::RecordRejected { .. } => Disposition::Data,
            _ => Disposition::Fatal,
        }
    }
}

/// What to do about an error code from the service, for a whole call or one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeClass {
    /// Throttling or a service-side failure: back off and send again.
    Retry,
    StreamNotFound,
    AccessDenied,
    Credentials,
    /// A request or record the service will never accept as it is.
    Rejected,
}

pub fn classify(code: &str) -> CodeClass {
    match code {
        "ProvisionedThroughputExceededException"
        | "ProvisionedThroughputExceeded"
        | "InternalFailure"
        | "InternalFailureException"
        | "InternalServerError"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "KMSThrottlingException"
        | "LimitExceededException"
        | "ThrottlingException"
        | "Throttling"
        | "RequestLimitExceeded"
        | "RequestTimeout"
        | "RequestTimeoutException"
        | "ExpiredTokenException"
        | "ExpiredToken" => CodeClass::Retry,
        "ResourceNotFoundException" => CodeClass::StreamNotFound,
        "AccessDeniedException" | "KMSAccessDeniedException" => CodeClass::AccessDenied,
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch" => CodeClass::Credentials,
        _ => CodeClass::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_retries_and_the_rest_stops() {
        assert_eq!(
            classify("ProvisionedThroughputExceededException"),
            CodeClass::Retry
        );
        assert_eq!(classify("InternalFailure"), CodeClass::Retry);
        assert_eq!(classify("KMSThrottlingException"), CodeClass::Retry);
        assert_eq!(
            classify("ResourceNotFoundException"),
            CodeClass::StreamNotFound
        );
        assert_eq!(classify("KMSDisabledException"), CodeClass::Rejected);
        assert_eq!(classify("ValidationException"), CodeClass::Rejected);
        let stop = KinesisSinkError::StreamNotFound {
            stream: "s".into(),
            region: "r".into(),
            code: "ResourceNotFoundException".into(),
        };
        assert_eq!(stop.disposition(), Disposition::Fatal);
        assert!(stop.to_string().contains("create it"));
    }
}
