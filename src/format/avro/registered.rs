//! `format = { kind = "avro", ... }`: Debezium's envelope in Avro, each record framed for
//! its schema registry, its key and value schemas registered there.
//!
//! - `registry = "confluent"` (the default): a Confluent-compatible registry; records in
//!   Confluent's wire format (byte 0, the schema's 4-byte id big-endian, the Avro body).
//! - `registry = "glue"`: the AWS Glue Schema Registry; records in Glue's wire format (byte 3,
//!   the compression byte, the schema version's 16-byte UUID, the Avro body, zlib-compressed
//!   when `compression = "zlib"`).
//!
//! Flow: before a sink encodes an event for a destination (a Kafka topic, a Kinesis stream),
//! it awaits [`Format::prepare`], which registers the event's key and value schemas under the
//! names the subject-name strategy gives, unless that was done already; encoding then only
//! looks the ids up. A table's schema texts are built once per table schema (a DDL change
//! makes new ones, registered as the subject's next version). Registry errors keep their
//! disposition: an outage is transient (the batch is not acknowledged; the pipeline retries).

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::confluent::{ConfluentRegistry, ConfluentSettings};
use super::glue::{GlueCompression, GlueRegistry, GlueSettings};
use super::AvroEncoder;
use crate::check::Finding;
use crate::envelope::{ChangeEvent, TableSchema};
use crate::error::BoxError;
use crate::format::debezium::{DebeziumOptions, DecimalHandling, UnavailableValues};
use crate::format::{EncodeError, Format};

/// How subjects (Glue: schema names) are named, as Confluent's serializers'
/// `subject.name.strategy`.
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

/// Which schema registry, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrySettings {
    Confluent(ConfluentSettings),
    Glue(GlueSettings),
}

/// The options of `format = { kind = "avro", ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvroOptions {
    pub registry: RegistrySettings,
    pub subject_name_strategy: SubjectNameStrategy,
    pub decimal_handling: DecimalHandling,
    pub unavailable_values: UnavailableValues,
}

/// A connected registry.
enum Client {
    Confluent(ConfluentRegistry),
    Glue(GlueRegistry),
}

impl Client {
    async fn connect(settings: &RegistrySettings) -> Result<Client, BoxError> {
        Ok(match settings {
            RegistrySettings::Confluent(settings) => {
                Client::Confluent(ConfluentRegistry::new(settings)?)
            }
            RegistrySettings::Glue(settings) => {
                Client::Glue(GlueRegistry::connect(settings).await?)
            }
        })
    }

    async fn register(&self, subject: &str, schema: &str) -> Result<SchemaId, BoxError> {
        Ok(match self {
            Client::Confluent(registry) => {
                SchemaId::Confluent(registry.register(subject, schema).await?)
            }
            Client::Glue(registry) => SchemaId::Glue(registry.register(subject, schema).await?),
        })
    }
}

/// What a record's framing names its schema by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemaId {
    Confluent(u32),
    /// A Glue schema version's UUID.
    Glue([u8; 16]),
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

pub struct RegistryAvroFormat {
    options: AvroOptions,
    encoder: AvroEncoder,
    client: OnceCell<Client>,
    /// Each with the table schema it was built from: held, so that its address (part of
    /// the key) is not reused by another schema while the entry lives.
    texts: Mutex<HashMap<TableId, (Arc<TableSchema>, Texts)>>,
    /// Schema text -> id.
    ids: Mutex<HashMap<Arc<str>, SchemaId>>,
    /// (subject, schema text) pairs registered.
    registered: Mutex<HashSet<(String, Arc<str>)>>,
}

impl RegistryAvroFormat {
    pub fn new(options: AvroOptions) -> Self {
        RegistryAvroFormat {
            encoder: AvroEncoder::new(DebeziumOptions {
                schemas: false,
                decimal_handling: options.decimal_handling,
                unavailable_values: options.unavailable_values,
            }),
            options,
            client: OnceCell::new(),
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
            if let Some((_, texts)) = lock(&self.texts).get(id) {
                return texts.clone();
            }
        }
        let text = |schema: serde_json::Value| Arc::<str>::from(schema.to_string());
        let texts = Texts {
            value: text(self.encoder.value_schema(event)),
            key: self.encoder.key_schema(event, false).map(text),
            table_key: self.encoder.key_schema(event, true).map(text),
        };
        if let (Some(id), Some(schema)) = (id, &src.table_schema) {
            let mut cache = lock(&self.texts);
            if cache.len() >= 4096 {
                cache.clear();
            }
            cache.insert(id, (schema.clone(), texts.clone()));
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

    fn id_of(&self, event: &ChangeEvent, text: &Arc<str>) -> Result<SchemaId, EncodeError> {
        lock(&self.ids).get(text).copied().ok_or_else(|| {
            EncodeError::new(
                "avro",
                event,
                "the table's schema has no registry id (the sink did not prepare it)",
            )
        })
    }

    async fn register(&self, pending: Vec<(String, Arc<str>)>) -> Result<(), BoxError> {
        let client = self
            .client
            .get_or_try_init(|| Client::connect(&self.options.registry))
            .await?;
        for (subject, text) in pending {
            let id = client.register(&subject, &text).await?;
            tracing::info!(%subject, ?id, "schema registered");
            lock(&self.ids).insert(text.clone(), id);
            lock(&self.registered).insert((subject, text));
        }
        Ok(())
    }

    /// Appends the record's framing for schema `id` and the body `body` writes (false: there
    /// is no record, and nothing stays appended).
    fn framed(
        &self,
        id: SchemaId,
        out: &mut Vec<u8>,
        body: impl FnOnce(&mut Vec<u8>) -> Result<bool, EncodeError>,
    ) -> Result<bool, EncodeError> {
        let start = out.len();
        let written = match id {
            SchemaId::Confluent(id) => {
                out.push(0);
                out.extend_from_slice(&id.to_be_bytes());
                body(out)?
            }
            SchemaId::Glue(uuid) => match self.glue_compression() {
                GlueCompression::None => {
                    out.extend_from_slice(&[GLUE_HEADER_VERSION, 0]);
                    out.extend_from_slice(&uuid);
                    body(out)?
                }
                GlueCompression::Zlib => {
                    out.extend_from_slice(&[GLUE_HEADER_VERSION, GLUE_ZLIB]);
                    out.extend_from_slice(&uuid);
                    let mut plain = Vec::with_capacity(256);
                    let written = body(&mut plain)?;
                    let mut zlib = flate2::write::ZlibEncoder::new(
                        std::mem::take(out),
                        flate2::Compression::default(),
                    );
                    zlib.write_all(&plain).expect("writing to a Vec");
                    *out = zlib.finish().expect("writing to a Vec");
                    written
                }
            },
        };
        if !written {
            out.truncate(start);
        }
        Ok(written)
    }

    fn glue_compression(&self) -> GlueCompression {
        match &self.options.registry {
            RegistrySettings::Glue(glue) => glue.compression,
            RegistrySettings::Confluent(_) => GlueCompression::None,
        }
    }
}

/// Glue's framing: the header version byte, and the compression byte of a zlib body.
const GLUE_HEADER_VERSION: u8 = 3;
const GLUE_ZLIB: u8 = 5;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Format for RegistryAvroFormat {
    fn encode_value(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let texts = self.texts(event);
        let id = self.id_of(event, &texts.value)?;
        self.framed(id, out, |out| {
            self.encoder.encode_value(event, out).map(|()| true)
        })
        .map(drop)
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

    fn check(&self) -> BoxFuture<'_, Vec<Finding>> {
        Box::pin(async move {
            let checked = match &self.options.registry {
                RegistrySettings::Confluent(settings) => check_confluent(settings).await,
                RegistrySettings::Glue(settings) => check_glue(settings).await,
            };
            vec![checked.unwrap_or_else(|err| Finding::fail(crate::error::report(&err)))]
        })
    }
}

const REGISTER_LATER: &str =
    "whether the credentials may register schemas shows at the first record of a new table schema";

async fn check_confluent(settings: &ConfluentSettings) -> Result<Finding, BoxError> {
    let subjects = ConfluentRegistry::new(settings)?.describe().await?;
    Ok(Finding::ok(format!(
        "schema registry {} answers and accepts the credentials ({subjects} subjects); {REGISTER_LATER}",
        settings.url
    )))
}

async fn check_glue(settings: &GlueSettings) -> Result<Finding, BoxError> {
    GlueRegistry::connect(settings)
        .await?
        .describe_registry()
        .await?;
    Ok(Finding::ok(format!(
        "AWS Glue Schema Registry {} exists and the credentials can read it; {REGISTER_LATER}",
        settings.registry_name
    )))
}

impl RegistryAvroFormat {
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
        let id = self.id_of(event, text)?;
        self.framed(id, out, |out| {
            self.encoder.encode_key(event, table_in_key, out)
        })
        .map(drop)
    }
}
