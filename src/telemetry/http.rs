//! The daemon's HTTP endpoints, served on `[daemon] http_listen`:
//! - `GET /metrics`: every metric in the Prometheus text format (version 0.0.4);
//! - `GET /healthz`: 200 while the process answers (a liveness probe);
//! - `GET /readyz`: 200 when every pipeline is snapshotting, streaming or finished, else 503
//!   with one line per pipeline that is not, naming its state and error (a readiness probe);
//! - `GET /status`: a JSON array with each pipeline's [`PipelineStatus`](super::PipelineStatus).
//!
//! Other paths answer 404, other methods 405. Each connection is served on a task of its own
//! (HTTP/1.1, keep-alive); a connection that fails is logged at debug and dropped, an accept
//! that fails (out of file descriptors) is logged and retried after a pause.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{Readiness, Telemetry};

/// The content type of the Prometheus text format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr`; the error names the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} ([daemon] http_listen): {e}"),
        )
    })
}

/// Serves the endpoints until the task is dropped.
pub async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "http endpoint: accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = answer(&telemetry, request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "http endpoint: connection failed");
            }
        });
    }
}

fn answer(telemetry: &Telemetry, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match path {
        "/metrics" => {
            let mut response = text(StatusCode::OK, telemetry.render());
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match telemetry.readiness() {
            Readiness::Ready => text(StatusCode::OK, "ready\n".into()),
            Readiness::NotReady(reasons) => {
                text(StatusCode::SERVICE_UNAVAILABLE, reasons.join("\n") + "\n")
            }
        },
        "/status" => {
            let body =
                serde_json::to_string_pretty(&telemetry.status()).expect("the status serializes");
            let mut response = text(StatusCode::OK, body);
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz, /readyz or /status\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
