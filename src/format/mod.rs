//! Output formats: how a [`ChangeEvent`] becomes the bytes of one record.
//!
//! A format maps out of the envelope and never looks at a connector. A sink reads its
//! `format` setting as a [`FormatSpec`], builds the format once with [`format_for`], and calls
//! [`Format::encode_value`] per event (and [`Format::encode_key`] where the destination has a
//! separate key, as Kafka does; [`Format::encode_table_key`] where that key space is shared by
//! several tables).
//!
//! Encoding is fallible: a value the format cannot represent is an [`EncodeError`], a data
//! error naming the table and the position of the event, so the pipeline stops on that record
//! instead of writing something else in its place.

pub mod avro;
mod debezium;
mod dms;
#[cfg(test)]
mod fixtures;
mod json;

use std::fmt;

use serde::de::{self, value::MapAccessDeserializer, IntoDeserializer};
use serde::{Deserialize, Deserializer};

use std::path::PathBuf;

use futures_util::future::BoxFuture;

use crate::check::Finding;
use crate::config::Secret;
use crate::envelope::ChangeEvent;
use crate::error::{BoxError, ConnectorError, Disposition};

pub use avro::{
    AvroOptions, ConfluentSettings, GlueCompatibility, GlueCompression, GlueSettings,
    RegistryAvroFormat, RegistrySettings, SubjectNameStrategy,
};
pub use debezium::{DebeziumFormat, DebeziumOptions, DecimalHandling, UnavailableValues};
pub use dms::{BeforeImage, DmsFormat, DmsOptions, PartitionKeyType};
pub use json::JsonFormat;

/// The `format` setting of a sink: a format's name, with every option at its default
/// (`format = "json"`), or a table naming the format by `kind` beside its options
/// (`format = { kind = "json" }`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FormatSpec {
    /// cdc-bridge's own JSON envelope (see the README). It has no options.
    #[default]
    Json,
    /// Debezium's envelope, as Kafka Connect's JSON converter writes it.
    Debezium(DebeziumOptions),
    /// AWS DMS's record for Kinesis and Kafka targets.
    Dms(DmsOptions),
    /// Debezium's envelope in Avro, framed for a Confluent-compatible schema registry or the
    /// AWS Glue Schema Registry.
    Avro(AvroOptions),
}

impl FormatSpec {
    /// The format's name, as the `kind` of the setting spells it.
    pub fn name(&self) -> &'static str {
        match self {
            FormatSpec::Json => "json",
            FormatSpec::Debezium(_) => "debezium",
            FormatSpec::Dms(_) => "dms",
            FormatSpec::Avro(_) => "avro",
        }
    }
}

/// The table form of the setting; the plain name is read as `{ kind = name }`.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum FormatTable {
    Json {},
    Debezium {
        #[serde(default)]
        schemas: bool,
        #[serde(default)]
        decimal_handling: DecimalHandling,
        #[serde(default)]
        unavailable_values: UnavailableValues,
    },
    Dms {
        #[serde(default)]
        partition_key_type: PartitionKeyType,
        #[serde(default)]
        partition_include_schema_table: bool,
        #[serde(default)]
        include_partition_value: bool,
        #[serde(default)]
        include_transaction_details: bool,
        #[serde(default)]
        before_image: BeforeImage,
        before_image_field: Option<String>,
        #[serde(default)]
        no_hex_prefix: bool,
    },
    Avro {
        #[serde(default)]
        registry: RegistryKind,
        registry_url: Option<String>,
        registry_username: Option<String>,
        registry_password: Option<Secret>,
        registry_ca: Option<PathBuf>,
        registry_name: Option<String>,
        region: Option<String>,
        endpoint_url: Option<String>,
        compression: Option<GlueCompression>,
        compatibility: Option<GlueCompatibility>,
        #[serde(default)]
        subject_name_strategy: SubjectNameStrategy,
        #[serde(default)]
        decimal_handling: DecimalHandling,
        #[serde(default)]
        unavailable_values: UnavailableValues,
    },
}

/// The `registry` option of the Avro format.
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RegistryKind {
    #[default]
    Confluent,
    Glue,
}

/// The Glue registry AWS's own serializers use when none is named.
const GLUE_DEFAULT_REGISTRY: &str = "default-registry";

impl TryFrom<FormatTable> for FormatSpec {
    type Error = String;

    fn try_from(table: FormatTable) -> Result<Self, String> {
        Ok(match table {
            FormatTable::Json {} => FormatSpec::Json,
            FormatTable::Debezium {
                schemas,
                decimal_handling,
                unavailable_values,
            } => FormatSpec::Debezium(DebeziumOptions {
                schemas,
                decimal_handling,
                unavailable_values,
            }),
            FormatTable::Dms {
                partition_key_type,
                partition_include_schema_table,
                include_partition_value,
                include_transaction_details,
                before_image,
                before_image_field,
                no_hex_prefix,
            } => FormatSpec::Dms(DmsOptions {
                partition_key_type,
                partition_include_schema_table,
                include_partition_value,
                include_transaction_details,
                before_image,
                before_image_field: before_image_field
                    .unwrap_or_else(|| DmsOptions::default().before_image_field),
                no_hex_prefix,
            }),
            FormatTable::Avro {
                registry,
                registry_url,
                registry_username,
                registry_password,
                registry_ca,
                registry_name,
                region,
                endpoint_url,
                compression,
                compatibility,
                subject_name_strategy,
                decimal_handling,
                unavailable_values,
            } => {
                let registry = match registry {
                    RegistryKind::Confluent => {
                        let glue_only = [
                            ("registry_name", registry_name.is_some()),
                            ("region", region.is_some()),
                            ("endpoint_url", endpoint_url.is_some()),
                            ("compression", compression.is_some()),
                            ("compatibility", compatibility.is_some()),
                        ];
                        if let Some((name, _)) = glue_only.iter().find(|(_, set)| *set) {
                            return Err(format!("{name} is an option of registry = \"glue\"; a Confluent-compatible registry (the default) takes registry_url, registry_username, registry_password and registry_ca"));
                        }
                        RegistrySettings::Confluent(ConfluentSettings {
                            url: registry_url.ok_or(
                                "missing field `registry_url` (the Confluent-compatible schema registry's URL; registry = \"glue\" for the AWS Glue Schema Registry)",
                            )?,
                            username: registry_username,
                            password: registry_password,
                            ca: registry_ca,
                        })
                    }
                    RegistryKind::Glue => {
                        let confluent_only = [
                            ("registry_url", registry_url.is_some()),
                            ("registry_username", registry_username.is_some()),
                            ("registry_password", registry_password.is_some()),
                            ("registry_ca", registry_ca.is_some()),
                        ];
                        if let Some((name, _)) = confluent_only.iter().find(|(_, set)| *set) {
                            return Err(format!("{name} is an option of a Confluent-compatible registry; registry = \"glue\" takes registry_name, region, endpoint_url, compression and compatibility, and the AWS credential chain"));
                        }
                        let registry_name =
                            registry_name.unwrap_or_else(|| GLUE_DEFAULT_REGISTRY.to_owned());
                        if !glue_name_is_valid(&registry_name) {
                            return Err(format!("registry_name {registry_name:?}: a Glue registry name has 1 to 255 letters, digits and -_$#."));
                        }
                        RegistrySettings::Glue(GlueSettings {
                            registry_name,
                            region,
                            endpoint_url,
                            compression: compression.unwrap_or_default(),
                            compatibility: compatibility.unwrap_or_default(),
                        })
                    }
                };
                FormatSpec::Avro(AvroOptions {
                    registry,
                    subject_name_strategy,
                    decimal_handling,
                    unavailable_values,
                })
            }
        })
    }
}

fn glue_name_is_valid(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_$#.".contains(&b))
}

impl<'de> Deserialize<'de> for FormatSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = FormatSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a format name (\"json\", \"debezium\", \"dms\", \"avro\") or a table with `kind` and the format's options",
                )
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<FormatSpec, E> {
                let table = de::value::MapDeserializer::new(std::iter::once((
                    "kind",
                    name.into_deserializer(),
                )));
                FormatTable::deserialize(table)
                    .and_then(|table| FormatSpec::try_from(table).map_err(E::custom))
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<FormatSpec, A::Error> {
                FormatTable::deserialize(MapAccessDeserializer::new(map))
                    .and_then(|table| FormatSpec::try_from(table).map_err(de::Error::custom))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// An event the format cannot represent: a data error at the event's table and position.
/// The reason names the column and what about its value does not fit, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the {format} format cannot encode the {op} of table {table} at position {position}: {reason}"
)]
pub struct EncodeError {
    pub format: &'static str,
    pub op: &'static str,
    pub table: String,
    pub position: String,
    pub reason: String,
}

impl EncodeError {
    pub fn new(format: &'static str, event: &ChangeEvent, reason: impl Into<String>) -> Self {
        EncodeError {
            format,
            op: event.op.as_str(),
            table: event.qualified_table(),
            position: event.source.position.to_string(),
            reason: reason.into(),
        }
    }
}

impl ConnectorError for EncodeError {
    fn disposition(&self) -> Disposition {
        Disposition::Data
    }
}

/// Turns events into record bytes. On an error, what was appended to `out` is unspecified:
/// the caller truncates it back.
pub trait Format: Send + Sync {
    /// Appends the record value for `event` to `out`.
    fn encode_value(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError>;

    /// Appends the record key for `event` (its primary key) to `out`.
    fn encode_key(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError>;

    /// Appends a record key that names the event's table as well as its primary key, for
    /// destinations where rows of several tables share one key space (a Kafka topic written
    /// by more than one table).
    fn encode_table_key(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError>;

    /// Whether the record of `event` has no key at all (Kafka's null key) rather than an
    /// encoded one: Debezium's records of rows without a primary key, and of truncates.
    fn null_key(&self, _event: &ChangeEvent) -> bool {
        false
    }

    /// Record headers this format adds for `event` where the destination has headers (Kafka),
    /// beside cdc-bridge's own: Debezium's `__debezium.oldkey` / `__debezium.newkey` on the two
    /// events of a key change.
    fn headers(&self, _event: &ChangeEvent) -> Result<Vec<(&'static str, String)>, EncodeError> {
        Ok(Vec::new())
    }

    /// What must happen, asynchronously, before `event` can be encoded for `destination` (a
    /// Kafka topic): registering its table's schemas with a schema registry (the Avro
    /// format). `None`, decided without waiting, when there is nothing to do, as for every
    /// format without a registry. `table_in_key`: the key is [`Format::encode_table_key`]'s.
    fn prepare<'a>(
        &'a self,
        _event: &'a ChangeEvent,
        _destination: &'a str,
        _table_in_key: bool,
    ) -> Option<BoxFuture<'a, Result<(), BoxError>>> {
        None
    }

    /// What `cdc-bridge check` verifies of the format itself: that its schema registry
    /// answers and accepts the credentials. Nothing for formats without one.
    fn check(&self) -> BoxFuture<'_, Vec<Finding>> {
        Box::pin(async { Vec::new() })
    }
}

/// The format a sink's `format` setting names, with its options.
pub fn format_for(spec: &FormatSpec) -> Box<dyn Format> {
    match spec {
        FormatSpec::Json => Box::new(JsonFormat),
        FormatSpec::Debezium(options) => Box::new(DebeziumFormat::new(*options)),
        FormatSpec::Dms(options) => Box::new(DmsFormat::new(options.clone())),
        FormatSpec::Avro(options) => Box::new(RegistryAvroFormat::new(options.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sink {
        #[serde(default)]
        format: FormatSpec,
    }

    fn parse(toml: &str) -> Result<FormatSpec, String> {
        toml::from_str::<Sink>(toml)
            .map(|sink| sink.format)
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn a_format_is_a_name_or_a_table_with_its_kind() {
        assert_eq!(parse(""), Ok(FormatSpec::Json), "json by default");
        assert_eq!(parse(r#"format = "json""#), Ok(FormatSpec::Json));
        assert_eq!(parse(r#"format = { kind = "json" }"#), Ok(FormatSpec::Json));
        let defaults = FormatSpec::Debezium(DebeziumOptions::default());
        assert_eq!(parse(r#"format = "debezium""#), Ok(defaults.clone()));
        assert_eq!(parse(r#"format = { kind = "debezium" }"#), Ok(defaults));
        assert_eq!(
            parse(
                r#"format = { kind = "debezium", schemas = true, decimal_handling = "string", unavailable_values = "omit" }"#
            ),
            Ok(FormatSpec::Debezium(DebeziumOptions {
                schemas: true,
                decimal_handling: DecimalHandling::String,
                unavailable_values: UnavailableValues::Omit,
            }))
        );
        assert_eq!(
            parse(r#"format = "dms""#),
            Ok(FormatSpec::Dms(DmsOptions::default()))
        );
        assert_eq!(
            parse(
                r#"format = { kind = "dms", partition_key_type = "schema-table", before_image = "pk-only", before_image_field = "BI" }"#
            ),
            Ok(FormatSpec::Dms(DmsOptions {
                partition_key_type: PartitionKeyType::SchemaTable,
                before_image: BeforeImage::PkOnly,
                before_image_field: "BI".to_owned(),
                ..DmsOptions::default()
            }))
        );
    }

    #[test]
    fn avro_takes_the_options_of_its_registry_and_refuses_the_others() {
        let FormatSpec::Avro(confluent) =
            parse(r#"format = { kind = "avro", registry_url = "http://r:8081" }"#).unwrap()
        else {
            panic!("not avro");
        };
        assert!(
            matches!(confluent.registry, RegistrySettings::Confluent(ref c) if c.url == "http://r:8081")
        );
        assert_eq!(
            parse(r#"format = { kind = "avro", registry = "glue" }"#),
            Ok(FormatSpec::Avro(AvroOptions {
                registry: RegistrySettings::Glue(GlueSettings {
                    registry_name: "default-registry".into(),
                    region: None,
                    endpoint_url: None,
                    compression: GlueCompression::None,
                    compatibility: GlueCompatibility::Backward,
                }),
                subject_name_strategy: SubjectNameStrategy::Topic,
                decimal_handling: DecimalHandling::Precise,
                unavailable_values: UnavailableValues::Placeholder,
            }))
        );
        let glue = parse(
            r#"format = { kind = "avro", registry = "glue", registry_name = "cdc", region = "eu-west-1", compression = "zlib", compatibility = "full_all" }"#,
        )
        .unwrap();
        let FormatSpec::Avro(AvroOptions {
            registry: RegistrySettings::Glue(glue),
            ..
        }) = glue
        else {
            panic!("not glue");
        };
        assert_eq!(
            (
                glue.registry_name.as_str(),
                glue.region.as_deref(),
                glue.compression,
                glue.compatibility
            ),
            (
                "cdc",
                Some("eu-west-1"),
                GlueCompression::Zlib,
                GlueCompatibility::FullAll
            )
        );
        let missing = parse(r#"format = { kind = "avro" }"#).unwrap_err();
        assert!(
            missing.contains("missing field `registry_url`"),
            "{missing}"
        );
        let mixed = parse(r#"format = { kind = "avro", registry_url = "http://r", region = "x" }"#)
            .unwrap_err();
        assert!(
            mixed.starts_with("region is an option of registry = \"glue\""),
            "{mixed}"
        );
        let mixed =
            parse(r#"format = { kind = "avro", registry = "glue", registry_url = "http://r" }"#)
                .unwrap_err();
        assert!(
            mixed.starts_with("registry_url is an option of a Confluent"),
            "{mixed}"
        );
        let bad = parse(r#"format = { kind = "avro", registry = "glue", registry_name = "a b" }"#)
            .unwrap_err();
        assert!(bad.contains("a Glue registry name has"), "{bad}");
    }

    #[test]
    fn an_unknown_format_or_option_is_refused_with_what_is_expected() {
        let unknown = parse(r#"format = "protobuf""#).unwrap_err();
        assert!(
            unknown.contains("unknown variant `protobuf`") && unknown.contains("`json`"),
            "{unknown}"
        );
        let table = parse(r#"format = { kind = "protobuf" }"#).unwrap_err();
        assert!(table.contains("unknown variant `protobuf`"), "{table}");
        let option = parse(r#"format = { kind = "json", pretty = true }"#).unwrap_err();
        assert!(option.contains("unknown field `pretty`"), "{option}");
        let no_kind = parse(r#"format = { schemas = true }"#).unwrap_err();
        assert!(no_kind.contains("missing field `kind`"), "{no_kind}");
        let mode =
            parse(r#"format = { kind = "debezium", decimal_handling = "exact" }"#).unwrap_err();
        assert!(
            mode.contains("unknown variant `exact`") && mode.contains("`precise`"),
            "{mode}"
        );
        let number = parse("format = 3").unwrap_err();
        assert!(number.contains("a format name"), "{number}");
    }
}
