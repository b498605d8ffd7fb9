//! Both connections (walsender and SQL) against a server that misbehaves during
//! authentication, as an impostor would: it skips SCRAM's server-final message, sends a wrong
//! server signature, or asks for the password in cleartext over a plain connection. A tiny
//! TCP server here speaks just enough of the protocol; every well-behaved path is tested
//! against the real PostgreSQL in `tests/postgres_tls.rs`.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::config::PostgresConfig;
use super::error::PostgresError;
use super::server::ReplicationConnection;
use super::transport::Endpoint;

#[derive(Clone, Copy)]
enum Impostor {
    SkipsServerFinal,
    WrongServerSignature,
    AsksForCleartext,
}

const SSL_REQUEST: u32 = 80_877_103;

fn auth(code: u32, body: &[u8]) -> Vec<u8> {
    let mut message = vec![b'R'];
    message.extend_from_slice(&(8 + body.len() as u32).to_be_bytes());
    message.extend_from_slice(&code.to_be_bytes());
    message.extend_from_slice(body);
    message
}

/// Reads one tagged message; None at end of stream.
async fn read_message(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let tag = stream.read_u8().await.ok()?;
    let len = stream.read_u32().await.ok()? as usize;
    let mut body = vec![0; len - 4];
    stream.read_exact(&mut body).await.ok()?;
    Some((tag, body))
}

/// Serves one connection as `impostor`; returns the tags of every message the client sent
/// after the startup message.
async fn serve(listener: TcpListener, impostor: Impostor) -> Vec<u8> {
    let (mut stream, _) = listener.accept().await.unwrap();
    loop {
        let len = stream.read_u32().await.unwrap() as usize;
        let mut body = vec![0; len - 4];
        stream.read_exact(&mut body).await.unwrap();
        if body[..4] == SSL_REQUEST.to_be_bytes() {
            stream.write_all(b"N").await.unwrap();
        } else {
            break;
        }
    }
    let mut tags = Vec::new();
    match impostor {
        Impostor::AsksForCleartext => {
            stream.write_all(&auth(3, b"")).await.unwrap();
            // The answer, if any (a password message), then the impostor hangs up.
            if let Some((tag, _)) = read_message(&mut stream).await {
                tags.push(tag);
            }
            return tags;
        }
        Impostor::SkipsServerFinal | Impostor::WrongServerSignature => {
            stream
                .write_all(&auth(10, b"SCRAM-SHA-256\0\0"))
                .await
                .unwrap();
            let (tag, first) = read_message(&mut stream).await.unwrap();
            tags.push(tag);
            let text = String::from_utf8_lossy(&first).into_owned();
            // The client's nonce follows ",r=" and holds no comma, but may itself hold "r=".
            let nonce = text.split_once(",r=").unwrap().1.to_owned();
            let server_first = format!("r={nonce}impostor,s=c2FsdA==,i=4096");
            stream
                .write_all(&auth(11, server_first.as_bytes()))
                .await
                .unwrap();
            let (tag, _) = read_message(&mut stream).await.unwrap();
            tags.push(tag);
            if let Impostor::WrongServerSignature = impostor {
                let signature = b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
                stream.write_all(&auth(12, signature)).await.unwrap();
            }
            let mut ok = auth(0, b"");
            ok.extend_from_slice(b"Z\0\0\0\x05I");
            stream.write_all(&ok).await.unwrap();
        }
    }
    while let Some((tag, _)) = read_message(&mut stream).await {
        tags.push(tag);
    }
    tags
}

fn config(port: u16) -> PostgresConfig {
    toml::from_str(&format!(
        "url = \"postgres://cdc:secret-pw@127.0.0.1:{port}/app\"\nslot = \"s\"\npublication = \"p\"\ntables = [\"public.t\"]"
    ))
    .unwrap()
}

/// Runs the walsender and then the SQL connection against a fresh impostor each; returns
/// their errors and the message tags each impostor received.
async fn both_connections(impostor: Impostor) -> [(Result<(), PostgresError>, Vec<u8>); 2] {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(serve(listener, impostor));
    let walsender = ReplicationConnection::connect(&Endpoint::new(&config(port)).unwrap())
        .await
        .map(drop);
    let walsender = (walsender, server.await.unwrap());

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(serve(listener, impostor));
    let sql = super::catalog::connect(&config(port)).await.map(drop);
    let sql = (sql, server.await.unwrap());
    [walsender, sql]
}

#[tokio::test]
async fn a_server_that_skips_scram_server_final_is_refused() {
    let [(walsender, _), (sql, _)] = both_connections(Impostor::SkipsServerFinal).await;
    assert!(
        matches!(&walsender, Err(PostgresError::Auth(m)) if m.contains("without its final message")),
        "{walsender:?}"
    );
    assert!(sql.is_err(), "the SQL connection accepted the impostor");
}

#[tokio::test]
async fn a_wrong_scram_server_signature_is_refused() {
    let [(walsender, _), (sql, _)] = both_connections(Impostor::WrongServerSignature).await;
    assert!(
        matches!(&walsender, Err(PostgresError::Auth(m)) if m.contains("SCRAM server signature")),
        "{walsender:?}"
    );
    assert!(sql.is_err(), "the SQL connection accepted the impostor");
}

#[tokio::test]
async fn no_cleartext_password_goes_over_a_plain_connection() {
    for (i, (outcome, tags)) in both_connections(Impostor::AsksForCleartext)
        .await
        .into_iter()
        .enumerate()
    {
        assert!(
            matches!(outcome, Err(PostgresError::CleartextPassword)),
            "connection {i}: {outcome:?}"
        );
        assert!(
            !tags.contains(&b'p'),
            "connection {i} sent a password message: {tags:?}"
        );
    }
}
