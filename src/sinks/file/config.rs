//! `kind = "file"` settings.

use std::path::PathBuf;

use serde::Deserialize;

use crate::format::FormatSpec;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The output file; created (with its directories) when missing, appended to otherwise.
    pub path: PathBuf,
    #[serde(default)]
    pub format: FormatSpec,
}
