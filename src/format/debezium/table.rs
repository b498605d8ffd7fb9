//! What the format knows per table: each column's [`Mapping`], the record names Debezium
//! derives from the table (`pipeline.schema.table.Value`, `.Key`, `.Envelope`), and the key
//! and value schemas, built once per table schema and cached until DDL brings a new one.
//! Events without a table schema (DynamoDB) are mapped by their values, per event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::mapping::Mapping;
use super::schema::Schema;
use super::source::{source_schema, SourceBlock};
use super::values::{Encoded, Placeholder};
use super::{DebeziumOptions, DecimalHandling, UnavailableValues};
use crate::envelope::{ChangeEvent, ColumnName, Op, Row, TableSchema, Value};

/// The key field Debezium's topic router adds when tables share a topic.
const PHYSICAL_TABLE_FIELD: &str = "__dbz__physicalTableIdentifier";

/// How many cached tables prompt dropping those whose schema no event holds any more.
const CACHE_SWEEP_AT: usize = 4096;

/// One table, as this format writes it.
pub struct Table {
    /// The table's schema; `None` for sources without fixed columns.
    schema: Option<Arc<TableSchema>>,
    /// One per column of `schema`.
    mappings: Vec<Mapping>,
    /// For columns no schema describes.
    decimals: DecimalHandling,
    /// `pipeline.namespace.table`: the prefix of the record names, and the key's
    /// physical-table field.
    physical: String,
    /// The pipeline, namespace and table names `physical` was made of.
    names: [Arc<str>; 3],
    value_schema: OnceLock<Arc<[u8]>>,
    key_schemas: [OnceLock<Arc<[u8]>>; 2],
    value_connect: OnceLock<Arc<Schema>>,
    key_connect: [OnceLock<Arc<Schema>>; 2],
}

/// The cache of [`Table`]s, by the address of their table schema.
#[derive(Default)]
pub struct Tables(Mutex<HashMap<usize, Vec<Arc<Table>>>>);

impl Tables {
    /// The table of `event`.
    pub fn of(&self, event: &ChangeEvent, options: &DebeziumOptions) -> Arc<Table> {
        let src = &event.source;
        let Some(schema) = &src.table_schema else {
            return Arc::new(Table::new(event, None, options));
        };
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let address = Arc::as_ptr(schema) as usize;
        if let Some(table) = cache
            .get(&address)
            .and_then(|tables| tables.iter().find(|t| t.is_of(event)))
        {
            return table.clone();
        }
        if cache.len() >= CACHE_SWEEP_AT {
            // Tables whose schema only the cache still holds were replaced by DDL.
            cache.retain(|_, tables| {
                tables.retain(|t| t.schema.as_ref().is_some_and(|s| Arc::strong_count(s) > 1));
                !tables.is_empty()
            });
        }
        let table = Arc::new(Table::new(event, Some(schema.clone()), options));
        cache.entry(address).or_default().push(table.clone());
        table
    }
}

fn to_json(schema: &Schema) -> Arc<[u8]> {
    Arc::from(serde_json::to_vec(schema).expect("a schema always serializes"))
}

fn namespace(event: &ChangeEvent) -> &Arc<str> {
    event
        .source
        .schema
        .as_ref()
        .unwrap_or(&event.source.database)
}

fn physical_name(event: &ChangeEvent) -> String {
    let src = &event.source;
    format!("{}.{}.{}", src.pipeline, namespace(event), src.table)
}

impl Table {
    fn new(
        event: &ChangeEvent,
        schema: Option<Arc<TableSchema>>,
        options: &DebeziumOptions,
    ) -> Self {
        let mappings = schema.as_ref().map_or_else(Vec::new, |schema| {
            schema
                .columns
                .iter()
                .map(|c| {
                    Mapping::for_column(&c.kind, event.source.connector, options.decimal_handling)
                })
                .collect()
        });
        Table {
            schema,
            mappings,
            decimals: options.decimal_handling,
            physical: physical_name(event),
            names: [
                event.source.pipeline.clone(),
                namespace(event).clone(),
                event.source.table.clone(),
            ],
            value_schema: OnceLock::new(),
            key_schemas: [OnceLock::new(), OnceLock::new()],
            value_connect: OnceLock::new(),
            key_connect: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// Whether this is the table of `event` (compared by name, without building one).
    fn is_of(&self, event: &ChangeEvent) -> bool {
        let [pipeline, namespace_name, table] = &self.names;
        **table == *event.source.table
            && **namespace_name == **namespace(event)
            && **pipeline == *event.source.pipeline
    }

    /// The mapping of `column`, near `index` in the column order, if the schema has it.
    fn mapping_of(&self, column: &str, index: usize) -> Option<&Mapping> {
        let schema = self.schema.as_ref()?;
        if schema
            .columns
            .get(index)
            .is_some_and(|c| &*c.name == column)
        {
            return self.mappings.get(index);
        }
        let index = schema.columns.iter().position(|c| &*c.name == column)?;
        self.mappings.get(index)
    }

    /// The key's Connect schema, as JSON; with the physical-table field when `with_table`.
    pub fn key_schema(&self, event: &ChangeEvent, with_table: bool) -> Arc<[u8]> {
        let build = || to_json(&self.key_connect_schema(event, with_table));
        match &self.schema {
            Some(_) => self.key_schemas[usize::from(with_table)]
                .get_or_init(build)
                .clone(),
            None => build(),
        }
    }

    /// The key's Connect schema (built once per table schema).
    pub fn key_connect_schema(&self, event: &ChangeEvent, with_table: bool) -> Arc<Schema> {
        let build = || Arc::new(self.build_key_schema(event, with_table));
        match &self.schema {
            Some(_) => self.key_connect[usize::from(with_table)]
                .get_or_init(build)
                .clone(),
            None => build(),
        }
    }

    fn build_key_schema(&self, event: &ChangeEvent, with_table: bool) -> Schema {
        let mut fields: Vec<Schema> = event
            .key
            .iter()
            .enumerate()
            .map(|(i, (name, value))| self.column_schema(name, i, value, false))
            .collect();
        if with_table {
            fields.push(Schema::new("string", false).named_field(PHYSICAL_TABLE_FIELD));
        }
        Schema::structure(format!("{}.Key", self.physical), fields, false)
    }

    /// The envelope's Connect schema, as JSON.
    pub fn value_schema(&self, event: &ChangeEvent) -> Arc<[u8]> {
        let build = || to_json(&self.envelope_connect_schema(event));
        match &self.schema {
            Some(_) => self.value_schema.get_or_init(build).clone(),
            None => build(),
        }
    }

    /// The envelope's Connect schema (built once per table schema).
    pub fn envelope_connect_schema(&self, event: &ChangeEvent) -> Arc<Schema> {
        let build = || Arc::new(self.build_envelope_schema(event));
        match &self.schema {
            Some(_) => self.value_connect.get_or_init(build).clone(),
            None => build(),
        }
    }

    fn build_envelope_schema(&self, event: &ChangeEvent) -> Schema {
        let row = Schema::structure(
            format!("{}.Value", self.physical),
            self.row_schema(event),
            true,
        );
        let int64 = |name: &'static str| Schema::new("int64", true).named_field(name);
        let transaction = Schema::structure(
            "event.block",
            vec![
                Schema::new("string", false).named_field("id"),
                Schema::new("int64", false).named_field("total_order"),
                Schema::new("int64", false).named_field("data_collection_order"),
            ],
            true,
        )
        .with_version(1)
        .named_field("transaction");
        let fields = vec![
            row.clone().named_field("before"),
            row.named_field("after"),
            source_schema(event.source.connector),
            transaction,
            Schema::new("string", false).named_field("op"),
            int64("ts_ms"),
            int64("ts_us"),
            int64("ts_ns"),
        ];
        Schema::structure(format!("{}.Envelope", self.physical), fields, false).with_version(2)
    }

    /// The fields of the row struct: the table's columns, or without a table schema the
    /// columns of the event's rows (after's, then any only before has). A column outside the
    /// key is optional even when NOT NULL: a before image may lack it (Postgres' `REPLICA
    /// IDENTITY DEFAULT` sends only the key), and it is then null, where Debezium writes a
    /// made-up fallback (0, "").
    fn row_schema(&self, event: &ChangeEvent) -> Vec<Schema> {
        if let Some(schema) = &self.schema {
            return schema
                .columns
                .iter()
                .zip(&self.mappings)
                .map(|(column, mapping)| {
                    mapping
                        .schema(column.nullable || !column.key)
                        .named_field(column.name.clone())
                })
                .collect();
        }
        let mut fields: Vec<Schema> = Vec::new();
        let mut seen: Vec<&ColumnName> = Vec::new();
        for row in [&event.after, &event.before].into_iter().flatten() {
            for (i, (name, value)) in row.iter().enumerate() {
                if !seen.contains(&name) {
                    seen.push(name);
                    fields.push(self.column_schema(name, i, value, true));
                }
            }
        }
        fields
    }

    fn column_schema(
        &self,
        name: &ColumnName,
        index: usize,
        value: &Value,
        optional: bool,
    ) -> Schema {
        let mapping = self
            .mapping_of(name, index)
            .cloned()
            .unwrap_or_else(|| Mapping::for_value(value, self.decimals));
        mapping.schema(optional).named_field(name.clone())
    }
}

/// The payload of a key: its columns, then the physical table when `with_table`.
pub struct KeyPayload<'a> {
    pub event: &'a ChangeEvent,
    pub table: &'a Table,
    pub with_table: bool,
}

impl Serialize for KeyPayload<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (i, (name, value)) in self.event.key.iter().enumerate() {
            write_column(&mut map, self.table, name, i, value)?;
        }
        if self.with_table {
            map.serialize_entry(PHYSICAL_TABLE_FIELD, &self.table.physical)?;
        }
        map.end()
    }
}

/// The payload of the envelope.
pub struct ValuePayload<'a> {
    pub event: &'a ChangeEvent,
    pub table: &'a Table,
    pub unavailable: UnavailableValues,
}

impl Serialize for ValuePayload<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let mut map = s.serialize_map(Some(8))?;
        map.serialize_entry("before", &self.row(&e.before, &[]))?;
        map.serialize_entry("after", &self.row(&e.after, &e.unchanged))?;
        map.serialize_entry("source", &SourceBlock(e))?;
        map.serialize_entry("transaction", &())?;
        map.serialize_entry("op", op_code(e.op))?;
        map.serialize_entry("ts_ms", &e.ts_ms)?;
        map.serialize_entry("ts_us", &e.ts_ms.saturating_mul(1_000))?;
        map.serialize_entry("ts_ns", &e.ts_ms.saturating_mul(1_000_000))?;
        map.end()
    }
}

impl<'a> ValuePayload<'a> {
    fn row(&self, row: &'a Option<Row>, unchanged: &'a [ColumnName]) -> Option<RowPayload<'a>> {
        row.as_ref().map(|row| RowPayload {
            row,
            table: self.table,
            unchanged,
            unavailable: self.unavailable,
        })
    }
}

fn op_code(op: Op) -> &'static str {
    match op {
        Op::Insert => "c",
        Op::Update => "u",
        Op::Delete => "d",
        Op::Snapshot => "r",
        Op::Truncate => "t",
    }
}

/// A row in its table's column order: a column the row lacks is null, or when the source did
/// not send it (`unchanged`) the placeholder or nothing, per `unavailable_values`.
struct RowPayload<'a> {
    row: &'a Row,
    table: &'a Table,
    unchanged: &'a [ColumnName],
    unavailable: UnavailableValues,
}

impl Serialize for RowPayload<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let Some(schema) = &self.table.schema else {
            for (i, (name, value)) in self.row.iter().enumerate() {
                write_column(&mut map, self.table, name, i, value)?;
            }
            return map.end();
        };
        let mut found = 0;
        for (i, (column, mapping)) in schema.columns.iter().zip(&self.table.mappings).enumerate() {
            let value = match self.row.entry(i) {
                Some((name, value)) if *name == column.name => Some(value),
                _ => self.row.get(&column.name),
            };
            if let Some(value) = value {
                found += 1;
                map.serialize_entry(&*column.name, &Encoded { mapping, value })
                    .map_err(|e| named(&column.name, e))?;
            } else if self.unchanged.contains(&column.name) {
                match self.unavailable {
                    UnavailableValues::Omit => {}
                    UnavailableValues::Placeholder if mapping.takes_placeholder() => {
                        map.serialize_entry(&*column.name, &Placeholder(mapping))?;
                    }
                    UnavailableValues::Placeholder => map.serialize_entry(&*column.name, &())?,
                }
            } else {
                map.serialize_entry(&*column.name, &())?;
            }
        }
        if found < self.row.len() {
            // Columns the table schema does not name (it never lags its rows, but a value
            // is never dropped): written by their values' kinds.
            for (i, (name, value)) in self.row.iter().enumerate() {
                if schema.column(name).is_none() {
                    write_column(&mut map, self.table, name, i, value)?;
                }
            }
        }
        map.end()
    }
}

fn write_column<M: SerializeMap>(
    map: &mut M,
    table: &Table,
    name: &ColumnName,
    index: usize,
    value: &Value,
) -> Result<(), M::Error> {
    match table.mapping_of(name, index) {
        Some(mapping) => map
            .serialize_entry(&**name, &Encoded { mapping, value })
            .map_err(|e| named(name, e)),
        None => {
            let mapping = Mapping::for_value(value, table.decimals);
            map.serialize_entry(
                &**name,
                &Encoded {
                    mapping: &mapping,
                    value,
                },
            )
            .map_err(|e| named(name, e))
        }
    }
}

/// A column's value error, prefixed with the column's name (never its value).
fn named<E: serde::ser::Error>(column: &str, err: E) -> E {
    E::custom(format_args!("column {column}: {err}"))
}
