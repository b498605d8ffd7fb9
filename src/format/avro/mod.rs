//! Avro encoding of Debezium's envelope: the Avro schemas Debezium's Avro converter would
//! register for a table's key and value, and each record's Avro binary body.
//!
//! Flow: the Debezium format gives the event's Connect schema and its JSON payload
//! ([`DebeziumFormat::envelope`]); [`schema`] turns the Connect schema into the Avro schema
//! (Confluent's `AvroData` rules), and [`binary`] writes the payload along the same schema.
//! [`RegistryAvroFormat`] registers the schemas with a Confluent-compatible registry
//! ([`confluent`]) or the AWS Glue Schema Registry ([`glue`]) and frames each record with its
//! schema's id (`format = { kind = "avro", ... }`). An error names the field whose value the
//! schema cannot carry.

mod binary;
mod confluent;
mod glue;
mod registered;
mod schema;

#[cfg(test)]
mod tests;

use serde_json::Value;

use super::debezium::{DebeziumFormat, DebeziumOptions};
use super::EncodeError;
use crate::envelope::ChangeEvent;

pub use confluent::{ConfluentError, ConfluentRegistry, ConfluentSettings};
pub use glue::{GlueCompatibility, GlueCompression, GlueError, GlueRegistry, GlueSettings};
pub use registered::{AvroOptions, RegistryAvroFormat, RegistrySettings, SubjectNameStrategy};
pub use schema::avro_name;

const NAME: &str = "avro";

/// Debezium's envelope in Avro.
pub struct AvroEncoder {
    debezium: DebeziumFormat,
}

impl AvroEncoder {
    /// An encoder of Debezium's envelope with `options` (`schemas` has no effect: Avro
    /// records always have their schema, through the registry).
    pub fn new(options: DebeziumOptions) -> Self {
        AvroEncoder {
            debezium: DebeziumFormat::new(options),
        }
    }

    /// The Avro schema of `event`'s value (its table's envelope).
    pub fn value_schema(&self, event: &ChangeEvent) -> Value {
        schema::avro_schema(&self.debezium.envelope_schema(event))
    }

    /// The Avro schema of `event`'s key; `None` when the record has no key.
    pub fn key_schema(&self, event: &ChangeEvent, with_table: bool) -> Option<Value> {
        self.debezium
            .key_schema(event, with_table)
            .map(|schema| schema::avro_schema(&schema))
    }

    /// Appends the Avro binary body of `event`'s value.
    pub fn encode_value(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let (schema, payload) = self.debezium.envelope(event)?;
        binary::write(&schema, &payload, out)
            .map_err(|reason| EncodeError::new(NAME, event, reason))
    }

    /// Appends the Avro binary body of `event`'s key; false (nothing appended) when the
    /// record has no key.
    pub fn encode_key(
        &self,
        event: &ChangeEvent,
        with_table: bool,
        out: &mut Vec<u8>,
    ) -> Result<bool, EncodeError> {
        let Some((schema, payload)) = self.debezium.key(event, with_table)? else {
            return Ok(false);
        };
        binary::write(&schema, &payload, out)
            .map_err(|reason| EncodeError::new(NAME, event, reason))?;
        Ok(true)
    }
}
