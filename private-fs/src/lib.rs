//! Files only their owner may read, written whole or not at all.
//!
//! Keys, tokens and certificates of the agent and the collector go through [`write_secret`]:
//! the bytes are written to a temporary file in the same directory (mode 0600 from the start,
//! never briefly world-readable), fsynced, renamed over the old name and the directory fsynced.
//! A crash at any point leaves either the old file or the new one, never an empty or partial
//! key — the agent would otherwise lose its identity, the collector its CA.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PrivateFsError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read the permissions of {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    #[error("{path} has no parent directory to write beside it")]
    NoParent { path: PathBuf },
}

/// Replace `path` with `contents`, mode 0600, atomically and durably.
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<(), PrivateFsError> {
    let werr = |source| PrivateFsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .ok_or_else(|| PrivateFsError::NoParent {
            path: path.to_path_buf(),
        })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "secret".into());
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // An older file of that name may exist with wider permissions: set them explicitly.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        werr(e)
    })
}

/// Create `path` (and its parents) as a private directory: mode 0700 on the last component,
/// tightened when it already exists.
pub fn create_private_dir(path: &Path) -> Result<(), PrivateFsError> {
    let cerr = |source| PrivateFsError::CreateDir {
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(path).map_err(cerr)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(cerr)
}

/// What is wrong with the permissions of a file or directory that must be private: `None`
/// when neither group nor others may read, write or enter it.
pub fn exposure(path: &Path) -> Result<Option<String>, PrivateFsError> {
    let m = fs::symlink_metadata(path).map_err(|source| PrivateFsError::Stat {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = m.mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    let kind = if m.is_dir() { "directory" } else { "file" };
    Ok(Some(format!(
        "{kind} {} has mode {mode:04o}: other users on this machine can read it",
        path.display()
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_replaces_the_old_file_whole_and_private() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent.key");
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_secret(&p, b"new key").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new key");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(exposure(&p).unwrap(), None);
        // No temporary file is left beside it.
        let names: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_failed_write_keeps_the_old_secret() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ca.key");
        write_secret(&p, b"the CA key").unwrap();
        // The directory becomes read-only: the temporary file cannot be created.
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o500)).unwrap();
        let r = write_secret(&p, b"replacement");
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
        // As root the write may still succeed; either way the file is whole.
        let now = fs::read(&p).unwrap();
        match r {
            Ok(()) => assert_eq!(now, b"replacement"),
            Err(e) => {
                assert_eq!(now, b"the CA key");
                assert!(e.to_string().contains("ca.key"), "{e}");
            }
        }
    }

    #[test]
    fn private_dirs_are_tightened_and_exposure_is_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("data");
        fs::create_dir(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        let why = exposure(&p).unwrap().unwrap();
        assert!(why.contains("0755"), "{why}");
        create_private_dir(&p).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o700);
        assert_eq!(exposure(&p).unwrap(), None);
    }
}
