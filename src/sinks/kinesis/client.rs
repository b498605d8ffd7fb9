//! The Kinesis client: region, endpoint and credentials from the standard AWS chain
//! (environment, profile, web identity, container and instance roles), and the mapping of the
//! SDK's errors onto the sink's error classes.
//!
//! The SDK's own retries are off: the sink retries itself, record by record, so that it can
//! keep each partition key in order (see `scheduler.rs`).

use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::Client;

use super::config::{KinesisSinkConfig, StreamRef};
use super::error::{classify, CodeClass, KinesisSinkError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The loaded AWS configuration, before the Kinesis client is made from it.
pub async fn sdk_config(
    config: &KinesisSinkConfig,
    stream: &StreamRef,
) -> Result<aws_config::SdkConfig, KinesisSinkError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );
    if let Some(region) = config.explicit_region(stream) {
        loader = loader.region(Region::new(region));
    }
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err(KinesisSinkError::NoRegion);
    }
    Ok(sdk)
}

/// A client for the sink. `customize` may add interceptors (tests inject faults this way).
pub fn client(
    sdk: &aws_config::SdkConfig,
    customize: impl FnOnce(aws_sdk_kinesis::config::Builder) -> aws_sdk_kinesis::config::Builder,
) -> Client {
    Client::from_conf(customize(aws_sdk_kinesis::config::Builder::from(sdk)).build())
}

/// What a failed call means: retry it, or stop with which error.
pub enum CallFailure {
    Retry(String),
    Stop(KinesisSinkError),
}

pub fn region_of(sdk: &aws_config::SdkConfig) -> String {
    sdk.region().map_or_else(String::new, |r| r.to_string())
}

/// Classifies a failed call on `stream`.
pub fn call_failure<E>(err: &SdkError<E>, stream: &str, region: &str) -> CallFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let described = DisplayErrorContext(err).to_string();
    if let Some(missing) = crate::error::aws_credentials_error(err) {
        return CallFailure::Stop(KinesisSinkError::NoCredentials(missing));
    }
    let SdkError::ServiceError(service) = err else {
        // Timeouts, connection failures, unparseable responses: the call may be sent again.
        return CallFailure::Retry(described);
    };
    let code = service.err().code().unwrap_or("Unknown").to_owned();
    let message = service.err().message().unwrap_or_default().to_owned();
    let status = service.raw().status().as_u16();
    let stream = stream.to_owned();
    match classify(&code) {
        CodeClass::Retry => CallFailure::Retry(format!("{code}: {message}")),
        _ if status >= 500 => CallFailure::Retry(format!("{code} (HTTP {status}): {message}")),
        CodeClass::StreamNotFound => CallFailure::Stop(KinesisSinkError::StreamNotFound {
            stream,
            region: region.to_owned(),
            code,
        }),
        CodeClass::AccessDenied => CallFailure::Stop(KinesisSinkError::AccessDenied {
            stream,
            code,
            message,
        }),
        CodeClass::Credentials => {
            CallFailure::Stop(KinesisSinkError::Credentials { code, message })
        }
        CodeClass::Rejected => CallFailure::Stop(KinesisSinkError::Rejected {
            stream,
            code,
            message,
        }),
    }
}
