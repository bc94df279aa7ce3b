//! The Sleuth Kit's bodyfile (3.x format), which `mactime -b` turns into a timeline:
//! `MD5|name|inode|mode_as_string|UID|GID|size|atime|mtime|ctime|crtime`, one entry a line,
//! times in whole seconds since the epoch (0 when unknown).
//!
//! The name field cannot hold every byte a Linux name can: `|` would split the line and a
//! newline would end it. So bytes that are not printable UTF-8, `|` and `\` are written as
//! `\xHH` (and a symlink's name is `path -> target`, as `fls -m` writes it). The exact bytes
//! of every path are in `triage-index.json` (`path_bytes_hex`).

use super::walk::{EntryType, Stat};

/// A name in the bodyfile's escaped form.
pub fn escape_name(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '|' || c == '\\' {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `fls -m` style mode: `r/rrw-r--r--` (name type / meta type, then the permission bits).
pub fn mode_string(mode: u32) -> String {
    let t = match EntryType::from_mode(mode) {
        EntryType::File => 'r',
        EntryType::Dir => 'd',
        EntryType::Symlink => 'l',
        EntryType::Fifo => 'p',
        EntryType::Socket => 's',
        EntryType::CharDevice => 'c',
        EntryType::BlockDevice => 'b',
        EntryType::Unknown => '-',
    };
    let bit = |m: u32, c: char| if mode & m != 0 { c } else { '-' };
    let exec =
        |x: u32, special: u32, set: char, unset: char| match (mode & x != 0, mode & special != 0) {
            (true, true) => set,
            (false, true) => unset,
            (true, false) => 'x',
            (false, false) => '-',
        };
    let mut s = format!("{t}/{t}");
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(exec(0o100, 0o4000, 's', 'S'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(exec(0o010, 0o2000, 's', 'S'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(exec(0o001, 0o1000, 't', 'T'));
    s
}

/// One bodyfile line (with its newline). `link_target` is appended as ` -> target`.
pub fn line(path: &[u8], link_target: Option<&[u8]>, st: &Stat) -> String {
    let mut name = escape_name(path);
    if let Some(t) = link_target {
        name.push_str(" -> ");
        name.push_str(&escape_name(t));
    }
    format!(
        "0|{name}|{}|{}|{}|{}|{}|{}|{}|{}|{}\n",
        st.inode,
        mode_string(st.mode),
        st.uid,
        st.gid,
        st.size,
        st.atime.secs,
        st.mtime.secs,
        st.ctime.secs,
        st.btime.map(|t| t.secs).unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::super::walk::Time;
    use super::*;

    fn stat(mode: u32) -> Stat {
        let t = |s| Time { secs: s, nsec: 5 };
        Stat {
            mode,
            uid: 1000,
            gid: 100,
            size: 42,
            inode: 7,
            dev: 1,
            nlink: 1,
            atime: t(1),
            mtime: t(2),
            ctime: t(3),
            btime: None,
        }
    }

    #[test]
    fn lines_have_eleven_fields() {
        let l = line(b"/var/log/a|b", None, &stat(0o100644));
        assert_eq!(l, "0|/var/log/a\\x7cb|7|r/rrw-r--r--|1000|100|42|1|2|3|0\n");
        assert_eq!(l.trim_end().split('|').count(), 11);
        let l = line(b"/tmp/l", Some(b"/etc/shadow"), &stat(0o120777));
        assert!(
            l.starts_with("0|/tmp/l -> /etc/shadow|7|l/lrwxrwxrwx|"),
            "{l}"
        );
    }

    #[test]
    fn hostile_names_cannot_break_lines() {
        let e = escape_name(b"caf\xe9\nx|y\\z");
        assert_eq!(e, "caf\\xe9\\x0ax\\x7cy\\x5cz");
        assert_eq!(escape_name("naïve".as_bytes()), "naïve");
    }

    #[test]
    fn special_bits() {
        assert_eq!(mode_string(0o104755), "r/rrwsr-xr-x");
        assert_eq!(mode_string(0o041777), "d/drwxrwxrwt");
        assert_eq!(mode_string(0o010600), "p/prw-------");
        assert_eq!(mode_string(0o102644), "r/rrw-r-Sr--");
    }
}
