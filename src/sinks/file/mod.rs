//! The `file` sink: one formatted event per line, appended to a file, fsynced before a batch
//! is acknowledged.
//!
//! The file is created readable by its owner only (`0600`, its new directories `0700`).
//! On open, a last line without its newline (a write torn by a crash) is cut off: its batch
//! was never acknowledged, so it is written again after the restart and nothing is lost.
//!
//! Errors: a file that cannot be opened for lack of permission, or a path that is a
//! directory, is fatal; other I/O errors (a full disk) are transient.

mod config;

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

pub use config::FileSinkConfig;

use crate::error::{BoxError, ConnectorError, Disposition};
use crate::format::{format_for, Format};
use crate::sink::{delivered, Batch, Delivery, Sink};

#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    #[error("cannot open output file {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write output file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ConnectorError for FileSinkError {
    fn disposition(&self) -> Disposition {
        match self {
            FileSinkError::Open { source, .. }
                if matches!(
                    source.kind(),
                    ErrorKind::PermissionDenied
                        | ErrorKind::IsADirectory
                        | ErrorKind::NotADirectory
                ) =>
            {
                Disposition::Fatal
            }
            _ => Disposition::Transient,
        }
    }
}

pub struct FileSink {
    path: PathBuf,
    /// `None` only while a write is running on the blocking pool.
    file: Option<File>,
    format: Box<dyn Format>,
}

impl FileSink {
    /// Opens (creating when missing) the output file and repairs a torn last line.
    pub async fn open(config: &FileSinkConfig) -> Result<Self, FileSinkError> {
        let path = config.path.clone();
        let open_path = path.clone();
        let file = tokio::task::spawn_blocking(move || open_for_append(&open_path))
            .await
            .expect("open task does not panic")
            .map_err(|source| FileSinkError::Open {
                path: path.clone(),
                source,
            })?;
        Ok(FileSink {
            path,
            file: Some(file),
            format: format_for(&config.format),
        })
    }
}

fn open_for_append(path: &Path) -> std::io::Result<File> {
    crate::private_fs::create_parent_dirs(path)?;
    let mut file = crate::private_fs::open_options()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let removed = cut_torn_last_line(&mut file)?;
    if removed > 0 {
        tracing::warn!(
            path = %path.display(),
            bytes = removed,
            "removed an incomplete last line left by a crash; its batch was never acknowledged and is written again"
        );
    }
    Ok(file)
}

/// Truncates `file` after its last newline; returns how many bytes were removed.
fn cut_torn_last_line(file: &mut File) -> std::io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(at) = chunk.iter().rposition(|&b| b == b'\n') {
            let keep = start + at as u64 + 1;
            if keep < len {
                file.set_len(keep)?;
                file.sync_data()?;
            }
            return Ok(len - keep);
        }
        end = start;
    }
    if len > 0 {
        file.set_len(0)?;
        file.sync_data()?;
    }
    Ok(len)
}

#[async_trait]
impl Sink for FileSink {
    async fn submit(&mut self, batch: Arc<Batch>) -> Result<Delivery, BoxError> {
        let mut buf = Vec::with_capacity(batch.events.len() * 256);
        for event in &batch.events {
            self.format.encode_value(event, &mut buf)?;
            buf.push(b'\n');
        }
        let mut file = self
            .file
            .take()
            .expect("the file is back after every write");
        let (file, written) = tokio::task::spawn_blocking(move || {
            let written = file.write_all(&buf).and_then(|()| file.sync_data());
            (file, written)
        })
        .await
        .expect("write task does not panic");
        self.file = Some(file);
        written.map_err(|source| FileSinkError::Write {
            path: self.path.clone(),
            source,
        })?;
        Ok(delivered())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn a_torn_last_line_is_cut_and_complete_lines_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .unwrap();
        assert_eq!(cut_torn_last_line(&mut file).unwrap(), 5);
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(cut_torn_last_line(&mut file).unwrap(), 0);
    }

    #[test]
    fn a_file_with_only_a_torn_line_becomes_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, vec![b'x'; 200_000]).unwrap();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .unwrap();
        assert_eq!(cut_torn_last_line(&mut file).unwrap(), 200_000);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[tokio::test]
    async fn a_directory_as_path_is_a_fatal_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileSinkConfig {
            path: dir.path().to_owned(),
            format: Default::default(),
        };
        let err = FileSink::open(&config).await.err().unwrap();
        assert_eq!(err.disposition(), Disposition::Fatal, "{err}");
    }
}
