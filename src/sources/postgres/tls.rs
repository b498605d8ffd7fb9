//! TLS for both PostgreSQL connections, over rustls, chosen by the URL's `sslmode` with
//! libpq's meanings:
//! - `disable`: plain TCP;
//! - `prefer` (the default): TLS when the server offers it, plain when it declines (the
//!   certificate is not verified);
//! - `require`: encrypted, the certificate is not verified;
//! - `verify-ca`: the certificate chain is verified against `sslrootcert` (required), the
//!   host name is not;
//! - `verify-full`: chain and host name verified against `sslrootcert`, or the Mozilla roots
//!   when it is absent.
//!
//! `sslmode` and `sslrootcert` are taken out of the URL before tokio-postgres sees it; the
//! handshake itself is done by [`super::transport`] for both connections.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};

use super::error::PostgresError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS part of a connection URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

/// Splits `sslmode` and `sslrootcert` off `url`; returns the rest of the URL and the settings.
pub fn split_url(url: &str) -> Result<(String, TlsSettings), String> {
    let mut settings = TlsSettings {
        mode: SslMode::Prefer,
        root_cert: None,
    };
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", mode)) => {
                settings.mode = match mode {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode={other} is not supported; use disable, prefer, require, verify-ca or verify-full"
                        ))
                    }
                }
            }
            Some(("sslrootcert", path)) => settings.root_cert = Some(PathBuf::from(path)),
            _ => kept.push(pair),
        }
    }
    // Without a CA of its own, verify-ca would accept any publicly trusted certificate
    // issued for any host.
    if settings.mode == SslMode::VerifyCa && settings.root_cert.is_none() {
        return Err(
            "sslmode=verify-ca needs sslrootcert=/path/to/ca.pem (the CA that signed the server's certificate); or use verify-full, which also checks the host name"
                .into(),
        );
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, settings))
}

/// The rustls configuration for `settings` (None for `disable`).
pub fn client_config(settings: &TlsSettings) -> Result<Option<Arc<ClientConfig>>, PostgresError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Some(verifier) = verifier(settings, &provider)? else {
        return Ok(None);
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PostgresError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

/// How the server's certificate is checked in each mode (None for `disable`).
fn verifier(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ServerCertVerifier>>, PostgresError> {
    Ok(Some(match settings.mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => Arc::new(AnyCertificate(provider.clone())),
        SslMode::VerifyCa => {
            let path = settings
                .root_cert
                .as_ref()
                .ok_or_else(|| PostgresError::Tls("sslmode=verify-ca needs sslrootcert".into()))?;
            Arc::new(ChainOnly {
                roots: Arc::new(read_roots(path)?),
                provider: provider.clone(),
            })
        }
        SslMode::VerifyFull => {
            let roots = match &settings.root_cert {
                Some(path) => read_roots(path)?,
                None => webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect(),
            };
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| PostgresError::Tls(e.to_string()))?
        }
    }))
}

fn read_roots(path: &std::path::Path) -> Result<RootCertStore, PostgresError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            PostgresError::Tls(format!("cannot read sslrootcert {}: {e}", path.display()))
        })?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| PostgresError::Tls(format!("sslrootcert {}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// Wraps a stream in TLS for `host`.
pub async fn handshake<S>(
    config: Arc<ClientConfig>,
    host: &str,
    stream: S,
) -> Result<tokio_rustls::client::TlsStream<S>, PostgresError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| PostgresError::Tls(format!("host {host:?}: {e}")))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| PostgresError::Tls(format!("TLS handshake with {host} failed: {e}")))
}

/// `sslmode=verify-ca`: the chain must lead to one of `roots`; the name is not checked.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        AnyCertificate(self.provider.clone()).verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        AnyCertificate(self.provider.clone()).verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `sslmode=prefer` and `require`: encrypt, accept any certificate (the handshake's
/// signatures are still checked).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_parameters_leave_the_url() {
        let (rest, settings) = split_url(
            "postgres://u:p@h/db?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@h/db?connect_timeout=5");
        assert_eq!(
            settings,
            TlsSettings {
                mode: SslMode::VerifyFull,
                root_cert: Some("/ca.pem".into())
            }
        );
        assert_eq!(
            split_url("postgres://h/db").unwrap().1.mode,
            SslMode::Prefer
        );
        assert_eq!(
            split_url("postgres://h/db?sslmode=disable").unwrap().1.mode,
            SslMode::Disable
        );
        assert!(split_url("postgres://h/db?sslmode=allow")
            .unwrap_err()
            .contains("not supported"));
        assert!(split_url("postgres://h/db?sslmode=verify-ca")
            .unwrap_err()
            .contains("needs sslrootcert"));
    }

    fn verifier_for(mode: SslMode) -> Arc<dyn ServerCertVerifier> {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, include_bytes!("testdata/ca.pem")).unwrap();
        let settings = TlsSettings {
            mode,
            root_cert: Some(ca),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        verifier(&settings, &provider).unwrap().unwrap()
    }

    /// `testdata/leaf.pem` is issued by `testdata/ca.pem` for `db.internal` only.
    #[test]
    fn verify_ca_checks_the_chain_but_not_the_name() {
        let leaf = CertificateDer::from_pem_slice(include_bytes!("testdata/leaf.pem")).unwrap();
        let now = UnixTime::now();
        let verify = |mode, name: &str| {
            verifier_for(mode).verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                now,
            )
        };
        assert!(verify(SslMode::VerifyCa, "db.internal").is_ok());
        assert!(verify(SslMode::VerifyCa, "elsewhere.example").is_ok());
        assert!(verify(SslMode::VerifyFull, "db.internal").is_ok());
        assert!(matches!(
            verify(SslMode::VerifyFull, "elsewhere.example"),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. }
                    | rustls::CertificateError::NotValidForName
            ))
        ));
        // An empty CA set: nothing is trusted.
        let strict = ChainOnly {
            roots: Arc::new(RootCertStore::empty()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        assert!(matches!(
            strict.verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from("db.internal").unwrap(),
                &[],
                now
            ),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ));
    }
}
