//! Home directories of a root: what `%user_home%` in a profile expands to.
//!
//! `/etc/passwd` alone misses the homes an investigation cares about most: an account deleted
//! after the fact, one planted by hand, a `/home` volume mounted from elsewhere. So every
//! directory under `/home` (and `/root`) is a home too, whatever passwd says, and each home
//! records where it was found.

use super::glob;
use super::walk::{self, EntryType};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};

/// Where a home directory was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Named in the root's `/etc/passwd` only.
    Passwd,
    /// A directory under `/home` (or `/root`) that passwd does not name.
    HomeDir,
    /// Both.
    Both,
}

impl Found {
    pub fn as_str(&self) -> &'static str {
        match self {
            Found::Passwd => "passwd",
            Found::HomeDir => "home_dir",
            Found::Both => "both",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// Components below the root (`home`, `alice`).
    pub components: Vec<Vec<u8>>,
    pub found: Found,
}

impl Home {
    /// `/home/alice`
    pub fn path(&self) -> String {
        format!("/{}", String::from_utf8_lossy(&self.components.join(&b'/')))
    }
}

/// Directories under `/home` are read up to this many: a home volume of a large shared host,
/// not an unbounded list.
const MAX_HOME_DIRS: usize = 10_000;

/// The homes of the root open at `root`: passwd's in its order, then `/root` and the
/// directories under `/home` it does not name, by name. Unsafe passwd entries are dropped;
/// what cannot be read is said in `errors`.
pub fn find(root: BorrowedFd<'_>, errors: &mut Vec<String>) -> Vec<Home> {
    let mut homes: Vec<Home> = Vec::new();
    for c in passwd_homes(root, errors) {
        if !homes.iter().any(|h| h.components == c) {
            homes.push(Home {
                components: c,
                found: Found::Passwd,
            });
        }
    }
    let mut dirs = Vec::new();
    if is_dir(root, b"root") {
        dirs.push(vec![b"root".to_vec()]);
    }
    match walk::open_dir_in_root(root, &[b"home".to_vec()]) {
        Ok(home) => match walk::list_dir(home.as_fd()) {
            Ok(mut names) => {
                names.sort();
                if names.len() > MAX_HOME_DIRS {
                    errors.push(format!(
                        "/home: {} entries; the first {MAX_HOME_DIRS} by name are taken as homes",
                        names.len()
                    ));
                    names.truncate(MAX_HOME_DIRS);
                }
                // Real directories only: a link under /home is a user's, not a volume's.
                dirs.extend(
                    names
                        .into_iter()
                        .filter(|n| is_dir(home.as_fd(), n))
                        .map(|n| vec![b"home".to_vec(), n]),
                );
            }
            Err(e) => errors.push(format!("/home: cannot list: {e}")),
        },
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {}
        Err(e) => errors.push(format!("/home: cannot open: {e}")),
    }
    for d in dirs {
        match homes.iter_mut().find(|h| h.components == d) {
            Some(h) => h.found = Found::Both,
            None => homes.push(Home {
                components: d,
                found: Found::HomeDir,
            }),
        }
    }
    homes
}

fn is_dir(dir: BorrowedFd<'_>, name: &[u8]) -> bool {
    walk::stat_at(dir, name).is_ok_and(|s| s.kind() == EntryType::Dir)
}

/// Home directories named by the root's own `/etc/passwd` (read with the same safe opens).
fn passwd_homes(root: BorrowedFd<'_>, errors: &mut Vec<String>) -> Vec<Vec<Vec<u8>>> {
    let text = walk::open_dir_in_root(root, &[b"etc".to_vec()])
        .and_then(|etc| walk::open_file_at(etc.as_fd(), b"passwd"))
        .and_then(|f| {
            let mut buf = Vec::new();
            f.take(16 << 20).read_to_end(&mut buf)?;
            Ok(buf)
        });
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            errors.push(format!(
                "/etc/passwd: cannot read ({e}); %user_home% covers /root and the directories under /home only"
            ));
            return Vec::new();
        }
    };
    let mut homes = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let Some(home) = line.split(|&b| b == b':').nth(5) else {
            continue;
        };
        let Ok(home) = std::str::from_utf8(home) else {
            continue;
        };
        if let Ok(p) = super::profile::parse_pattern(home) {
            if !p.components.is_empty() && !p.components.iter().any(|c| glob::has_wildcard(c)) {
                homes.push(p.components);
            }
        }
    }
    homes
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    #[test]
    fn homes_come_from_passwd_and_from_home_directories() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for dir in ["etc", "root", "home/alice", "home/ghost", "var/lib/pg"] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        std::os::unix::fs::symlink("/etc", r.join("home/link")).unwrap();
        std::fs::write(r.join("home/file"), b"").unwrap();
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n\
             postgres:x:100:100::/var/lib/pg:/bin/false\nbad:x:1:1::../../etc:/bin/sh\n",
        )
        .unwrap();
        let fd: OwnedFd = std::fs::File::open(r).unwrap().into();
        let mut errors = Vec::new();
        let homes = find(fd.as_fd(), &mut errors);
        let got: Vec<(String, &str)> = homes.iter().map(|h| (h.path(), h.found.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("/root".to_string(), "both"),
                ("/home/alice".to_string(), "both"),
                ("/var/lib/pg".to_string(), "passwd"),
                ("/home/ghost".to_string(), "home_dir"),
            ]
        );
        assert!(errors.is_empty(), "{errors:?}");

        // Without a passwd, the directories are still homes, and the gap is said.
        std::fs::remove_file(r.join("etc/passwd")).unwrap();
        let homes = find(fd.as_fd(), &mut errors);
        assert_eq!(homes.len(), 3, "{homes:?}");
        assert!(homes.iter().all(|h| h.found == Found::HomeDir));
        assert!(errors[0].contains("/etc/passwd"), "{errors:?}");
    }
}
