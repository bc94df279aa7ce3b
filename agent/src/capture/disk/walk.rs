//! Safe filesystem primitives for triage: everything is opened relative to a directory
//! descriptor, one component at a time, with `O_NOFOLLOW`, so a symlink planted in a collected
//! tree is seen as a link and never followed — not out of the tree, not anywhere.
//!
//! Only the literal prefix of a profile path (`/var/log`, `/home`) is resolved with
//! `openat2(RESOLVE_IN_ROOT)`: symlinks there are resolved as the root itself would see them,
//! so a container's `/var/log` → `/data/log` stays inside `/proc/PID/root`. Where `openat2` is
//! missing (kernels before 5.6) the prefix is walked with `O_NOFOLLOW` too.
//! Files are opened `O_NONBLOCK` (a FIFO never blocks) and `O_NOATIME` (the access time is
//! evidence); times come from `statx`, with the birth time where the filesystem records it.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// What an entry is, from its mode, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

impl EntryType {
    pub fn from_mode(mode: u32) -> EntryType {
        match mode & libc::S_IFMT {
            libc::S_IFREG => EntryType::File,
            libc::S_IFDIR => EntryType::Dir,
            libc::S_IFLNK => EntryType::Symlink,
            libc::S_IFIFO => EntryType::Fifo,
            libc::S_IFSOCK => EntryType::Socket,
            libc::S_IFCHR => EntryType::CharDevice,
            libc::S_IFBLK => EntryType::BlockDevice,
            _ => EntryType::Unknown,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            EntryType::File => "file",
            EntryType::Dir => "directory",
            EntryType::Symlink => "symlink",
            EntryType::Fifo => "fifo",
            EntryType::Socket => "socket",
            EntryType::CharDevice => "char_device",
            EntryType::BlockDevice => "block_device",
            EntryType::Unknown => "unknown",
        }
    }
}

/// Where a name's text (lossy UTF-8) goes under `key`, its exact bytes go under
/// `KEY_bytes_hex` when they are not UTF-8.
pub fn insert_exact_bytes(
    map: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
    bytes: &[u8],
) {
    if std::str::from_utf8(bytes).is_err() {
        map.insert(format!("{key}_bytes_hex"), hex::encode(bytes).into());
    }
}

/// A timestamp: seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    pub secs: i64,
    pub nsec: u32,
}

impl Time {
    /// RFC 3339 with nanoseconds, UTC.
    pub fn rfc3339(&self) -> Option<String> {
        let ns = i128::from(self.secs) * 1_000_000_000 + i128::from(self.nsec);
        cairn_protocol::rfc3339::from_unix_ns(ns)
    }
}

/// What `statx` says about an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub inode: u64,
    pub dev: u64,
    pub nlink: u32,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    /// Birth time, where the filesystem records it (ext4, xfs, btrfs, tmpfs on new kernels).
    pub btime: Option<Time>,
}

impl Stat {
    pub fn kind(&self) -> EntryType {
        EntryType::from_mode(self.mode)
    }

    /// The facts every triage record carries, as JSON.
    pub fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut d = serde_json::Map::new();
        d.insert("type".into(), self.kind().as_str().into());
        d.insert("size".into(), self.size.into());
        d.insert("mode".into(), format!("{:o}", self.mode).into());
        d.insert("uid".into(), self.uid.into());
        d.insert("gid".into(), self.gid.into());
        d.insert("inode".into(), self.inode.into());
        d.insert("device".into(), self.dev.into());
        d.insert("nlink".into(), self.nlink.into());
        d.insert("mtime".into(), self.mtime.rfc3339().into());
        d.insert("atime".into(), self.atime.rfc3339().into());
        d.insert("ctime".into(), self.ctime.rfc3339().into());
        d.insert("btime".into(), self.btime.and_then(|t| t.rfc3339()).into());
        d
    }
}

fn cstring(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

fn statx_raw(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<Stat> {
    // SAFETY: statx writes into a zeroed struct we own; the name is NUL-terminated.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    let mask = libc::STATX_BASIC_STATS | libc::STATX_BTIME;
    // SAFETY: valid descriptor, NUL-terminated path, pointer to a statx struct we own.
    let rc = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::AT_STATX_SYNC_AS_STAT,
            mask,
            &mut sx,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let t = |ts: libc::statx_timestamp| Time {
        secs: ts.tv_sec,
        nsec: ts.tv_nsec,
    };
    Ok(Stat {
        mode: u32::from(sx.stx_mode),
        uid: sx.stx_uid,
        gid: sx.stx_gid,
        size: sx.stx_size,
        inode: sx.stx_ino,
        dev: libc::makedev(sx.stx_dev_major, sx.stx_dev_minor),
        nlink: sx.stx_nlink,
        atime: t(sx.stx_atime),
        mtime: t(sx.stx_mtime),
        ctime: t(sx.stx_ctime),
        btime: (sx.stx_mask & libc::STATX_BTIME != 0).then(|| t(sx.stx_btime)),
    })
}

/// `statx` of `name` in `dir`, never following a symlink.
pub fn stat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Stat> {
    statx_raw(dir, &cstring(name)?, libc::AT_SYMLINK_NOFOLLOW)
}

/// `statx` of an open descriptor.
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    statx_raw(fd, c"", libc::AT_EMPTY_PATH)
}

fn open_at_raw(dir: BorrowedFd<'_>, name: &[u8], flags: i32) -> io::Result<OwnedFd> {
    let c = cstring(name)?;
    // SAFETY: valid descriptor and NUL-terminated name; openat returns a new descriptor we own.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by openat and is owned by nobody else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

fn check_component(name: &[u8]) -> io::Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "refusing path component {:?}",
                String::from_utf8_lossy(name)
            ),
        ));
    }
    Ok(())
}

/// Open the directory `name` in `dir`, refusing a symlink (ELOOP) and anything not a directory.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    check_component(name)?;
    open_at_raw(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    )
}

/// Open the regular file `name` in `dir` for reading: no symlink, no blocking, no atime update.
/// Errors if it is not a regular file once opened.
pub fn open_file_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<std::fs::File> {
    check_component(name)?;
    let base = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    // O_NOATIME is refused (EPERM) for files we do not own without CAP_FOWNER.
    let fd = match open_at_raw(dir, name, base | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open_at_raw(dir, name, base)?,
        other => other?,
    };
    let st = stat_fd(fd.as_fd())?;
    if st.kind() != EntryType::File {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("is a {} now, not a regular file", st.kind().as_str()),
        ));
    }
    Ok(std::fs::File::from(fd))
}

/// Open a directory under `base` by components, each with `O_NOFOLLOW`.
pub fn open_dir_beneath(base: BorrowedFd<'_>, components: &[Vec<u8>]) -> io::Result<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for c in components {
        let next = match &cur {
            Some(fd) => open_dir_at(fd.as_fd(), c)?,
            None => open_dir_at(base, c)?,
        };
        cur = Some(next);
    }
    match cur {
        Some(fd) => Ok(fd),
        None => dup(base),
    }
}

fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// Open a directory inside `root` as the root would resolve it (symlinks stay inside the
/// root). Falls back to `O_NOFOLLOW` per component where `openat2` is unavailable.
pub fn open_dir_in_root(root: BorrowedFd<'_>, components: &[Vec<u8>]) -> io::Result<OwnedFd> {
    for c in components {
        check_component(c)?;
    }
    if components.is_empty() {
        return dup(root);
    }
    let rel = components.join(&b'/');
    let how = nix::fcntl::OpenHow::new()
        .flags(
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
        )
        .resolve(
            nix::fcntl::ResolveFlag::RESOLVE_IN_ROOT
                | nix::fcntl::ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    match nix::fcntl::openat2(root, rel.as_slice(), how) {
        Ok(fd) => Ok(fd),
        Err(nix::errno::Errno::ENOSYS) => open_dir_beneath(root, components),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// The names in a directory (without `.` and `..`), sorted bytewise.
pub fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let fd = dup(dir)?;
    let mut d = nix::dir::Dir::from_fd(fd).map_err(io::Error::from)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e.map_err(io::Error::from)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    // A dup shares the directory offset: rewind so a second listing starts at the top.
    // SAFETY: lseek on a descriptor we hold; no memory is touched.
    unsafe { libc::lseek(dir.as_raw_fd(), 0, libc::SEEK_SET) };
    names.sort();
    Ok(names)
}

/// The target of the symlink `name` in `dir`, as bytes.
pub fn read_link_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<u8>> {
    let c = cstring(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: the buffer is ours and its length is passed; readlinkat does not NUL-terminate.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn dirfd(p: &std::path::Path) -> OwnedFd {
        std::fs::File::open(p).unwrap().into()
    }

    #[test]
    fn symlinks_are_never_followed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"outside").unwrap();
        let tree = tempfile::tempdir().unwrap();
        symlink(outside.path().join("secret"), tree.path().join("link")).unwrap();
        symlink(outside.path(), tree.path().join("dirlink")).unwrap();
        let root = dirfd(tree.path());
        let e = open_file_at(root.as_fd(), b"link").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        let e = open_dir_at(root.as_fd(), b"dirlink").unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)),
            "{e}"
        );
        assert_eq!(
            stat_at(root.as_fd(), b"link").unwrap().kind(),
            EntryType::Symlink
        );
        assert_eq!(
            read_link_at(root.as_fd(), b"link").unwrap(),
            outside.path().join("secret").as_os_str().as_encoded_bytes()
        );
        assert!(open_dir_at(root.as_fd(), b"..").is_err());
        assert!(open_file_at(root.as_fd(), b"a/b").is_err());
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let tree = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&tree.path().join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let root = dirfd(tree.path());
        assert_eq!(
            stat_at(root.as_fd(), b"pipe").unwrap().kind(),
            EntryType::Fifo
        );
        // O_NONBLOCK: opening a FIFO with no writer returns at once; the type check refuses it.
        let e = open_file_at(root.as_fd(), b"pipe").unwrap_err();
        assert!(e.to_string().contains("fifo"), "{e}");
    }

    #[test]
    fn in_root_resolution_keeps_absolute_symlinks_inside() {
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tree.path().join("data/log")).unwrap();
        std::fs::create_dir_all(tree.path().join("var")).unwrap();
        // An absolute link, as a container would have it: /var/log -> /data/log.
        symlink("/data/log", tree.path().join("var/log")).unwrap();
        std::fs::write(tree.path().join("data/log/x"), b"in").unwrap();
        let root = dirfd(tree.path());
        let d = open_dir_in_root(root.as_fd(), &[b"var".to_vec(), b"log".to_vec()]).unwrap();
        assert_eq!(list_dir(d.as_fd()).unwrap(), vec![b"x".to_vec()]);
        assert!(open_dir_in_root(root.as_fd(), &[b"..".to_vec()]).is_err());
    }

    #[test]
    fn listing_is_sorted_and_repeatable() {
        let tree = tempfile::tempdir().unwrap();
        for n in ["b", "a", "c"] {
            std::fs::write(tree.path().join(n), b"").unwrap();
        }
        let root = dirfd(tree.path());
        let want = vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        assert_eq!(list_dir(root.as_fd()).unwrap(), want);
        assert_eq!(list_dir(root.as_fd()).unwrap(), want);
    }

    #[test]
    fn birth_time_and_nanoseconds_are_read() {
        let tree = tempfile::tempdir().unwrap();
        std::fs::write(tree.path().join("f"), b"12345").unwrap();
        let root = dirfd(tree.path());
        let st = stat_at(root.as_fd(), b"f").unwrap();
        assert_eq!(st.size, 5);
        assert_eq!(st.kind(), EntryType::File);
        assert!(st.mtime.rfc3339().unwrap().contains('T'));
    }
}
