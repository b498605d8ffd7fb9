//! Error dispositions shared by every connector.
//!
//! Each connector has its own error type (thiserror) and says, per error, what the pipeline
//! should do about it: [`Disposition::Transient`] — back off and resume from the checkpoint;
//! [`Disposition::Fatal`] — stop the pipeline and tell the operator what to fix;
//! [`Disposition::Data`] — a poison record: stop, naming its position and table.

use std::error::Error;
use std::fmt;

/// What the pipeline does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Transient,
    Fatal,
    Data,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Transient => "transient",
            Disposition::Fatal => "fatal",
            Disposition::Data => "data",
        }
    }
}

/// An error of a source or sink, with its disposition.
pub trait ConnectorError: Error + Send + Sync + 'static {
    fn disposition(&self) -> Disposition;
}

/// A boxed connector error, as sources and sinks return them.
pub struct BoxError(Box<dyn ConnectorError>);

impl BoxError {
    pub fn disposition(&self) -> Disposition {
        self.0.disposition()
    }
}

impl<E: ConnectorError> From<E> for BoxError {
    fn from(err: E) -> Self {
        BoxError(Box::new(err))
    }
}

impl fmt::Debug for BoxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for BoxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for BoxError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// The AWS credential chain's error in an error's chain (an AWS SDK call that failed for want
/// of credentials), reported on one line; `None` when that is not what failed.
pub fn aws_credentials_error(err: &(dyn Error + 'static)) -> Option<String> {
    let mut current = err.source();
    while let Some(e) = current {
        if let Some(creds) =
            e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
        {
            return Some(report(creds));
        }
        current = e.source();
    }
    None
}

/// Whether the AWS credential chain's error in `err`'s chain is passing (a provider that timed
/// out or failed, e.g. the instance metadata service or STS for a moment): `None` when the
/// chain holds no credential error.
pub fn aws_credentials_passing(err: &(dyn Error + 'static)) -> Option<bool> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut current = err.source();
    while let Some(e) = current {
        if let Some(creds) = e.downcast_ref::<CredentialsError>() {
            return Some(matches!(
                creds,
                CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_)
            ));
        }
        current = e.source();
    }
    None
}

/// The error and its causes on one line: `a: b: c`. A cause whose text its parent already
/// ends with is not repeated.
pub fn report(err: &dyn Error) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = next.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("writing batch")]
    struct Outer(#[source] std::io::Error);

    impl ConnectorError for Outer {
        fn disposition(&self) -> Disposition {
            Disposition::Transient
        }
    }

    #[test]
    fn report_chains_causes_and_box_keeps_disposition() {
        let err = BoxError::from(Outer(std::io::Error::other("disk full")));
        assert_eq!(err.disposition(), Disposition::Transient);
        assert_eq!(report(&err), "writing batch: disk full");
    }
}
