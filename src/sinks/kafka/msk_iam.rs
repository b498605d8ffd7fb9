//! AWS MSK IAM authentication: the SASL/OAUTHBEARER token MSK accepts is a SigV4-presigned
//! URL for the action `kafka-cluster:Connect`, base64url-encoded.
//!
//! The URL: `https://kafka.<region>.amazonaws.com/?Action=kafka-cluster%3AConnect` signed for
//! service `kafka-cluster` in the query string (with `X-Amz-Expires=900` and, for temporary
//! credentials, `X-Amz-Security-Token`), the payload hash being that of an empty body; then a
//! `User-Agent` parameter. The token lives 15 minutes; librdkafka asks for a new one before it
//! expires (the producer's context calls [`token`] again with fresh credentials from the AWS
//! chain). Signing itself is done by `aws-sigv4`, the SDK's own signer.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use base64::Engine as _;

pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
const SERVICE: &str = "kafka-cluster";
/// SHA-256 of the empty string: the request has no body.
const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[derive(Debug, thiserror::Error)]
#[error("cannot sign the MSK IAM token: {0}")]
pub struct SigningFailed(String);

/// A signed token and when it stops being valid.
#[derive(Debug, Clone)]
pub struct AuthToken {
    pub token: String,
    pub expires_at: SystemTime,
}

/// The MSK IAM token for `region`, signed with `credentials` at `time`.
pub fn token(
    region: &str,
    credentials: &Credentials,
    time: SystemTime,
) -> Result<AuthToken, SigningFailed> {
    let url = presign_url(
        &PresignRequest {
            host: &format!("kafka.{region}.amazonaws.com"),
            path: "/",
            query: "Action=kafka-cluster%3AConnect",
            service: SERVICE,
            region,
            payload_hash: EMPTY_PAYLOAD_SHA256,
            expires_in: TOKEN_LIFETIME,
            time,
        },
        credentials,
    )?;
    let url = format!(
        "{url}&User-Agent={}",
        crate::percent::encode(concat!("cdc-bridge/", env!("CARGO_PKG_VERSION")))
    );
    Ok(AuthToken {
        token: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url),
        expires_at: time + TOKEN_LIFETIME,
    })
}

/// A GET request to presign (SigV4 in the query string).
pub struct PresignRequest<'a> {
    pub host: &'a str,
    pub path: &'a str,
    /// Already percent-encoded.
    pub query: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub payload_hash: &'a str,
    pub expires_in: Duration,
    pub time: SystemTime,
}

/// `https://host/path?query&X-Amz-...&X-Amz-Signature=...`.
pub fn presign_url(
    request: &PresignRequest<'_>,
    credentials: &Credentials,
) -> Result<String, SigningFailed> {
    let base = if request.query.is_empty() {
        format!("https://{}{}", request.host, request.path)
    } else {
        format!("https://{}{}?{}", request.host, request.path, request.query)
    };
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(request.expires_in);
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    let identity = credentials.clone().into();
    let params: aws_sigv4::http_request::SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(request.region)
        .name(request.service)
        .time(request.time)
        .settings(settings)
        .build()
        .map_err(|e| SigningFailed(e.to_string()))?
        .into();
    let signable = SignableRequest::new(
        "GET",
        Cow::Borrowed(base.as_str()),
        [("host", request.host)].into_iter(),
        SignableBody::Precomputed(request.payload_hash.to_owned()),
    )
    .map_err(|e| SigningFailed(e.to_string()))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| SigningFailed(e.to_string()))?
        .into_parts();
    let mut url = base;
    let mut separator = if request.query.is_empty() { '?' } else { '&' };
    for (name, value) in instructions.params() {
        url.push(separator);
        url.push_str(name);
        url.push('=');
        url.push_str(&crate::percent::encode(value));
        separator = '&';
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    /// 2013-05-24T00:00:00Z, the time of AWS's published examples.
    fn example_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600)
    }

    /// AWS's published query-string (presigned URL) example: GET examplebucket/test.txt for
    /// 86,400 s, signature `aeeed9bb...404`. Our signing path reproduces it exactly.
    #[test]
    fn reproduces_the_published_sigv4_presign_example() {
        let credentials = Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
        let url = presign_url(
            &PresignRequest {
                host: "examplebucket.s3.amazonaws.com",
                path: "/test.txt",
                query: "",
                service: "s3",
                region: "us-east-1",
                payload_hash: "UNSIGNED-PAYLOAD",
                expires_in: Duration::from_secs(86_400),
                time: example_time(),
            },
            &credentials,
        )
        .unwrap();
        assert!(url.starts_with("https://examplebucket.s3.amazonaws.com/test.txt?"));
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request",
            "X-Amz-Date=20130524T000000Z",
            "X-Amz-Expires=86400",
            "X-Amz-SignedHeaders=host",
            "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
        ] {
            assert!(url.contains(part), "{part} missing in {url}");
        }
    }

    fn decode(token: &str) -> String {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .expect("base64url without padding");
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_msk_token_is_a_presigned_connect_url() {
        let credentials = Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            Some("session/token+1=".into()),
            None,
            "test",
        );
        let signed = token("eu-west-1", &credentials, example_time()).unwrap();
        assert!(
            !signed.token.contains(['+', '/', '=']),
            "base64url, unpadded"
        );
        assert_eq!(signed.expires_at, example_time() + Duration::from_secs(900));
        let url = decode(&signed.token);
        assert!(
            url.starts_with(
                "https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"
            ),
            "{url}"
        );
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Feu-west-1%2Fkafka-cluster%2Faws4_request",
            "X-Amz-Date=20130524T000000Z",
            "X-Amz-Expires=900",
            "X-Amz-SignedHeaders=host",
            "X-Amz-Security-Token=session%2Ftoken%2B1%3D",
            "User-Agent=cdc-bridge%2F",
        ] {
            assert!(url.contains(part), "{part} missing in {url}");
        }
        // The signature covers the inputs: the same inputs sign the same, others differently.
        let again = token("eu-west-1", &credentials, example_time()).unwrap();
        assert_eq!(again.token, signed.token);
        let later = token(
            "eu-west-1",
            &credentials,
            example_time() + Duration::from_secs(1),
        )
        .unwrap();
        let signature = |t: &AuthToken| {
            decode(&t.token).split("X-Amz-Signature=").nth(1).unwrap()[..64].to_owned()
        };
        assert_ne!(signature(&later), signature(&signed));
        assert!(signature(&signed).bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
