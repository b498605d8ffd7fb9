//! The replication connection: a walsender session driven with `postgres-protocol` codecs
//! over the stream [`transport::open`] gives (TCP, TLS as `sslmode` says); tokio-postgres
//! cannot speak the replication sub-protocol.
//!
//! It authenticates (cleartext, MD5 or SCRAM-SHA-256, whose server signature must be present
//! and right), runs replication commands with the simple query protocol, and once
//! `START_REPLICATION` answers with CopyBothResponse, carries CopyData both ways. Server
//! errors become [`PostgresError::Server`] with their SQLSTATE.

use bytes::{Buf, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::{PostgresError, ServerError};
use super::transport::{self, ByteStream, Endpoint};

/// Session settings that make text output unambiguous; used by both connections.
pub const SESSION_OPTIONS: &str =
    "-c DateStyle=ISO,MDY -c IntervalStyle=iso_8601 -c TimeZone=UTC -c extra_float_digits=3 -c bytea_output=hex";

/// The longest message accepted from the server (its length field, which counts itself).
/// PostgreSQL builds a message in a buffer of at most 1 GiB (`MaxAllocSize`); a replication
/// message adds a header of 25 bytes. A longer announced length is refused as an error before
/// anything is allocated for it.
pub const MAX_MESSAGE_BYTES: usize = (1 << 30) + 64;

/// How much read buffer is reserved at a time while a long message arrives.
const READ_AHEAD_BYTES: usize = 1 << 20;

/// A message from the server, with CopyData and CopyBothResponse framed here.
pub enum Backend {
    CopyData(Bytes),
    CopyBothResponse,
    Other(backend::Message),
}

pub struct ReplicationConnection {
    stream: Box<dyn ByteStream>,
    read: BytesMut,
    write: BytesMut,
}

/// Rows of a simple query, every value as text.
pub type TextRows = Vec<Vec<Option<String>>>;

impl ReplicationConnection {
    /// Connects and authenticates a `replication=database` session.
    pub async fn connect(endpoint: &Endpoint) -> Result<Self, PostgresError> {
        let stream = transport::open(endpoint).await?;
        let mut conn = ReplicationConnection {
            stream,
            read: BytesMut::with_capacity(64 * 1024),
            write: BytesMut::new(),
        };
        let params = [
            ("user", endpoint.user.as_str()),
            ("database", endpoint.dbname.as_str()),
            ("replication", "database"),
            ("application_name", endpoint.application_name.as_str()),
            ("options", SESSION_OPTIONS),
        ];
        frontend::startup_message(params.iter().copied(), &mut conn.write)
            .map_err(PostgresError::Io)?;
        conn.flush().await?;
        conn.authenticate(endpoint).await?;
        loop {
            match conn.next().await? {
                Backend::Other(backend::Message::ReadyForQuery(_)) => return Ok(conn),
                Backend::Other(backend::Message::ErrorResponse(body)) => {
                    return Err(server_error(&body))
                }
                _ => {}
            }
        }
    }

    async fn authenticate(&mut self, endpoint: &Endpoint) -> Result<(), PostgresError> {
        let password = || {
            endpoint
                .password
                .as_ref()
                .map(|p| p.expose().as_bytes().to_vec())
                .ok_or_else(|| {
                    PostgresError::Auth(format!(
                        "the server wants a password for user {:?} and the url has none",
                        endpoint.user
                    ))
                })
        };
        let mut scram: Option<ScramSha256> = None;
        // Whether the server proved, in SCRAM's server-final message, that it knows the
        // password: a server that skips it may be anyone.
        let mut server_verified = false;
        loop {
            let message = match self.next().await? {
                Backend::Other(message) => message,
                _ => {
                    return Err(PostgresError::Protocol(
                        "copy data during authentication".into(),
                    ))
                }
            };
            match message {
                backend::Message::AuthenticationOk if scram.is_some() && !server_verified => {
                    return Err(PostgresError::Auth("the server accepted the SCRAM login without its final message, so it did not prove it knows the password; refusing a server that may not be the real one".into()))
                }
                backend::Message::AuthenticationOk => return Ok(()),
                backend::Message::AuthenticationCleartextPassword => {
                    frontend::password_message(&password()?, &mut self.write)
                        .map_err(PostgresError::Io)?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        endpoint.user.as_bytes(),
                        &password()?,
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.write)
                        .map_err(PostgresError::Io)?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut offered = false;
                    while let Some(mechanism) = mechanisms.next().map_err(PostgresError::Io)? {
                        offered |= mechanism == SCRAM_SHA_256;
                    }
                    if !offered {
                        return Err(PostgresError::Auth("the server offers no SASL mechanism cdc-bridge supports (SCRAM-SHA-256)".into()));
                    }
                    let client = ScramSha256::new(&password()?, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        SCRAM_SHA_256,
                        client.message(),
                        &mut self.write,
                    )
                    .map_err(PostgresError::Io)?;
                    scram = Some(client);
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let client = scram.as_mut().ok_or_else(|| {
                        PostgresError::Protocol("SASL continue without start".into())
                    })?;
                    client
                        .update(body.data())
                        .map_err(|e| PostgresError::Auth(format!("SCRAM: {e}")))?;
                    frontend::sasl_response(client.message(), &mut self.write)
                        .map_err(PostgresError::Io)?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    let client = scram.as_mut().ok_or_else(|| {
                        PostgresError::Protocol("SASL final without start".into())
                    })?;
                    client
                        .finish(body.data())
                        .map_err(|e| PostgresError::Auth(format!("SCRAM server signature: {e}")))?;
                    server_verified = true;
                    continue;
                }
                backend::Message::ErrorResponse(body) => return Err(server_error(&body)),
                _ => {
                    return Err(PostgresError::Protocol(
                        "unsupported authentication method (use password, md5 or scram-sha-256)"
                            .into(),
                    ))
                }
            }
            self.flush().await?;
        }
    }

    /// Runs one replication command or query; returns its rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<TextRows, PostgresError> {
        frontend::query(sql, &mut self.write).map_err(PostgresError::Io)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.next().await? {
                Backend::Other(backend::Message::DataRow(body)) => rows.push(text_values(&body)?),
                Backend::Other(backend::Message::ErrorResponse(body)) => {
                    error = Some(server_error(&body))
                }
                Backend::Other(backend::Message::ReadyForQuery(_)) => break,
                _ => {}
            }
        }
        error.map_or(Ok(rows), Err)
    }

    /// Sends `START_REPLICATION ...` and waits for the copy-both mode to begin.
    pub async fn start_replication(&mut self, sql: &str) -> Result<(), PostgresError> {
        frontend::query(sql, &mut self.write).map_err(PostgresError::Io)?;
        self.flush().await?;
        loop {
            match self.next().await? {
                Backend::CopyBothResponse => return Ok(()),
                Backend::Other(backend::Message::ErrorResponse(body)) => {
                    let err = server_error(&body);
                    // Drain to ReadyForQuery so the error is the whole story.
                    while !matches!(
                        self.next().await?,
                        Backend::Other(backend::Message::ReadyForQuery(_))
                    ) {}
                    return Err(err);
                }
                _ => {}
            }
        }
    }

    /// The next CopyData payload of the replication stream.
    pub async fn recv_copy_data(&mut self) -> Result<Bytes, PostgresError> {
        loop {
            match self.next().await? {
                Backend::CopyData(data) => return Ok(data),
                Backend::Other(backend::Message::ErrorResponse(body)) => {
                    return Err(server_error(&body))
                }
                Backend::Other(backend::Message::CopyDone) => {
                    return Err(PostgresError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "server ended the replication stream",
                    )))
                }
                _ => {}
            }
        }
    }

    /// Sends one CopyData message (a standby status update).
    pub async fn send_copy_data(&mut self, payload: &[u8]) -> Result<(), PostgresError> {
        frontend::CopyData::new(payload)
            .map_err(PostgresError::Io)?
            .write(&mut self.write);
        self.flush().await
    }

    /// Says goodbye (best effort).
    pub async fn close(mut self) {
        frontend::terminate(&mut self.write);
        let _ = self.flush().await;
    }

    async fn flush(&mut self) -> Result<(), PostgresError> {
        self.stream
            .write_all(&self.write)
            .await
            .map_err(PostgresError::Io)?;
        self.write.clear();
        Ok(())
    }

    async fn next(&mut self) -> Result<Backend, PostgresError> {
        loop {
            let missing = match take_message(&mut self.read)? {
                Framed::Message(message) => return Ok(message),
                Framed::Missing(missing) => missing,
            };
            // Grow with the bytes that arrive, not with the length the peer announced.
            self.read.reserve(missing.min(READ_AHEAD_BYTES));
            let read = self
                .stream
                .read_buf(&mut self.read)
                .await
                .map_err(PostgresError::from_io)?;
            if read == 0 {
                return Err(PostgresError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                )));
            }
        }
    }
}

/// What the start of the read buffer holds.
pub enum Framed {
    Message(Backend),
    /// An incomplete message: this many more bytes are needed (at least 1).
    Missing(usize),
}

/// Takes the first complete backend message off `read` (tag, u32 length counting itself,
/// body). A length under 4 is a protocol error, one over [`MAX_MESSAGE_BYTES`] is refused
/// before anything is allocated for it.
pub fn take_message(read: &mut BytesMut) -> Result<Framed, PostgresError> {
    let Some(header) = read.first_chunk::<5>() else {
        return Ok(Framed::Missing(5 - read.len()));
    };
    let tag = header[0];
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len < 4 {
        return Err(PostgresError::Protocol(format!("message length {len}")));
    }
    if len > MAX_MESSAGE_BYTES {
        return Err(PostgresError::MessageTooLarge {
            tag: char::from(tag),
            len,
            max: MAX_MESSAGE_BYTES,
        });
    }
    if read.len() <= len {
        return Ok(Framed::Missing(len + 1 - read.len()));
    }
    Ok(Framed::Message(match tag {
        b'd' => {
            let mut frame = read.split_to(len + 1);
            frame.advance(5);
            Backend::CopyData(frame.freeze())
        }
        b'W' => {
            read.advance(len + 1);
            Backend::CopyBothResponse
        }
        _ => {
            let message = backend::Message::parse(read).map_err(PostgresError::Io)?;
            Backend::Other(message.ok_or_else(|| PostgresError::Protocol("short message".into()))?)
        }
    }))
}

pub(super) fn text_values(
    body: &backend::DataRowBody,
) -> Result<Vec<Option<String>>, PostgresError> {
    use postgres_protocol::message::backend::DataRowBody;
    let buffer = DataRowBody::buffer(body);
    let mut ranges = body.ranges();
    let mut values = Vec::new();
    while let Some(range) = ranges.next().map_err(PostgresError::Io)? {
        values.push(range.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned()));
    }
    Ok(values)
}

/// Turns an ErrorResponse into a [`PostgresError`]; authentication failures become `Auth`.
pub(super) fn server_error(body: &backend::ErrorResponseBody) -> PostgresError {
    let mut err = ServerError {
        severity: String::new(),
        code: String::new(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    let mut fields = body.fields();
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'V' => err.severity = value,
            b'S' if err.severity.is_empty() => err.severity = value,
            b'C' => err.code = value,
            b'M' => err.message = value,
            b'D' => err.detail = Some(value),
            b'H' => err.hint = Some(value),
            _ => {}
        }
    }
    if err.code.starts_with("28") {
        PostgresError::Auth(err.message)
    } else {
        PostgresError::Server(err)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn over(stream: tokio::io::DuplexStream) -> ReplicationConnection {
        ReplicationConnection {
            stream: Box::new(stream),
            read: BytesMut::new(),
            write: BytesMut::new(),
        }
    }

    #[tokio::test]
    async fn a_length_over_the_maximum_is_an_error_not_an_allocation() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut conn = over(client);
        // CopyData announcing 4 GiB, then silence (the connection stays open).
        server
            .write_all(&[b'd', 0xff, 0xff, 0xff, 0xff, 1, 2, 3])
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), conn.recv_copy_data())
            .await
            .expect("refused at once, without waiting for the announced bytes");
        match answer {
            Err(PostgresError::MessageTooLarge { tag, len, max }) => {
                assert_eq!((tag, len, max), ('d', u32::MAX as usize, MAX_MESSAGE_BYTES));
            }
            Err(other) => panic!("wrong error: {other}"),
            Ok(data) => panic!("accepted {} bytes", data.len()),
        }
        assert!(
            conn.read.capacity() <= READ_AHEAD_BYTES,
            "{} bytes reserved",
            conn.read.capacity()
        );
        drop(server);
    }

    #[tokio::test]
    async fn a_long_message_arriving_in_pieces_is_framed_whole() {
        let (client, mut server) = tokio::io::duplex(4096);
        let mut conn = over(client);
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut message = vec![b'd'];
        message.extend(u32::try_from(payload.len() + 4).unwrap().to_be_bytes());
        message.extend(&payload);
        message.extend([b'c', 0, 0, 0, 4]); // CopyDone
        let writer = tokio::spawn(async move {
            server.write_all(&message).await.unwrap();
            server
        });
        let data = conn.recv_copy_data().await.unwrap();
        assert_eq!(&data[..], &payload[..]);
        let _server = writer.await.unwrap();
        assert!(matches!(
            conn.recv_copy_data().await,
            Err(PostgresError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof
        ));
    }

    #[test]
    fn messages_are_cut_at_their_length() {
        let mut read = BytesMut::new();
        read.extend_from_slice(&[b'd', 0, 0, 0, 7, b'a', b'b', b'c']);
        read.extend_from_slice(&[b'W', 0, 0, 0, 4]);
        read.extend_from_slice(&[b'd', 0]);
        let Framed::Message(Backend::CopyData(data)) = take_message(&mut read).unwrap() else {
            panic!("not copy data")
        };
        assert_eq!(&data[..], b"abc");
        assert!(matches!(
            take_message(&mut read).unwrap(),
            Framed::Message(Backend::CopyBothResponse)
        ));
        assert!(matches!(
            take_message(&mut read).unwrap(),
            Framed::Missing(3)
        ));
        let mut short = BytesMut::from(&[b'd', 0, 0, 0, 3][..]);
        assert!(take_message(&mut short).is_err());
    }
}
