//! A client of Confluent Schema Registry's REST API: registers a schema under a subject
//! (`POST /subjects/{subject}/versions`) and returns the schema's id, the id a record's
//! Confluent framing carries. Registering a schema the subject already has returns its id
//! again, so registering is also how an id is looked up.
//!
//! One HTTP/1.1 connection per call (over TLS for `https://` URLs, verified against the Web PKI
//! roots or `registry_ca`): a registry is asked once per table schema, not per record.
//! Errors carry a disposition: an unreachable or failing registry (connection, timeout, 5xx,
//! 429) is transient, nothing is acknowledged and the pipeline retries; refused credentials
//! (401, 403) and a refused schema (409 incompatible, 422 invalid) are fatal and say what to
//! fix.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::Secret;
use crate::error::{ConnectorError, Disposition};

const CONTENT: &str = "application/vnd.schemaregistry.v1+json";
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the registry did not give an id.
#[derive(Debug, thiserror::Error)]
pub enum ConfluentError {
    #[error("schema registry {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("schema registry {url} answered {status}: {body}")]
    Failing {
        url: String,
        status: u16,
        body: String,
    },
    #[error("schema registry {url} refused the credentials ({status}): check registry_username and registry_password")]
    Credentials { url: String, status: u16 },
    #[error("schema registry {url} refused the schema of subject {subject} ({status}): {body}; a schema change the subject's compatibility level forbids needs that level changed (PUT /config/{subject})")]
    Refused {
        url: String,
        subject: String,
        status: u16,
        body: String,
    },
    #[error("registry_url {url}: {reason}")]
    Config { url: String, reason: String },
}

impl ConnectorError for ConfluentError {
    fn disposition(&self) -> Disposition {
        match self {
            ConfluentError::Unreachable { .. } | ConfluentError::Failing { .. } => {
                Disposition::Transient
            }
            _ => Disposition::Fatal,
        }
    }
}

/// Where the registry is and how to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfluentSettings {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// A PEM file of the CA that signed an `https://` registry's certificate.
    pub ca: Option<PathBuf>,
}

pub struct ConfluentRegistry {
    url: String,
    host: String,
    port: u16,
    base_path: String,
    tls: Option<Arc<ClientConfig>>,
    authorization: Option<HeaderValue>,
}

impl ConfluentRegistry {
    pub fn new(settings: &ConfluentSettings) -> Result<Self, ConfluentError> {
        let config_error = |reason: &str| ConfluentError::Config {
            url: settings.url.clone(),
            reason: reason.to_owned(),
        };
        let (https, rest) = match settings.url.split_once("://") {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            _ => return Err(config_error("must start with http:// or https://")),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| config_error("the port is not a number"))?,
            ),
            None => (authority, if https { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(config_error("names no host"));
        }
        let tls = https
            .then(|| tls_config(settings.ca.as_ref()))
            .transpose()
            .map_err(|reason| config_error(&reason))?;
        let authorization = match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => {
                let token = BASE64.encode(format!("{user}:{}", password.expose()));
                Some(
                    HeaderValue::from_str(&format!("Basic {token}"))
                        .map_err(|_| config_error("the credentials cannot be sent in a header"))?,
                )
            }
            (None, None) => None,
            _ => {
                return Err(config_error(
                    "registry_username and registry_password go together",
                ))
            }
        };
        Ok(ConfluentRegistry {
            url: settings.url.clone(),
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
            base_path: path.trim_end_matches('/').to_owned(),
            tls,
            authorization,
        })
    }

    /// The id of `schema` (Avro schema JSON) under `subject`, registering it if new.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, ConfluentError> {
        let body =
            serde_json::to_vec(&serde_json::json!({ "schema": schema })).expect("JSON of a string");
        let path = self.path(&format!(
            "subjects/{}/versions",
            crate::percent::encode(subject)
        ));
        let (status, body) = self.call(Method::POST, &path, body).await?;
        let text = || {
            String::from_utf8_lossy(&body)
                .chars()
                .take(500)
                .collect::<String>()
        };
        match status {
            StatusCode::OK => {
                #[derive(serde::Deserialize)]
                struct Registered {
                    id: u32,
                }
                serde_json::from_slice::<Registered>(&body)
                    .map(|r| r.id)
                    .map_err(|_| ConfluentError::Failing {
                        url: self.url.clone(),
                        status: status.as_u16(),
                        body: text(),
                    })
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(ConfluentError::Credentials {
                url: self.url.clone(),
                status: status.as_u16(),
            }),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                Err(ConfluentError::Failing {
                    url: self.url.clone(),
                    status: s.as_u16(),
                    body: text(),
                })
            }
            s => Err(ConfluentError::Refused {
                url: self.url.clone(),
                subject: subject.to_owned(),
                status: s.as_u16(),
                body: text(),
            }),
        }
    }

    /// Whether the registry answers and accepts the credentials (`cdc-bridge check`): the
    /// number of subjects it lists. Whether they may register is only known at the first
    /// registration.
    pub async fn describe(&self) -> Result<usize, ConfluentError> {
        let (status, body) = self
            .call(Method::GET, &self.path("subjects"), Vec::new())
            .await?;
        match status {
            StatusCode::OK => serde_json::from_slice::<Vec<String>>(&body)
                .map(|subjects| subjects.len())
                .map_err(|_| self.failing(status, &body)),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(ConfluentError::Credentials {
                url: self.url.clone(),
                status: status.as_u16(),
            }),
            s => Err(self.failing(s, &body)),
        }
    }

    fn path(&self, tail: &str) -> String {
        if self.base_path.is_empty() {
            format!("/{tail}")
        } else {
            format!("/{}/{tail}", self.base_path)
        }
    }

    fn failing(&self, status: StatusCode, body: &[u8]) -> ConfluentError {
        ConfluentError::Failing {
            url: self.url.clone(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(body).chars().take(500).collect(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ConfluentError> {
        tokio::time::timeout(CALL_TIMEOUT, self.connect_and_send(method, path, body))
            .await
            .map_err(|_| self.unreachable("no answer within 15 s"))?
    }

    async fn connect_and_send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ConfluentError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.unreachable(&e.to_string()))?;
        match &self.tls {
            Some(config) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| self.unreachable(&e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| self.unreachable(&format!("TLS: {e}")))?;
                self.exchange(tls, method, path, body).await
            }
            None => self.exchange(tcp, method, path, body).await,
        }
    }

    async fn exchange<S>(
        &self,
        stream: S,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ConfluentError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(&e.to_string()))?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, format!("{}:{}", self.host, self.port))
            .header(CONTENT_TYPE, CONTENT)
            .header(ACCEPT, CONTENT)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.unreachable(&e.to_string()))?;
        if let Some(authorization) = &self.authorization {
            request
                .headers_mut()
                .insert(AUTHORIZATION, authorization.clone());
        }
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(&e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(&e.to_string()))?
            .to_bytes();
        Ok((status, body))
    }

    fn unreachable(&self, reason: &str) -> ConfluentError {
        ConfluentError::Unreachable {
            url: self.url.clone(),
            reason: reason.to_owned(),
        }
    }
}

fn tls_config(ca: Option<&PathBuf>) -> Result<Arc<ClientConfig>, String> {
    let roots = match ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read registry_ca {}: {e}", path.display()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("registry_ca {}: {e}", path.display()))?;
            }
            roots
        }
        None => webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> ConfluentSettings {
        ConfluentSettings {
            url: url.to_owned(),
            username: None,
            password: None,
            ca: None,
        }
    }

    #[test]
    fn a_registry_url_is_checked_before_any_call() {
        let reason = |url: &str| match ConfluentRegistry::new(&settings(url)) {
            Err(ConfluentError::Config { reason, .. }) => reason,
            Err(other) => panic!("{other}"),
            Ok(_) => "accepted".to_owned(),
        };
        assert_eq!(reason("http://127.0.0.1:8081"), "accepted");
        assert_eq!(reason("https://registry.example.com/base/"), "accepted");
        assert_eq!(
            reason("127.0.0.1:8081"),
            "must start with http:// or https://"
        );
        assert_eq!(reason("http://host:port"), "the port is not a number");
        let half = ConfluentSettings {
            username: Some("u".into()),
            ..settings("http://127.0.0.1:8081")
        };
        assert!(
            matches!(ConfluentRegistry::new(&half), Err(ConfluentError::Config { reason, .. }) if reason.contains("go together"))
        );
    }

    #[test]
    fn an_outage_is_transient_and_a_refusal_fatal() {
        let unreachable = ConfluentError::Unreachable {
            url: "u".into(),
            reason: "r".into(),
        };
        assert_eq!(unreachable.disposition(), Disposition::Transient);
        let credentials = ConfluentError::Credentials {
            url: "u".into(),
            status: 401,
        };
        assert_eq!(credentials.disposition(), Disposition::Fatal);
    }

    /// Nothing listens on port 1: unreachable, which the pipeline rides out.
    #[tokio::test]
    async fn a_registry_that_does_not_answer_is_unreachable() {
        let registry = ConfluentRegistry::new(&settings("http://127.0.0.1:1")).unwrap();
        let err = registry.register("t-value", "\"long\"").await.unwrap_err();
        assert!(matches!(err, ConfluentError::Unreachable { .. }), "{err}");
    }
}
