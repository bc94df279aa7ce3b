//! A file on the host, by path, as one item: a suspicious binary, a log, a config.
//!
//! Opened read-only with `O_NOATIME` (the access time is evidence too) and `O_NONBLOCK` (a FIFO
//! must never hang a collection); only regular files are read. The file is stat'ed before and
//! after reading, so a file that changed while it was read is recorded as such.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

#[derive(Debug)]
pub struct OpenedFile {
    pub file: File,
    pub path: String,
    before: std::fs::Metadata,
    /// Read at most this many bytes (triage caps a growing file at its size when opened).
    limit: Option<u64>,
}

fn time_ns(secs: i64, nsec: i64) -> serde_json::Value {
    match cairn_protocol::rfc3339::from_unix_ns(i128::from(secs) * 1_000_000_000 + i128::from(nsec))
    {
        Some(s) => serde_json::Value::String(s),
        None => serde_json::Value::Null,
    }
}

/// Open a regular file for evidence. The error says what the path is when it is not a file.
pub fn open(path: &str) -> Result<OpenedFile, String> {
    open_in(Path::new("/"), path)
}

/// Open `path` as the host sees it, the host's root file system being at `host_root` (`/host`
/// when the agent runs in a container). Below another root the path is resolved with
/// `openat2(RESOLVE_IN_ROOT)`, so `..` and absolute symlinks on the host stay inside it.
pub fn open_in(host_root: &Path, path: &str) -> Result<OpenedFile, String> {
    // A relative path would resolve against the agent's working directory, which is nothing
    // the requester can know: refused, not guessed.
    if !path.starts_with('/') {
        return Err(format!(
            "{path:?}: a relative path; name the file by its absolute path as the host sees it (/var/log/auth.log)"
        ));
    }
    let in_root = host_root != Path::new("/");
    let root_dir = if in_root {
        Some(std::fs::File::open(host_root).map_err(|e| {
            format!(
                "{path}: cannot open the host root {}: {e}",
                host_root.display()
            )
        })?)
    } else {
        None
    };
    let open = |flags: i32| -> std::io::Result<File> {
        let flags = flags | libc::O_NONBLOCK | libc::O_NOCTTY;
        match &root_dir {
            None => std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags)
                .open(Path::new(path)),
            Some(dir) => {
                use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
                let how = OpenHow::new()
                    .flags(OFlag::from_bits_truncate(
                        flags | libc::O_RDONLY | libc::O_CLOEXEC,
                    ))
                    .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
                let fd = openat2(dir, path.trim_start_matches('/'), how)
                    .map_err(std::io::Error::from)?;
                Ok(File::from(fd))
            }
        }
    };
    // O_NOATIME is refused (EPERM) for files we do not own unless we have CAP_FOWNER.
    let file = match open(libc::O_NOATIME) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            open(0).map_err(|e| format!("{path}: cannot open: {e}"))?
        }
        Err(e) => return Err(format!("{path}: cannot open: {e}")),
    };
    let before = file
        .metadata()
        .map_err(|e| format!("{path}: cannot stat: {e}"))?;
    let ft = before.file_type();
    if !ft.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_block_device() || ft.is_char_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(format!(
            "{path}: is {what}; only regular files are collected by the file profile"
        ));
    }
    Ok(OpenedFile {
        file,
        path: path.to_string(),
        before,
        limit: None,
    })
}

impl OpenedFile {
    /// An already opened file or device (triage opens by descriptor, images open devices).
    pub fn from_file(file: File, path: String, limit: Option<u64>) -> Result<OpenedFile, String> {
        let before = file
            .metadata()
            .map_err(|e| format!("{path}: cannot stat: {e}"))?;
        Ok(OpenedFile {
            file,
            path,
            before,
            limit,
        })
    }

    /// A reader over the content (a second handle, so the file stays open for the final stat).
    pub fn reader(&self) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        use std::io::Read;
        let clone = self.file.try_clone()?;
        Ok(match self.limit {
            Some(n) => Box::new(clone.take(n)),
            None => Box::new(clone),
        })
    }

    /// Facts about the file as it was when opened.
    pub fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let m = &self.before;
        let mut d = serde_json::Map::new();
        d.insert("size".into(), m.size().into());
        d.insert("mode".into(), format!("{:o}", m.mode()).into());
        d.insert("uid".into(), m.uid().into());
        d.insert("gid".into(), m.gid().into());
        d.insert("inode".into(), m.ino().into());
        d.insert("device".into(), m.dev().into());
        d.insert("nlink".into(), m.nlink().into());
        d.insert("mtime".into(), time_ns(m.mtime(), m.mtime_nsec()));
        d.insert("atime".into(), time_ns(m.atime(), m.atime_nsec()));
        d.insert("ctime".into(), time_ns(m.ctime(), m.ctime_nsec()));
        d
    }

    /// (device, inode) as opened: whether a path still names the same file.
    pub fn identity(&self) -> (u64, u64) {
        (self.before.dev(), self.before.ino())
    }

    /// A note when the file changed between open and the end of reading.
    pub fn changed_since_open(&self) -> Option<String> {
        let after = self.file.metadata().ok()?;
        let b = &self.before;
        if after.size() != b.size()
            || after.mtime() != b.mtime()
            || after.mtime_nsec() != b.mtime_nsec()
        {
            Some(format!(
                "{} changed while it was read (size {} → {}, mtime {} → {}); the item holds the bytes as read",
                self.path,
                b.size(),
                after.size(),
                b.mtime(),
                after.mtime()
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_refused_whatever_the_working_directory_holds() {
        for p in ["../../../../etc/shadow", "etc/passwd", "./x", ""] {
            let e = open(p).unwrap_err();
            assert!(
                e.contains("relative path") && e.contains("absolute"),
                "{p}: {e}"
            );
            let e = open_in(Path::new("/tmp"), p).unwrap_err();
            assert!(e.contains("relative path"), "{p}: {e}");
        }
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ok.txt");
        std::fs::write(&f, b"evidence").unwrap();
        let opened = open(f.to_str().unwrap()).unwrap();
        assert_eq!(opened.details()["size"], 8);
    }
}
