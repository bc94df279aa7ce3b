//! User names for uids, from the host's `/etc/passwd`, so an event says `root` as well as
//! `0` and a search by either finds it. Read again when the file changes (checked at most
//! every few seconds); bounded in entries and line length, since the file is the host's and
//! may be planted.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// Most users kept; a passwd larger than this (none real is) keeps its first ones.
const MAX_USERS: usize = 65_536;
/// Longest passwd line read.
const MAX_LINE: u64 = 4096;
/// Largest passwd read.
const MAX_FILE: u64 = 16 << 20;
/// How often the file's mtime is looked at.
const RECHECK: Duration = Duration::from_secs(5);

pub struct Users {
    path: PathBuf,
    names: HashMap<u32, String>,
    mtime: Option<SystemTime>,
    checked: Option<Instant>,
}

impl Users {
    pub fn new(path: PathBuf) -> Users {
        Users {
            path,
            names: HashMap::new(),
            mtime: None,
            checked: None,
        }
    }

    /// The name of `uid`, if the host's passwd has one.
    pub fn name(&mut self, uid: u32) -> Option<String> {
        self.refresh();
        self.names.get(&uid).cloned()
    }

    fn refresh(&mut self) {
        let now = Instant::now();
        if self
            .checked
            .is_some_and(|c| now.duration_since(c) < RECHECK)
        {
            return;
        }
        self.checked = Some(now);
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if mtime.is_some() && mtime == self.mtime {
            return;
        }
        self.mtime = mtime;
        self.names = std::fs::File::open(&self.path)
            .map(|f| parse(f.take(MAX_FILE)))
            .unwrap_or_default();
    }
}

/// `name:x:uid:…` lines → uid → name (the first name of a uid wins, as getpwuid answers).
fn parse(r: impl Read) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.by_ref().take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') && line.len() as u64 == MAX_LINE {
            // Too long: skip the rest of it.
            let mut rest = Vec::new();
            if r.read_until(b'\n', &mut rest).is_err() {
                break;
            }
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let mut fields = text.trim_end().split(':');
        let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Ok(uid) = uid.parse::<u32>() else {
            continue;
        };
        if name.is_empty() || names.len() >= MAX_USERS {
            continue;
        }
        names.entry(uid).or_insert_with(|| name.to_string());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_passwd_and_bad_lines_are_skipped() {
        let long = format!("{}:x:7:7::/:/bin/sh\n", "a".repeat(5000));
        let text = format!(
            "root:x:0:0:root:/root:/bin/bash\n#comment\nbroken\nalice:x:1000:1000::/home/alice:/bin/bash\n{long}toor:x:0:0::/:/bin/sh\nbob:x:notanumber:1::/:/bin/sh\ncarol:x:1001:1001::/home/carol:/bin/sh"
        );
        let names = parse(text.as_bytes());
        assert_eq!(names.get(&0).map(String::as_str), Some("root"));
        assert_eq!(names.get(&1000).map(String::as_str), Some("alice"));
        assert_eq!(names.get(&1001).map(String::as_str), Some("carol"));
        assert!(
            !names.contains_key(&7),
            "a line past the length cap is not read"
        );
        assert_eq!(names.len(), 3);
    }

    #[test]
    fn a_changed_passwd_is_read_again() {
        let dir = std::env::temp_dir().join(format!("cairn-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("passwd");
        std::fs::write(&path, "root:x:0:0::/root:/bin/sh\n").unwrap();
        let mut users = Users::new(path.clone());
        assert_eq!(users.name(0).as_deref(), Some("root"));
        assert_eq!(users.name(1002), None);
        std::fs::write(
            &path,
            "root:x:0:0::/root:/bin/sh\nmallory:x:1002:1002::/:/bin/sh\n",
        )
        .unwrap();
        let later = SystemTime::now() + Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        users.checked = None;
        assert_eq!(users.name(1002).as_deref(), Some("mallory"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
