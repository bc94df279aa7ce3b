//! `/proc/PID/maps`: the mappings a process core is made of.

use std::path::Path;

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
    /// Offset in the mapped file.
    pub offset: u64,
    /// `major:minor` as the kernel prints it (hex).
    pub dev: String,
    pub inode: u64,
    /// File path, or a pseudo name (`[heap]`, `[stack]`, `[vvar]`), or empty for anonymous memory.
    /// A deleted file keeps its path with ` (deleted)` appended, as the kernel prints it.
    pub path: String,
}

impl Mapping {
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn perms(&self) -> String {
        format!(
            "{}{}{}{}",
            if self.read { 'r' } else { '-' },
            if self.write { 'w' } else { '-' },
            if self.exec { 'x' } else { '-' },
            if self.shared { 's' } else { 'p' }
        )
    }

    /// Backed by a file (as opposed to anonymous memory or a kernel pseudo mapping).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }

    /// Mappings the kernel provides that cannot (`[vvar]`) or need not (`[vsyscall]`, which is
    /// the same page in every process and outside the user address range) be read.
    pub fn skip_reason(&self) -> Option<&'static str> {
        match self.path.as_str() {
            "[vvar]" | "[vvar_vclock]" => {
                Some("kernel data page, unreadable through /proc/PID/mem")
            }
            "[vsyscall]" => Some("legacy fixed kernel page, identical in every process"),
            _ if !self.read => Some("not readable (no PROT_READ): a guard or reserved region"),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("/proc/PID/maps line {line}: {what}: {text:?}")]
pub struct MapsError {
    pub line: usize,
    pub what: &'static str,
    pub text: String,
}

/// Parses the text of `/proc/PID/maps`.
pub fn parse(text: &str) -> Result<Vec<Mapping>, MapsError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |what| MapsError {
            line: i + 1,
            what,
            text: line.to_string(),
        };
        // address perms offset dev inode [path...]; the path may hold spaces.
        let mut rest = line;
        let mut field = || {
            let r = rest.trim_start();
            let end = r.find(' ').unwrap_or(r.len());
            let (f, tail) = r.split_at(end);
            rest = tail;
            f
        };
        let range = field();
        let perms = field().as_bytes().to_vec();
        let offset = field();
        let dev = field().to_string();
        let inode = field();
        let path = rest.trim_start().to_string();
        let (s, e) = range
            .split_once('-')
            .ok_or_else(|| err("no address range"))?;
        let start = u64::from_str_radix(s, 16).map_err(|_| err("bad start address"))?;
        let end = u64::from_str_radix(e, 16).map_err(|_| err("bad end address"))?;
        if perms.len() != 4 || end < start {
            return Err(err("bad permissions or range"));
        }
        out.push(Mapping {
            start,
            end,
            read: perms[0] == b'r',
            write: perms[1] == b'w',
            exec: perms[2] == b'x',
            shared: perms[3] == b's',
            offset: u64::from_str_radix(offset, 16).map_err(|_| err("bad offset"))?,
            dev,
            inode: inode.parse().map_err(|_| err("bad inode"))?,
            path,
        });
    }
    Ok(out)
}

/// Reads and parses `/proc/PID/maps` under `proc_root`.
pub fn read(proc_root: &Path, pid: u32) -> std::io::Result<Vec<Mapping>> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("maps"))?;
    parse(&text).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_files_anonymous_pseudo_and_spaces() {
        let text = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 1312 /usr/bin/cat
7f1e00000000-7f1e00021000 rw-p 00000000 00:00 0 
7ffd1a1f0000-7ffd1a211000 rw-p 00000000 00:00 0                          [stack]
7ffd1a3e4000-7ffd1a3e8000 r--p 00000000 00:00 0                          [vvar]
7f1e10000000-7f1e10001000 r--s 00001000 08:02 77 /tmp/with space (deleted)
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";
        let m = parse(text).unwrap();
        assert_eq!(m.len(), 6);
        assert_eq!(m[0].path, "/usr/bin/cat");
        assert!(m[0].is_file() && m[0].read && !m[0].write);
        assert_eq!(m[1].path, "");
        assert!(!m[1].is_file());
        assert_eq!(m[2].path, "[stack]");
        assert_eq!(m[3].skip_reason().map(|s| &s[..11]), Some("kernel data"));
        assert_eq!(m[4].path, "/tmp/with space (deleted)");
        assert_eq!(m[4].offset, 0x1000);
        assert!(m[4].shared);
        assert_eq!(m[4].perms(), "r--s");
        assert!(m[5].skip_reason().is_some());
        assert_eq!(m[0].len(), 0x2000);
    }

    #[test]
    fn rejects_garbage_with_the_line() {
        let e = parse("ok\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(parse("1000-0 r--p 0 00:00 0\n").is_err());
        assert!(parse("zz-1000 r--p 0 00:00 0\n").is_err());
    }
}
