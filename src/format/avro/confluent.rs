//! `format = { kind = "avro", registry_url = ... }`: Debezium's envelope in Avro, each record
//! in Confluent's wire format (byte 0, the schema's 4-byte id big-endian, the Avro body), its
//! key and value schemas registered with a Confluent-compatible schema registry.
//!
//! Flow: before a sink encodes an event for a destination (a Kafka topic), it awaits
//! [`Format::prepare`], which registers the event's key and value schemas under the subjects
//! the subject-name strategy gives, unless that was done already; encoding then only looks
//! the ids up. A table's schema texts are built once per table schema (a DDL change makes new
//! ones, registered as the subject's next version). Registry errors keep their disposition: an
//! outage is transient (the batch is not acknowledged; the pipeline retries).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::future::BoxFuture;
use serde::Deserialize;

use super::registry::{ConfluentRegistry, RegistryError, RegistrySettings};
use super::AvroEncoder;
use crate::envelope::ChangeEvent;
use crate::error::BoxError;
use crate::format::debezium::{DebeziumOptions, DecimalHandling, UnavailableValues};
use crate::format::{EncodeError, Format};

/// How subjects are named, as Confluent's serializers' `subject.name.strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectNameStrategy {
    /// `<topic>-key` and `<topic>-value` (Confluent's default).
    #[default]
    Topic,
    /// The record's full name (`shop.public.orders.Envelope`).
    Record,
    /// `<topic>-<record's full name>`.
    TopicRecord,
}

/// The options of `format = { kind = "avro", ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvroOptions {
    pub registry: RegistrySettings,
    pub subject_name_strategy: SubjectNameStrategy,
    pub decimal_handling: DecimalHandling,
    pub unavailable_values: UnavailableValues,
}

/// A table's schemas as registered: the value's, the key's, and the key's with the
/// physical-table field (for topics several tables share).
#[derive(Clone)]
struct Texts {
    value: Arc<str>,
    key: Option<Arc<str>>,
    table_key: Option<Arc<str>>,
}

impl Texts {
    fn key(&self, table_in_key: bool) -> Option<&Arc<str>> {
        if table_in_key {
            self.table_key.as_ref()
        } else {
            self.key.as_ref()
        }
    }
}

/// A table by its schema's address and its names.
type TableId = (usize, Arc<str>, Arc<str>, Arc<str>);

pub struct ConfluentAvroFormat {
    options: AvroOptions,
    encoder: AvroEncoder,
    registry: OnceLock<Result<ConfluentRegistry, String>>,
    texts: Mutex<HashMap<TableId, Texts>>,
    /// Schema text -> id.
    ids: Mutex<HashMap<Arc<str>, u32>>,
    /// (subject, schema text) pairs registered.
    registered: Mutex<HashSet<(String, Arc<str>)>>,
}

impl ConfluentAvroFormat {
    pub fn new(options: AvroOptions) -> Self {
        ConfluentAvroFormat {
            encoder: AvroEncoder::new(DebeziumOptions {
                schemas: false,
                decimal_handling: options.decimal_handling,
                unavailable_values: options.unavailable_values,
            }),
            options,
            registry: OnceLock::new(),
            texts: Mutex::new(HashMap::new()),
            ids: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashSet::new()),
        }
    }

    /// The schema texts of `event`'s table (cached per table schema; built per event for
    /// sources without one).
    fn texts(&self, event: &ChangeEvent) -> Texts {
        let src = &event.source;
        let id = src.table_schema.as_ref().map(|schema| {
            (
                Arc::as_ptr(schema) as usize,
                src.pipeline.clone(),
                src.schema.clone().unwrap_or_else(|| src.database.clone()),
                src.table.clone(),
            )
        });
        if let Some(id) = &id {
            if let Some(texts) = lock(&self.texts).get(id) {
                return texts.clone();
            }
        }
        let text = |schema: serde_json::Value| Arc::<str>::from(schema.to_string());
        let texts = Texts {
            value: text(self.encoder.value_schema(event)),
            key: self.encoder.key_schema(event, false).map(text),
            table_key: self.encoder.key_schema(event, true).map(text),
        };
        if let Some(id) = id {
            let mut cache = lock(&self.texts);
            if cache.len() >= 4096 {
                cache.clear();
            }
            cache.insert(id, texts.clone());
        }
        texts
    }

    fn subject(&self, destination: &str, schema: &str, part: &str) -> String {
        let record = || {
            let parsed: serde_json::Value =
                serde_json::from_str(schema).expect("a schema this format wrote");
            match (parsed["namespace"].as_str(), parsed["name"].as_str()) {
                (Some(namespace), Some(name)) => format!("{namespace}.{name}"),
                (None, Some(name)) => name.to_owned(),
                _ => part.to_owned(),
            }
        };
        match self.options.subject_name_strategy {
            SubjectNameStrategy::Topic => format!("{destination}-{part}"),
            SubjectNameStrategy::Record => record(),
            SubjectNameStrategy::TopicRecord => format!("{destination}-{}", record()),
        }
    }

    fn id_of(&self, event: &ChangeEvent, text: &Arc<str>) -> Result<u32, EncodeError> {
        lock(&self.ids).get(text).copied().ok_or_else(|| {
            EncodeError::new(
                "avro",
                event,
                "the table's schema has no registry id (the sink did not prepare it)",
            )
        })
    }

    async fn register(&self, pending: Vec<(String, Arc<str>)>) -> Result<(), BoxError> {
        let registry = self
            .registry
            .get_or_init(|| {
                ConfluentRegistry::new(&self.options.registry).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|reason| RegistryError::Config {
                url: self.options.registry.url.clone(),
                reason: reason.clone(),
            })?;
        for (subject, text) in pending {
            let id = registry.register(&subject, &text).await?;
            tracing::info!(%subject, id, "schema registered");
            lock(&self.ids).insert(text.clone(), id);
            lock(&self.registered).insert((subject, text));
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Confluent's framing: magic byte 0 and the schema id, big-endian.
fn frame(id: u32, out: &mut Vec<u8>) {
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
}

impl Format for ConfluentAvroFormat {
    fn encode_value(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let texts = self.texts(event);
        frame(self.id_of(event, &texts.value)?, out);
        self.encoder.encode_value(event, out)
    }

    fn encode_key(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.key(event, false, out)
    }

    fn encode_table_key(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.key(event, true, out)
    }

    fn null_key(&self, event: &ChangeEvent) -> bool {
        event.key.is_empty()
    }

    fn prepare<'a>(
        &'a self,
        event: &'a ChangeEvent,
        destination: &'a str,
        table_in_key: bool,
    ) -> Option<BoxFuture<'a, Result<(), BoxError>>> {
        let texts = self.texts(event);
        let mut wanted = vec![(
            self.subject(destination, &texts.value, "value"),
            texts.value.clone(),
        )];
        if let Some(key) = texts.key(table_in_key) {
            wanted.push((self.subject(destination, key, "key"), key.clone()));
        }
        let registered = lock(&self.registered);
        let pending: Vec<(String, Arc<str>)> = wanted
            .into_iter()
            .filter(|pair| !registered.contains(pair))
            .collect();
        drop(registered);
        (!pending.is_empty()).then(|| Box::pin(self.register(pending)) as BoxFuture<'a, _>)
    }
}

impl ConfluentAvroFormat {
    fn key(
        &self,
        event: &ChangeEvent,
        table_in_key: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let texts = self.texts(event);
        let Some(text) = texts.key(table_in_key) else {
            return Ok(());
        };
        let start = out.len();
        frame(self.id_of(event, text)?, out);
        if !self.encoder.encode_key(event, table_in_key, out)? {
            out.truncate(start);
        }
        Ok(())
    }
}
