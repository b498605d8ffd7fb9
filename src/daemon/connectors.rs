//! The connector registry: the only place that knows every source, sink and checkpoint store.
//! It types a pipeline's `source` and `sink` sections and the daemon's `coordination` section
//! by their `kind` (validation, no I/O), and builds connector instances from them for each run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::check::Finding;
use crate::checkpoint::{CheckpointError, CheckpointStore, Store};
use crate::config::{ConfigError, ConnectorSection, DaemonConfig};
use crate::coordination::SharedStore;
use crate::error::BoxError;
use crate::format::avro::{ConfluentError, ConfluentRegistry};
use crate::format::{format_for, AvroOptions, FormatSpec, RegistrySettings};
use crate::sink::Sink;
use crate::sinks::file::{FileSink, FileSinkConfig};
use crate::sinks::kafka::{self, KafkaSink, KafkaSinkConfig, TopicTemplate};
use crate::sinks::kinesis::{self, KinesisSink, KinesisSinkConfig, StreamRef};
use crate::sinks::null::{NullSink, NullSinkConfig};
use crate::sinks::stdout::{StdoutSink, StdoutSinkConfig};
use crate::source::Source;
use crate::sources::dynamodb::{self, DynamoDbConfig, DynamoDbSource, StartAt};
use crate::sources::generator::{GeneratorConfig, GeneratorSource};
use crate::sources::mysql::{self, MysqlConfig, MysqlSource, TableFilter};
use crate::sources::postgres::{self, PostgresConfig, PostgresSource};
use crate::stores::{DynamoDbStore, DynamoDbStoreConfig, PostgresStore, PostgresStoreConfig};

const SOURCE_KINDS: &[&str] = &["generator", "postgres", "dynamodb", "mysql"];
const SINK_KINDS: &[&str] = &["file", "stdout", "null", "kafka", "kinesis"];

/// The Avro format registers its schemas under names made from Kafka topics or Kinesis
/// streams, and its records are binary: the file and stdout sinks refuse it.
fn registry_format_needs_a_stream(format: &FormatSpec, key: &str) -> Result<(), ConfigError> {
    match format {
        FormatSpec::Avro(_) => Err(ConfigError::invalid(
            format!("{key}.format"),
            "the avro format works with the kafka and kinesis sinks (its records are binary, its schemas registered per topic or stream)",
        )),
        _ => Ok(()),
    }
}

/// A Confluent registry URL is checked when the config is read, not at the first record.
fn registry_url_is_valid(format: &FormatSpec, key: &str) -> Result<(), ConfigError> {
    let FormatSpec::Avro(AvroOptions {
        registry: RegistrySettings::Confluent(settings),
        ..
    }) = format
    else {
        return Ok(());
    };
    ConfluentRegistry::new(settings).map(drop).map_err(|e| {
        let reason = match e {
            ConfluentError::Config { reason, .. } => reason,
            other => other.to_string(),
        };
        ConfigError::invalid(format!("{key}.format.registry_url"), reason)
    })
}

/// A typed `source` section.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    Generator(GeneratorConfig),
    Postgres(PostgresConfig),
    Dynamodb(DynamoDbConfig),
    Mysql(MysqlConfig, TableFilter),
}

/// A typed `sink` section.
#[derive(Debug, Clone)]
pub enum SinkSpec {
    File(FileSinkConfig),
    Stdout(StdoutSinkConfig),
    Null(NullSinkConfig),
    Kafka(KafkaSinkConfig, TopicTemplate),
    Kinesis(KinesisSinkConfig, StreamRef),
}

impl SourceSpec {
    pub fn parse(section: &ConnectorSection) -> Result<Self, ConfigError> {
        match section.kind.as_str() {
            "generator" => section.parse().map(SourceSpec::Generator),
            "postgres" => {
                let config: PostgresConfig = section.parse()?;
                config.validate(section.key())?;
                Ok(SourceSpec::Postgres(config))
            }
            "dynamodb" => {
                let config: DynamoDbConfig = section.parse()?;
                config.validate(section.key())?;
                Ok(SourceSpec::Dynamodb(config))
            }
            "mysql" => {
                let config: MysqlConfig = section.parse()?;
                let filter = config.validate(section.key())?;
                Ok(SourceSpec::Mysql(config, filter))
            }
            _ => Err(section.unknown_kind(SOURCE_KINDS)),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Generator(_) => "generator",
            SourceSpec::Postgres(_) => "postgres",
            SourceSpec::Dynamodb(_) => "dynamodb",
            SourceSpec::Mysql(..) => "mysql",
        }
    }

    /// Whether, on a shared store, the pipeline's partitions spread over the instances (each
    /// runs a copy reading the partitions it holds) instead of the pipeline moving whole.
    /// A DynamoDB stream's shards do, unless `start = "latest"`: where "latest" was on the
    /// first start must be decided by one reader.
    pub fn spreads_partitions(&self) -> bool {
        matches!(self, SourceSpec::Dynamodb(config) if config.start == StartAt::TrimHorizon)
    }

    /// A fresh source instance for one run of the pipeline.
    pub async fn build(&self) -> Result<Box<dyn Source>, BoxError> {
        match self {
            SourceSpec::Generator(config) => Ok(Box::new(GeneratorSource::new(config.clone()))),
            SourceSpec::Postgres(config) => Ok(Box::new(PostgresSource::new(config.clone()))),
            SourceSpec::Dynamodb(config) => Ok(Box::new(DynamoDbSource::new(config.clone()))),
            SourceSpec::Mysql(config, filter) => {
                Ok(Box::new(MysqlSource::new(config.clone(), filter.clone())))
            }
        }
    }

    /// Asks the source to copy `tables` again while its pipeline streams (`cdc-bridge
    /// snapshot`). Sources without incremental snapshots say so.
    pub async fn request_snapshot(&self, pipeline: &str, tables: &[String]) -> Result<(), String> {
        match self {
            SourceSpec::Postgres(config) => postgres::request_snapshot(config, tables)
                .await
                .map_err(|err| crate::error::report(&err)),
            SourceSpec::Mysql(config, filter) => {
                mysql::request_snapshot(config, filter, pipeline, tables)
                    .await
                    .map_err(|err| crate::error::report(&err))
            }
            other => Err(format!(
                "incremental snapshots are not implemented for {} sources",
                other.kind()
            )),
        }
    }

    /// Verifies the source's prerequisites (connects; changes nothing).
    pub async fn check(&self) -> Vec<Finding> {
        match self {
            SourceSpec::Generator(_) => Vec::new(),
            SourceSpec::Postgres(config) => postgres::check(config).await,
            SourceSpec::Dynamodb(config) => dynamodb::check(config).await,
            SourceSpec::Mysql(config, _) => mysql::check(config).await,
        }
    }
}

impl SinkSpec {
    pub fn parse(section: &ConnectorSection) -> Result<Self, ConfigError> {
        match section.kind.as_str() {
            "file" => {
                let config: FileSinkConfig = section.parse()?;
                registry_format_needs_a_stream(&config.format, section.key())?;
                Ok(SinkSpec::File(config))
            }
            "stdout" => {
                let config: StdoutSinkConfig = section.parse()?;
                registry_format_needs_a_stream(&config.format, section.key())?;
                Ok(SinkSpec::Stdout(config))
            }
            "null" => section.parse().map(SinkSpec::Null),
            "kafka" => {
                let config: KafkaSinkConfig = section.parse()?;
                let template = config.validate(section.key())?;
                registry_url_is_valid(&config.format, section.key())?;
                Ok(SinkSpec::Kafka(config, template))
            }
            "kinesis" => {
                let config: KinesisSinkConfig = section.parse()?;
                let stream = config.validate(section.key())?;
                registry_url_is_valid(&config.format, section.key())?;
                Ok(SinkSpec::Kinesis(config, stream))
            }
            _ => Err(section.unknown_kind(SINK_KINDS)),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SinkSpec::File(_) => "file",
            SinkSpec::Stdout(_) => "stdout",
            SinkSpec::Null(_) => "null",
            SinkSpec::Kafka(..) => "kafka",
            SinkSpec::Kinesis(..) => "kinesis",
        }
    }

    /// A fresh sink instance for one run of the pipeline.
    pub async fn build(&self) -> Result<Box<dyn Sink>, BoxError> {
        match self {
            SinkSpec::File(config) => Ok(Box::new(FileSink::open(config).await?)),
            SinkSpec::Stdout(config) => Ok(Box::new(StdoutSink::new(config))),
            SinkSpec::Null(_) => Ok(Box::new(NullSink)),
            SinkSpec::Kafka(config, template) => Ok(Box::new(
                KafkaSink::connect(config, template.clone()).await?,
            )),
            SinkSpec::Kinesis(config, stream) => {
                Ok(Box::new(KinesisSink::connect(config, stream).await?))
            }
        }
    }

    /// Verifies the sink's prerequisites (connects; changes nothing).
    pub async fn check(&self) -> Vec<Finding> {
        match self {
            SinkSpec::Kafka(config, template) => {
                let mut findings = kafka::check(config, template).await;
                findings.extend(format_for(&config.format).check().await);
                findings
            }
            SinkSpec::Kinesis(config, stream) => {
                let mut findings = kinesis::check(config, stream).await;
                findings.extend(format_for(&config.format).check().await);
                findings
            }
            SinkSpec::File(_) | SinkSpec::Stdout(_) | SinkSpec::Null(_) => Vec::new(),
        }
    }
}

const STORE_KINDS: &[&str] = &["local", "postgres", "dynamodb"];

/// A typed `[daemon.coordination]` section: where checkpoints (and leases) are kept.
#[derive(Debug, Clone)]
pub enum StoreSpec {
    /// The redb file in `state_dir` (also when the section is absent).
    Local(PathBuf),
    /// Each with the lease duration, which bounds how long a call to the store may wait.
    Postgres(PostgresStoreConfig, Duration),
    Dynamodb(DynamoDbStoreConfig, Duration),
}

/// An opened store: the local one, or a shared one with leases.
#[derive(Debug, Clone)]
pub enum OpenedStore {
    Local(Arc<CheckpointStore>),
    Shared(Arc<dyn SharedStore>),
}

impl OpenedStore {
    /// The store as pipelines and tools use it.
    pub fn checkpoints(&self) -> Arc<dyn Store> {
        match self {
            OpenedStore::Local(store) => store.clone(),
            OpenedStore::Shared(store) => store.clone(),
        }
    }
}

impl StoreSpec {
    pub fn parse(daemon: &DaemonConfig) -> Result<Self, ConfigError> {
        let Some(section) = &daemon.coordination else {
            return Ok(StoreSpec::Local(daemon.state_dir.clone()));
        };
        match section.kind.as_str() {
            "local" => {
                if let Some(extra) = section.parse::<toml::Table>()?.keys().next() {
                    return Err(ConfigError::invalid(
                        format!("{}.{extra}", section.key()),
                        "the local store takes no settings (it lives in state_dir)",
                    ));
                }
                Ok(StoreSpec::Local(daemon.state_dir.clone()))
            }
            "postgres" => {
                let lease = Duration::from_millis(daemon.leases.lease_duration_ms);
                Ok(StoreSpec::Postgres(section.parse()?, lease))
            }
            "dynamodb" => {
                let lease = Duration::from_millis(daemon.leases.lease_duration_ms);
                let config: DynamoDbStoreConfig = section.parse()?;
                if let Some(url) = &config.endpoint_url {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(ConfigError::invalid(
                            format!("{}.endpoint_url", section.key()),
                            "must start with http:// or https://",
                        ));
                    }
                }
                Ok(StoreSpec::Dynamodb(config, lease))
            }
            _ => Err(section.unknown_kind(STORE_KINDS)),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            StoreSpec::Local(_) => "local",
            StoreSpec::Postgres(..) => "postgres",
            StoreSpec::Dynamodb(..) => "dynamodb",
        }
    }

    /// Opens (and, for a shared store, creates the tables of) the store.
    pub async fn open(&self) -> Result<OpenedStore, CheckpointError> {
        Ok(match self {
            StoreSpec::Local(dir) => OpenedStore::Local(Arc::new(CheckpointStore::open(dir)?)),
            StoreSpec::Postgres(config, lease) => {
                OpenedStore::Shared(Arc::new(PostgresStore::open(config.clone(), *lease).await?))
            }
            StoreSpec::Dynamodb(config, lease) => {
                OpenedStore::Shared(Arc::new(DynamoDbStore::open(config.clone(), *lease).await?))
            }
        })
    }
}
