//! The byte stream under both PostgreSQL connections (the walsender session and the
//! tokio-postgres SQL session): TCP, then TLS as `sslmode` asks ([`super::tls`]).
//!
//! An unencrypted stream is wrapped in [`CleartextGuard`], which reads the server's
//! authentication requests as they pass: a request for the password in cleartext fails the
//! read with [`CleartextRefused`] before the client can answer it, unless the source sets
//! `allow_cleartext_password`. MD5 passes: its hash is salted per connection so it cannot be
//! replayed, though an eavesdropper can still try to guess a weak password from it offline.
//! SCRAM never reveals the password.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::config::PostgresConfig;
use super::error::PostgresError;
use super::tls::{self, SslMode};
use crate::config::Secret;

/// Where and as whom to connect.
#[derive(Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub dbname: String,
    pub ssl_mode: SslMode,
    /// None for `sslmode=disable`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub allow_cleartext_password: bool,
    pub connect_timeout: Option<Duration>,
    pub application_name: String,
}

impl Endpoint {
    pub fn new(config: &PostgresConfig) -> Result<Self, PostgresError> {
        let application_name = config.application_name();
        Endpoint::of_url(
            &config.url,
            config.allow_cleartext_password,
            application_name,
        )
    }

    /// The endpoint of a connection URL (with `sslmode` and the other TLS parameters).
    pub fn of_url(
        url: &Secret,
        allow_cleartext_password: bool,
        application_name: String,
    ) -> Result<Self, PostgresError> {
        let (url, settings) = tls::split_url(url.expose()).map_err(PostgresError::Tls)?;
        let parsed: tokio_postgres::Config = url
            .parse()
            .map_err(|e| PostgresError::Protocol(format!("bad url: {e}")))?;
        let host = match parsed.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            None => "localhost".to_owned(),
            Some(_) => {
                return Err(PostgresError::Protocol(
                    "unix-socket hosts are not supported; use a TCP host".into(),
                ))
            }
        };
        let user = parsed.get_user().unwrap_or_default().to_owned();
        Ok(Endpoint {
            port: parsed.get_ports().first().copied().unwrap_or(5432),
            dbname: parsed
                .get_dbname()
                .map_or_else(|| user.clone(), str::to_owned),
            password: parsed
                .get_password()
                .map(|p| Secret::new(String::from_utf8_lossy(p))),
            user,
            host,
            ssl_mode: settings.mode,
            tls: tls::client_config(&settings)?,
            allow_cleartext_password,
            connect_timeout: parsed.get_connect_timeout().copied(),
            application_name,
        })
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// Connects to `endpoint` and negotiates TLS; the startup message is the caller's.
pub async fn open(endpoint: &Endpoint) -> Result<Box<dyn ByteStream>, PostgresError> {
    let connect_error = |source| PostgresError::Connect {
        addr: endpoint.addr(),
        source,
    };
    let connect = TcpStream::connect(endpoint.addr());
    let stream = match endpoint.connect_timeout {
        Some(limit) => tokio::time::timeout(limit, connect)
            .await
            .map_err(|_| connect_error(io::ErrorKind::TimedOut.into()))?,
        None => connect.await,
    }
    .map_err(connect_error)?;
    stream.set_nodelay(true).map_err(PostgresError::Io)?;
    let plain = match &endpoint.tls {
        None => stream,
        Some(config) => match request_tls(stream, endpoint.ssl_mode).await? {
            Negotiated::Tls(stream) => {
                return Ok(Box::new(
                    tls::handshake(config.clone(), &endpoint.host, stream).await?,
                ))
            }
            Negotiated::Declined(stream) => {
                tracing::info!(server = %endpoint.addr(), "the server does not offer TLS; connecting unencrypted (sslmode=prefer)");
                stream
            }
        },
    };
    Ok(if endpoint.allow_cleartext_password {
        Box::new(plain)
    } else {
        Box::new(CleartextGuard::new(plain))
    })
}

enum Negotiated {
    Tls(TcpStream),
    /// The server declined and `sslmode=prefer` accepts that.
    Declined(TcpStream),
}

/// Sends SSLRequest; the server answers `S` (go ahead with the handshake) or `N`.
async fn request_tls(mut stream: TcpStream, mode: SslMode) -> Result<Negotiated, PostgresError> {
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    stream
        .write_all(&request)
        .await
        .map_err(PostgresError::Io)?;
    let mut answer = [0u8; 1];
    stream
        .read_exact(&mut answer)
        .await
        .map_err(PostgresError::Io)?;
    match (answer[0], mode) {
        (b'S', _) => Ok(Negotiated::Tls(stream)),
        (b'N', SslMode::Prefer) => Ok(Negotiated::Declined(stream)),
        (b'N', _) => Err(PostgresError::Tls("the server does not accept TLS (ssl = off); use sslmode=disable or prefer, or enable ssl on the server".into())),
        (other, _) => Err(PostgresError::Protocol(format!(
            "answer {other:#04x} to the TLS request"
        ))),
    }
}

/// The server asked for the password in cleartext over an unencrypted connection.
#[derive(Debug, thiserror::Error)]
#[error("the server asked for a cleartext password over an unencrypted connection")]
pub struct CleartextRefused;

/// Whether `err` or one of its sources is the guard's refusal.
pub fn is_cleartext_refusal(err: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(err), |e| e.source()).any(|e| {
        e.is::<CleartextRefused>()
            || e.downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref)
                .is_some_and(|inner| inner.is::<CleartextRefused>())
    })
}

/// Reads the server's messages up to AuthenticationOk and fails on a cleartext password
/// request (AuthenticationCleartextPassword: `R`, length 8, code 3); then passes bytes on.
pub struct CleartextGuard<S> {
    inner: S,
    /// Tag, length and (for `R`) the authentication code of the message being read.
    header: [u8; 9],
    have: usize,
    /// Bytes of the current message's body still to pass.
    skip: usize,
    done: bool,
}

impl<S> CleartextGuard<S> {
    pub fn new(inner: S) -> Self {
        CleartextGuard {
            inner,
            header: [0; 9],
            have: 0,
            skip: 0,
            done: false,
        }
    }

    fn scan(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() && !self.done {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            let len = || {
                u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize
            };
            match self.have {
                5 if self.header[0] != b'R' => {
                    self.skip = len().saturating_sub(4);
                    self.have = 0;
                }
                // Malformed: the protocol layer above reports it.
                5 if len() < 8 => self.done = true,
                9 => {
                    match u32::from_be_bytes([
                        self.header[5],
                        self.header[6],
                        self.header[7],
                        self.header[8],
                    ]) {
                        0 => self.done = true,
                        3 => {
                            return Err(io::Error::new(
                                io::ErrorKind::PermissionDenied,
                                CleartextRefused,
                            ))
                        }
                        _ => self.skip = len() - 8,
                    }
                    self.have = 0;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CleartextGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if !self.done {
            if let Err(refused) = self.scan(&buf.filled()[before..]) {
                buf.set_filled(before);
                return Poll::Ready(Err(refused));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CleartextGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(code: u32, body: &[u8]) -> Vec<u8> {
        let mut message = vec![b'R'];
        message.extend_from_slice(&(8 + body.len() as u32).to_be_bytes());
        message.extend_from_slice(&code.to_be_bytes());
        message.extend_from_slice(body);
        message
    }

    /// Feeds `stream` to a guard in pieces of every size; Err when it refused.
    fn scan_in_pieces(stream: &[u8]) -> Vec<bool> {
        (1..=stream.len())
            .map(|piece| {
                let mut guard = CleartextGuard::new(());
                stream.chunks(piece).all(|chunk| guard.scan(chunk).is_ok())
            })
            .collect()
    }

    #[test]
    fn the_guard_refuses_a_cleartext_request_split_anywhere() {
        // A NegotiateProtocolVersion, then the cleartext request.
        let mut stream = vec![b'v', 0, 0, 0, 10, 0, 0, 0, 0, 0, 0];
        stream.extend(auth(3, b""));
        assert!(scan_in_pieces(&stream).iter().all(|ok| !ok));
    }

    #[test]
    fn the_guard_passes_md5_scram_and_everything_after_ok() {
        let mut stream = auth(5, b"salt");
        stream.extend(auth(10, b"SCRAM-SHA-256\0\0"));
        stream.extend(auth(0, b""));
        // After AuthenticationOk nothing is inspected: not even a (nonsensical) request.
        stream.extend(auth(3, b""));
        assert!(scan_in_pieces(&stream).iter().all(|ok| *ok));
    }
}
