//! Configuration errors. Every error names what the operator must look at: the file that could
//! not be read, the line of a syntax error, or the key path (`pipeline[0].sink.path`) of a
//! missing, unknown or mistyped setting.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Turns a deserialization error at `path` (relative to `prefix`) into a key-path error.
    /// serde reports a missing or unknown field at the path of its parent table; the field's
    /// own name is moved into the key path so the message points at the exact key.
    pub(crate) fn from_serde(prefix: &str, path: &str, message: &str) -> Self {
        let mut key = join_key(prefix, if path == "." { "" } else { path });
        let message = if let Some(field) = quoted_after(message, "missing field `") {
            key = join_key(&key, field);
            "missing (this setting is required)".to_owned()
        } else if let Some(field) = quoted_after(message, "unknown field `") {
            // serde_path_to_error already ends the path with an unknown field's name.
            if !(key == field || key.ends_with(&format!(".{field}"))) {
                key = join_key(&key, field);
            }
            match message.split_once(", expected ") {
                Some((_, expected)) => format!("unknown setting; expected {expected}"),
                None => "unknown setting".to_owned(),
            }
        } else {
            message.to_owned()
        };
        ConfigError::Invalid { key, message }
    }
}

/// Joins a key path and a child segment (`pipeline[0]` + `sink` = `pipeline[0].sink`).
pub(crate) fn join_key(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_owned(),
        (_, true) => parent.to_owned(),
        _ if child.starts_with('[') => format!("{parent}{child}"),
        _ => format!("{parent}.{child}"),
    }
}

fn quoted_after<'a>(message: &'a str, marker: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(marker)?;
    rest.split_once('`').map(|(field, _)| field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_unknown_fields_name_the_exact_key() {
        let missing = ConfigError::from_serde("pipeline[0].sink", ".", "missing field `path`");
        assert_eq!(
            missing.to_string(),
            "pipeline[0].sink.path: missing (this setting is required)"
        );
        let unknown = ConfigError::from_serde(
            "",
            "pipeline[1].batch",
            "unknown field `max`, expected `max_events`",
        );
        assert_eq!(
            unknown.to_string(),
            "pipeline[1].batch.max: unknown setting; expected `max_events`"
        );
    }
}
