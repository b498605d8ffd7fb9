//! cdc-bridge: change-data-capture from databases to streams.
//!
//! Data flows `source -> bounded channel -> batches -> sink -> acknowledgement -> checkpoint
//! store -> source confirms upstream`. Core modules ([`envelope`], [`format`], [`config`],
//! [`checkpoint`], [`pipeline`], [`source`], [`sink`]) know no connector; connectors
//! ([`sources`], [`sinks`]) depend only on the core; [`daemon`] is the one place that knows
//! them all.

pub mod backoff;
pub mod check;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod coordination;
pub mod daemon;
pub mod envelope;
pub mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod percent;
pub mod pipeline;
pub mod private_fs;
pub mod shutdown;
pub mod sink;
pub mod sinks;
pub mod source;
pub mod sources;
pub mod stores;
pub mod telemetry;
