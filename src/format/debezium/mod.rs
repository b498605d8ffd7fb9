//! Debezium's JSON envelope, as Kafka Connect's JSON converter writes it, so that consumers
//! written for Debezium (Kafka Connect sinks, Flink's `debezium-json`, ClickHouse, ...) read
//! cdc-bridge's records unchanged.
//!
//! Value: `{"before":{...},"after":{...},"source":{...},"transaction":null,"op":"c",
//! "ts_ms":...,"ts_us":...,"ts_ns":...}`, `op` one of `c`, `u`, `d`, `r` (snapshot read) and
//! `t` (truncate). Key: the key columns as a struct, `{"id":42}`; none (Kafka's null key) for
//! a row without a primary key and for a truncate. Where several tables share a topic, the key also holds
//! `__dbz__physicalTableIdentifier` (`pipeline.schema.table`), as Debezium's topic router
//! adds it. With `schemas = true` key and value are `{"schema":{...},"payload":{...}}`, the
//! schema a Connect schema with Debezium's logical type names.
//!
//! Flow: per table schema (shared by a table's events until DDL changes it) the column
//! mappings and the key and value schemas are computed once and cached ([`Tables`]); each
//! event then writes its payload through them. A value that does not fit its column's
//! mapping, or a decimal that Connect's `Decimal` cannot carry (NaN), is an
//! [`EncodeError`] naming the column.

mod decimal;
mod mapping;
mod schema;
mod source;
mod table;
mod text_values;
mod values;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde::Deserialize;

pub(crate) use schema::Schema;

use super::{EncodeError, Format};
use crate::envelope::{ChangeEvent, KeyChange};
use table::{KeyPayload, Tables, ValuePayload};

/// The name errors and settings give this format.
const NAME: &str = "debezium";

/// How exact decimals are written, as Debezium's `decimal.handling.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecimalHandling {
    /// Connect's `Decimal` (unscaled bytes), `VariableScaleDecimal` where the column declares
    /// no scale: exact, and what Debezium writes by default.
    #[default]
    Precise,
    /// A JSON number: readable everywhere, rounded beyond 15-17 digits.
    Double,
    /// The decimal's text: exact and readable, but a string.
    String,
}

/// What stands for a value the source did not send (an unchanged TOASTed Postgres column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnavailableValues {
    /// Debezium's `__debezium_unavailable_value` (its bytes for a binary column, a one-element
    /// array for an array); null for columns of other types.
    #[default]
    Placeholder,
    /// The column is left out of `after`.
    Omit,
}

/// The options of `format = { kind = "debezium", ... }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DebeziumOptions {
    /// Write the Connect schema beside each key and value (`schemas.enable` of Kafka
    /// Connect's JSON converter).
    pub schemas: bool,
    pub decimal_handling: DecimalHandling,
    pub unavailable_values: UnavailableValues,
}

/// Debezium's JSON envelope.
pub struct DebeziumFormat {
    options: DebeziumOptions,
    tables: Tables,
}

impl DebeziumFormat {
    pub fn new(options: DebeziumOptions) -> Self {
        DebeziumFormat {
            options,
            tables: Tables::default(),
        }
    }

    fn write(
        &self,
        event: &ChangeEvent,
        out: &mut Vec<u8>,
        schema: Option<&[u8]>,
        payload: impl serde::Serialize,
    ) -> Result<(), EncodeError> {
        if let Some(schema) = schema {
            out.extend_from_slice(b"{\"schema\":");
            out.extend_from_slice(schema);
            out.extend_from_slice(b",\"payload\":");
        }
        serde_json::to_writer(&mut *out, &payload)
            .map_err(|e| EncodeError::new(NAME, event, e.to_string()))?;
        if schema.is_some() {
            out.push(b'}');
        }
        Ok(())
    }

    /// The Connect schema and the JSON payload of `event`'s envelope, for encodings of the
    /// envelope other than JSON (Avro).
    pub(crate) fn envelope(
        &self,
        event: &ChangeEvent,
    ) -> Result<(Arc<Schema>, serde_json::Value), EncodeError> {
        let table = self.tables.of(event, &self.options);
        let payload = ValuePayload {
            event,
            table: &table,
            unavailable: self.options.unavailable_values,
        };
        let payload = serde_json::to_value(payload)
            .map_err(|e| EncodeError::new(NAME, event, e.to_string()))?;
        Ok((table.envelope_connect_schema(event), payload))
    }

    /// The Connect schema of `event`'s envelope alone (cached per table schema).
    pub(crate) fn envelope_schema(&self, event: &ChangeEvent) -> Arc<Schema> {
        self.tables
            .of(event, &self.options)
            .envelope_connect_schema(event)
    }

    /// The Connect schema of `event`'s key alone; `None` for a record without a key.
    pub(crate) fn key_schema(&self, event: &ChangeEvent, with_table: bool) -> Option<Arc<Schema>> {
        (!event.key.is_empty()).then(|| {
            self.tables
                .of(event, &self.options)
                .key_connect_schema(event, with_table)
        })
    }

    /// The Connect schema and the JSON payload of `event`'s key; `None` for a record
    /// without a key.
    pub(crate) fn key(
        &self,
        event: &ChangeEvent,
        with_table: bool,
    ) -> Result<Option<(Arc<Schema>, serde_json::Value)>, EncodeError> {
        if event.key.is_empty() {
            return Ok(None);
        }
        let table = self.tables.of(event, &self.options);
        let payload = KeyPayload {
            event,
            table: &table,
            with_table,
        };
        let payload = serde_json::to_value(payload)
            .map_err(|e| EncodeError::new(NAME, event, e.to_string()))?;
        Ok(Some((table.key_connect_schema(event, with_table), payload)))
    }

    fn write_key(
        &self,
        event: &ChangeEvent,
        out: &mut Vec<u8>,
        with_table: bool,
    ) -> Result<(), EncodeError> {
        if event.key.is_empty() {
            // Debezium's record has no key (`null_key`); where a key must be written anyway
            // (a file line), JSON's null is what the JSON converter reads as none.
            out.extend_from_slice(b"null");
            return Ok(());
        }
        let table = self.tables.of(event, &self.options);
        let schema = self
            .options
            .schemas
            .then(|| table.key_schema(event, with_table));
        let payload = KeyPayload {
            event,
            table: &table,
            with_table,
        };
        self.write(event, out, schema.as_deref(), payload)
    }
}

impl Format for DebeziumFormat {
    fn encode_value(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let table = self.tables.of(event, &self.options);
        let schema = self.options.schemas.then(|| table.value_schema(event));
        let payload = ValuePayload {
            event,
            table: &table,
            unavailable: self.options.unavailable_values,
        };
        self.write(event, out, schema.as_deref(), payload)
    }

    fn encode_key(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.write_key(event, out, false)
    }

    fn encode_table_key(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.write_key(event, out, true)
    }

    fn null_key(&self, event: &ChangeEvent) -> bool {
        event.key.is_empty()
    }

    /// On the delete a key change begins with, `__debezium.newkey` (the key the row moved to);
    /// on the insert that follows, `__debezium.oldkey`: the key struct's JSON, as Kafka
    /// Connect's default header converter writes it.
    fn headers(&self, event: &ChangeEvent) -> Result<Vec<(&'static str, String)>, EncodeError> {
        let (name, key) = match &event.key_change {
            Some(KeyChange::NewKey(key)) => ("__debezium.newkey", key),
            Some(KeyChange::OldKey(key)) => ("__debezium.oldkey", key),
            None => return Ok(Vec::new()),
        };
        let mut other = event.clone();
        other.key = key.clone();
        other.key_change = None;
        let table = self.tables.of(&other, &self.options);
        let payload = KeyPayload {
            event: &other,
            table: &table,
            with_table: false,
        };
        let json = serde_json::to_string(&payload)
            .map_err(|e| EncodeError::new(NAME, event, e.to_string()))?;
        Ok(vec![(name, json)])
    }
}
