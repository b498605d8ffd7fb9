//! The `stdout` sink: one formatted event per line on standard output, flushed before a batch
//! is acknowledged. Errors writing to stdout (a closed pipe) are fatal.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::error::{BoxError, ConnectorError, Disposition};
use crate::format::{format_for, Format, FormatSpec};
use crate::sink::{delivered, Batch, Delivery, Sink};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    #[serde(default)]
    pub format: FormatSpec,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output")]
pub struct StdoutSinkError(#[source] std::io::Error);

impl ConnectorError for StdoutSinkError {
    fn disposition(&self) -> Disposition {
        Disposition::Fatal
    }
}

pub struct StdoutSink {
    format: Box<dyn Format>,
    out: tokio::io::Stdout,
}

impl StdoutSink {
    pub fn new(config: &StdoutSinkConfig) -> Self {
        StdoutSink {
            format: format_for(&config.format),
            out: tokio::io::stdout(),
        }
    }
}

#[async_trait]
impl Sink for StdoutSink {
    async fn submit(&mut self, batch: Arc<Batch>) -> Result<Delivery, BoxError> {
        let mut buf = Vec::with_capacity(batch.events.len() * 256);
        for event in &batch.events {
            self.format.encode_value(event, &mut buf)?;
            buf.push(b'\n');
        }
        self.out.write_all(&buf).await.map_err(StdoutSinkError)?;
        self.out.flush().await.map_err(StdoutSinkError)?;
        Ok(delivered())
    }
}
