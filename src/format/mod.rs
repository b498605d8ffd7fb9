//! Output formats: how a [`ChangeEvent`] becomes the bytes of one record.
//!
//! A format maps out of the envelope and never looks at a connector. Sinks pick one by the
//! `format` setting and call [`Format::encode_value`] per event (and [`Format::encode_key`]
//! where the destination has a separate key, as Kafka does; [`Format::encode_table_key`] where
//! that key space is shared by several tables).

mod json;

use serde::Deserialize;

use crate::envelope::ChangeEvent;

pub use json::JsonFormat;

/// The `format` setting of a sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormatKind {
    /// cdc-bridge's own JSON envelope (see the README).
    #[default]
    Json,
}

/// Turns events into record bytes.
pub trait Format: Send + Sync {
    /// Appends the record value for `event` to `out`.
    fn encode_value(&self, event: &ChangeEvent, out: &mut Vec<u8>);

    /// Appends the record key for `event` (its primary key) to `out`.
    fn encode_key(&self, event: &ChangeEvent, out: &mut Vec<u8>);

    /// Appends a record key that names the event's table as well as its primary key, for
    /// destinations where rows of several tables share one key space (a Kafka topic written
    /// by more than one table).
    fn encode_table_key(&self, event: &ChangeEvent, out: &mut Vec<u8>);
}

/// The format named by a sink's `format` setting.
pub fn format_for(kind: FormatKind) -> Box<dyn Format> {
    match kind {
        FormatKind::Json => Box::new(JsonFormat),
    }
}
