//! The `null` sink: acknowledges every batch at once and keeps nothing. For benchmarks of
//! sources and the core, and to drain a source deliberately.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use crate::error::BoxError;
use crate::sink::{delivered, Batch, Delivery, Sink};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullSinkConfig {}

pub struct NullSink;

#[async_trait]
impl Sink for NullSink {
    async fn submit(&mut self, _batch: Arc<Batch>) -> Result<Delivery, BoxError> {
        Ok(delivered())
    }
}
