//! Files and directories the bridge creates hold checkpoints and row data, so they are
//! created readable by their owner only: directories `0700`, files `0600`. Existing ones keep
//! their permissions (an operator may have set them on purpose).

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

/// Creates `dir` and its missing parents, each owner-only.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates the missing directories above `path` (a file), owner-only.
pub fn create_parent_dirs(path: &Path) -> io::Result<()> {
    match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        Some(dir) => create_dir_all(dir),
        None => Ok(()),
    }
}

/// Options that create a missing file owner-only; the caller adds the access mode.
pub fn open_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_directories_and_files_are_owner_only_existing_ones_are_kept() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("a/b/out.jsonl");
        create_parent_dirs(&file).unwrap();
        open_options()
            .append(true)
            .create(true)
            .open(&file)
            .unwrap();
        assert_eq!(mode(&root.path().join("a")), 0o700);
        assert_eq!(mode(&root.path().join("a/b")), 0o700);
        assert_eq!(mode(&file), 0o600);

        let shared = root.path().join("shared.jsonl");
        std::fs::write(&shared, b"").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
        open_options()
            .append(true)
            .create(true)
            .open(&shared)
            .unwrap();
        assert_eq!(mode(&shared), 0o640);
    }
}
