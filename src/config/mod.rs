//! The daemon configuration: one TOML file with a `[daemon]` section and `[[pipeline]]`s.
//!
//! Loading goes: read the file -> parse TOML -> substitute `${VAR}` in every string -> type the
//! core settings (`daemon`, each pipeline's name, batching, buffers, restart) -> validate. The
//! `source` and `sink` sections stay untyped here ([`ConnectorSection`]): the connector named by
//! their `kind` types them with [`ConnectorSection::parse`], so this core module knows no
//! connector. Every error carries the key path of the offending setting. Relative paths in the
//! configuration are relative to the working directory of the process.

mod env;
mod error;
mod secret;

use std::collections::HashSet;
use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

pub use error::ConfigError;
pub use secret::Secret;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub daemon: DaemonConfig,
    #[serde(rename = "pipeline")]
    pub pipelines: Vec<PipelineConfig>,
}

/// `[daemon]`: settings shared by every pipeline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Directory of the checkpoint store (`checkpoints.redb`); created when missing.
    pub state_dir: PathBuf,
    /// Address of the HTTP endpoints (`/metrics`, `/healthz`, `/readyz`, `/status`); none
    /// when unset or empty (so that `"${VAR:-}"` can leave it off).
    #[serde(default, deserialize_with = "optional_address")]
    pub http_listen: Option<std::net::SocketAddr>,
    /// `text` (the default) or `json` (one JSON object per line, for log shippers).
    #[serde(default)]
    pub log_format: LogFormat,
    /// `[daemon.coordination]`: where checkpoints are kept. Absent or `kind = "local"`: the
    /// redb file in `state_dir`. A shared store (`postgres`, `dynamodb`, typed by the daemon's
    /// registry) lets several instances share the pipelines through leases.
    #[serde(default)]
    pub coordination: Option<ConnectorSection>,
    /// The lease settings of `[daemon.coordination]` (taken out of that section).
    #[serde(skip)]
    pub leases: LeaseConfig,
}

pub const DEFAULT_LEASE_DURATION_MS: u64 = 10_000;

/// How instances sharing a store hold their leases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseConfig {
    /// A lease not renewed for this long is taken over by another instance; its holder renews
    /// it every third of it. Takeover after a crash takes about this long.
    pub lease_duration_ms: u64,
    /// This instance's name in the lease table (default: host name, process id and start
    /// time, unique per process).
    pub instance_id: Option<String>,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            lease_duration_ms: DEFAULT_LEASE_DURATION_MS,
            instance_id: None,
        }
    }
}

fn optional_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an address such as \"127.0.0.1:9187\" (host IP and port)"
        ))
    })
}

/// How the daemon writes its log (to standard error).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[[pipeline]]`: one source feeding one sink.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Unique name; keys the pipeline's checkpoints, so renaming it starts over.
    pub name: String,
    pub source: ConnectorSection,
    pub sink: ConnectorSection,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub buffer: BufferConfig,
    #[serde(default)]
    pub restart: RestartConfig,
}

pub const DEFAULT_BATCH_MAX_EVENTS: usize = 1000;
pub const DEFAULT_BATCH_MAX_BYTES: usize = 1024 * 1024;
pub const DEFAULT_BATCH_LINGER_MS: u64 = 50;
pub const DEFAULT_MAX_IN_FLIGHT_BATCHES: usize = 4;

/// `[pipeline.batch]`: how events are grouped before they are handed to the sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A batch is handed over when it holds this many events...
    pub max_events: NonZeroUsize,
    /// ...or this many bytes (estimated from the events)...
    pub max_bytes: NonZeroUsize,
    /// ...or when its first event has waited this long.
    pub linger_ms: u64,
    /// Batches handed to the sink and not yet acknowledged, at most.
    pub max_in_flight: NonZeroUsize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: NonZeroUsize::new(DEFAULT_BATCH_MAX_EVENTS).expect("nonzero"),
            max_bytes: NonZeroUsize::new(DEFAULT_BATCH_MAX_BYTES).expect("nonzero"),
            linger_ms: DEFAULT_BATCH_LINGER_MS,
            max_in_flight: NonZeroUsize::new(DEFAULT_MAX_IN_FLIGHT_BATCHES).expect("nonzero"),
        }
    }
}

pub const DEFAULT_BUFFER_MAX_EVENTS: usize = 10_000;
pub const DEFAULT_BUFFER_MAX_BYTES: u32 = 64 * 1024 * 1024;

/// `[pipeline.buffer]`: the bound on events read from the source and not yet acknowledged.
/// When it is full the source waits (backpressure) instead of buffering more.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Events queued between the source and the batcher.
    pub max_events: NonZeroUsize,
    /// Bytes (estimated) of events read and not yet acknowledged by the sink. One event larger
    /// than this waits until everything before it is acknowledged, then passes alone.
    pub max_bytes: NonZeroU32,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            max_events: NonZeroUsize::new(DEFAULT_BUFFER_MAX_EVENTS).expect("nonzero"),
            max_bytes: NonZeroU32::new(DEFAULT_BUFFER_MAX_BYTES).expect("nonzero"),
        }
    }
}

pub const DEFAULT_RESTART_INITIAL_BACKOFF_MS: u64 = 500;
pub const DEFAULT_RESTART_MAX_BACKOFF_MS: u64 = 30_000;

/// `[pipeline.restart]`: how a pipeline is restarted after a transient failure.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartConfig {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            initial_backoff_ms: DEFAULT_RESTART_INITIAL_BACKOFF_MS,
            max_backoff_ms: DEFAULT_RESTART_MAX_BACKOFF_MS,
        }
    }
}

/// A `source` or `sink` section: its `kind` and its other settings, typed later by the
/// connector of that kind. Its `Debug` output names the settings but never their values,
/// which may hold secrets.
pub struct ConnectorSection {
    pub kind: String,
    settings: toml::Table,
    key: String,
}

impl ConnectorSection {
    /// The key path of this section, e.g. `pipeline[0].sink`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Types the section's settings (all but `kind`) as `T`; errors name the key path.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        parse_value(toml::Value::Table(self.settings.clone()), &self.key)
    }

    /// Takes `keys` out of the section and types them as `T` (settings of the core that share
    /// a connector's section).
    pub fn split_off<T: DeserializeOwned>(&mut self, keys: &[&str]) -> Result<T, ConfigError> {
        let mut taken = toml::Table::new();
        for key in keys {
            if let Some(value) = self.settings.remove(*key) {
                taken.insert((*key).to_owned(), value);
            }
        }
        parse_value(toml::Value::Table(taken), &self.key)
    }

    /// An error about this section's `kind`.
    pub fn unknown_kind(&self, expected: &[&str]) -> ConfigError {
        ConfigError::invalid(
            format!("{}.kind", self.key),
            format!(
                "unknown kind {:?}; expected one of: {}",
                self.kind,
                expected.join(", ")
            ),
        )
    }
}

impl fmt::Debug for ConnectorSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorSection")
            .field("kind", &self.kind)
            .field("settings", &self.settings.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<'de> Deserialize<'de> for ConnectorSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut settings = toml::Table::deserialize(d)?;
        let kind = match settings.remove("kind") {
            Some(toml::Value::String(kind)) => kind,
            Some(other) => {
                return Err(serde::de::Error::custom(format!(
                    "`kind` must be a string, found {}",
                    other.type_str()
                )))
            }
            None => return Err(serde::de::Error::missing_field("kind")),
        };
        Ok(ConnectorSection {
            kind,
            settings,
            key: String::new(),
        })
    }
}

impl Config {
    /// Reads, substitutes, types and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path, &|name| std::env::var(name).ok())
    }

    /// Like [`Config::load`] on text already read; `path` is used in messages only.
    pub fn from_toml(
        text: &str,
        path: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim().to_owned(),
        })?;
        env::substitute(&mut value, "", lookup)?;
        let mut config: Config = parse_value(value, "")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        if let Some(section) = &mut self.daemon.coordination {
            section.key = "daemon.coordination".into();
            let leases: LeaseConfig = section.split_off(&["lease_duration_ms", "instance_id"])?;
            if leases.lease_duration_ms < 1000 {
                return Err(ConfigError::invalid(
                    "daemon.coordination.lease_duration_ms",
                    "must be at least 1000 (a lease is renewed every third of it)",
                ));
            }
            if leases.instance_id.as_deref() == Some("") {
                return Err(ConfigError::invalid(
                    "daemon.coordination.instance_id",
                    "must not be empty (leave it out for a generated one)",
                ));
            }
            self.daemon.leases = leases;
        }
        if self.pipelines.is_empty() {
            return Err(ConfigError::invalid(
                "pipeline",
                "no [[pipeline]] is defined",
            ));
        }
        let mut names = HashSet::new();
        for (i, pipeline) in self.pipelines.iter_mut().enumerate() {
            let key = format!("pipeline[{i}]");
            let name_ok = !pipeline.name.is_empty()
                && pipeline
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !name_ok {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!(
                        "{:?} is not a valid name (letters, digits, `_`, `-`, `.`)",
                        pipeline.name
                    ),
                ));
            }
            if !names.insert(pipeline.name.clone()) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!("{:?} is used twice", pipeline.name),
                ));
            }
            if pipeline.restart.max_backoff_ms < pipeline.restart.initial_backoff_ms {
                return Err(ConfigError::invalid(
                    format!("{key}.restart.max_backoff_ms"),
                    "must not be smaller than initial_backoff_ms",
                ));
            }
            pipeline.source.key = format!("{key}.source");
            pipeline.sink.key = format!("{key}.sink");
        }
        Ok(())
    }

    /// The pipeline called `name`.
    pub fn pipeline(&self, name: &str) -> Option<&PipelineConfig> {
        self.pipelines.iter().find(|p| p.name == name)
    }
}

fn parse_value<T: DeserializeOwned>(value: toml::Value, prefix: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::from_serde(prefix, &path, e.inner().message())
    })
}

#[cfg(test)]
mod tests;
