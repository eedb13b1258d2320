//! The state directory and the files in it are the coordinator's alone: they hold every live
//! session's tickets, the TLS key and the reset key. They are created private, not left to the
//! umask.

use std::fs;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// A directory or file that could not be made private.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}", path.display())]
pub struct PrivateError {
    /// What was being done: "create", "read", "make private".
    action: &'static str,
    /// The directory or file.
    path: std::path::PathBuf,
    /// Why.
    #[source]
    source: std::io::Error,
}

type Result<T> = std::result::Result<T, PrivateError>;

fn failed(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PrivateError {
    let path = path.to_path_buf();
    move |source| PrivateError {
        action,
        path,
        source,
    }
}

/// Creates `dir` (and any missing parent) with mode 0700. An existing directory that others
/// may read is left as it is, with a warning: the operator may have chosen it.
pub fn create(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failed("create", dir))?;
    let mode = fs::metadata(dir)
        .map_err(failed("read", dir))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:o}", mode & 0o777),
            "the state directory is readable by others; it holds session tickets and keys \
             (chmod 700 it)"
        );
    }
    Ok(())
}

/// Makes sure the file `path` exists with mode 0600, tightening it if it is looser, so that a
/// database opened on it afterwards is never readable by others.
pub fn private_file(path: &Path) -> Result<()> {
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(failed("create", path))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(failed("make private", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_and_files_are_created_private_whatever_the_umask() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/state");
        create(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700);
        let file = dir.join("sessions.redb");
        private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        // A file left readable by an older version is tightened.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
    }
}
