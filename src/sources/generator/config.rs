//! `kind = "generator"` settings.

use std::num::{NonZeroU32, NonZeroU64};

use serde::Deserialize;

pub const DEFAULT_KEYS: u64 = 1000;
pub const DEFAULT_TABLE: &str = "items";
pub const DEFAULT_DATABASE: &str = "generator";
pub const DEFAULT_PAYLOAD_BYTES: usize = 32;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Rows to generate in all (across restarts); absent: without end.
    #[serde(default)]
    pub count: Option<u64>,
    /// Rows per second at most; absent: as fast as the sink takes them.
    #[serde(default)]
    pub rate_per_sec: Option<NonZeroU32>,
    /// Distinct primary keys; row `seq` has key `(seq - 1) % keys + 1`.
    #[serde(default = "default_keys")]
    pub keys: NonZeroU64,
    #[serde(default = "default_table")]
    pub table: String,
    #[serde(default = "default_database")]
    pub database: String,
    /// Size of the `payload` text column of every row.
    #[serde(default = "default_payload_bytes")]
    pub payload_bytes: usize,
}

fn default_keys() -> NonZeroU64 {
    NonZeroU64::new(DEFAULT_KEYS).expect("nonzero")
}

fn default_table() -> String {
    DEFAULT_TABLE.to_owned()
}

fn default_database() -> String {
    DEFAULT_DATABASE.to_owned()
}

fn default_payload_bytes() -> usize {
    DEFAULT_PAYLOAD_BYTES
}
