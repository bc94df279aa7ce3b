//! `users.json`: who is logged in, from the utmp file.
//!
//! utmp is the record `who` and `w` read: the interactive sessions (ssh, console) and where
//! they came from. It is parsed here from its binary layout (glibc, x86_64/aarch64 with
//! 32-bit times), not through libc's `getutent`, so that a damaged file yields errors rather
//! than undefined behaviour and the host's file can be read from a container.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{artifact, put, under, Errors, VolatileOptions};
use crate::capture::Artifact;
use cairn_protocol::rfc3339;

/// Size of glibc's `struct utmp` on 64-bit Linux.
pub const UTMP_RECORD_SIZE: usize = 384;
const USER_PROCESS: i16 = 7;
const BOOT_TIME: i16 = 2;

/// One utmp record, decoded.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UtmpRecord {
    /// `ut_type` (7 = USER_PROCESS).
    pub record_type: i16,
    /// Pid of the login process (sshd session, login).
    pub pid: i32,
    /// Terminal (`pts/0`).
    pub tty: String,
    /// `ut_id`: terminal suffix or inittab id.
    pub id: String,
    /// Login name.
    pub user: String,
    /// Remote host name or address as the login service wrote it.
    pub host: String,
    /// Session id (`ut_session`).
    pub session: i32,
    /// Login time, Unix seconds (`ut_tv.tv_sec`).
    pub login_time_unix: i64,
    /// The login time, RFC 3339 UTC.
    pub login_time: Option<String>,
    /// `ut_addr_v6`: IPv4 in the first word, or a full IPv6 address; none when zero.
    pub remote_address: Option<String>,
}

/// All records of a utmp file, and what could not be parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UtmpParse {
    /// Every whole record, in file order.
    pub records: Vec<UtmpRecord>,
    /// What could not be parsed (a trailing partial record).
    pub errors: Vec<String>,
}

/// Parse a utmp file's bytes; a trailing partial record becomes an error, never a panic.
pub fn parse_utmp(bytes: &[u8]) -> UtmpParse {
    let mut out = UtmpParse::default();
    let chunks = bytes.chunks_exact(UTMP_RECORD_SIZE);
    let rest = chunks.remainder().len();
    for (i, rec) in chunks.enumerate() {
        match parse_record(rec) {
            Some(r) => out.records.push(r),
            None => out.errors.push(format!(
                "record {i} at offset {}: unparsable",
                i * UTMP_RECORD_SIZE
            )),
        }
    }
    if rest != 0 {
        out.errors.push(format!(
            "{} bytes is not a multiple of the {UTMP_RECORD_SIZE}-byte record: \
             trailing {rest} bytes at offset {} ignored (truncated file or another layout)",
            bytes.len(),
            bytes.len() - rest
        ));
    }
    out
}

fn parse_record(r: &[u8]) -> Option<UtmpRecord> {
    let i16_at = |o: usize| Some(i16::from_ne_bytes(r.get(o..o + 2)?.try_into().ok()?));
    let i32_at = |o: usize| Some(i32::from_ne_bytes(r.get(o..o + 4)?.try_into().ok()?));
    let text = |o: usize, len: usize| -> Option<String> {
        let f = r.get(o..o + len)?;
        let end = f.iter().position(|b| *b == 0).unwrap_or(len);
        Some(String::from_utf8_lossy(&f[..end]).into_owned())
    };
    let tv_sec = i64::from(i32_at(340)?);
    let addr = r.get(348..364)?;
    let remote_address = if addr.iter().all(|b| *b == 0) {
        None
    } else if addr[4..].iter().all(|b| *b == 0) {
        // Stored in network byte order.
        Some(std::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).to_string())
    } else {
        let mut b = [0u8; 16];
        b.copy_from_slice(addr);
        Some(std::net::Ipv6Addr::from(b).to_string())
    };
    Some(UtmpRecord {
        record_type: i16_at(0)?,
        pid: i32_at(4)?,
        tty: text(8, 32)?,
        id: text(40, 4)?,
        user: text(44, 32)?,
        host: text(76, 256)?,
        session: i32_at(336)?,
        login_time_unix: tv_sec,
        login_time: rfc3339::from_unix_ns(i128::from(tv_sec) * 1_000_000_000),
        remote_address,
    })
}

#[derive(Debug, Serialize)]
struct Session {
    #[serde(flatten)]
    record: UtmpRecord,
    /// Whether the recorded pid is still running: stale entries survive crashed sessions.
    pid_alive: bool,
}

pub(super) fn collect(opts: &VolatileOptions) -> Artifact {
    let collected_at = rfc3339::now();
    let mut errors = Errors::default();
    let mut body = Map::new();
    let candidates = ["/var/run/utmp", "/run/utmp"].map(|p| under(&opts.host_root, p));
    let mut found = None;
    for path in &candidates {
        match std::fs::read(path) {
            Ok(b) => {
                found = Some((path.clone(), b));
                break;
            }
            Err(e) if super::is_gone(&e) => {}
            Err(e) => errors.push(path.display().to_string(), e),
        }
    }
    let mut sessions = Vec::new();
    match found {
        Some((path, bytes)) => {
            body.insert("source".into(), Value::String(path.display().to_string()));
            let parsed = parse_utmp(&bytes);
            for e in parsed.errors {
                errors.push(path.display().to_string(), e);
            }
            for r in parsed.records {
                if r.record_type == BOOT_TIME {
                    body.insert("boot_record_time".into(), r.login_time.clone().into());
                }
                if r.record_type == USER_PROCESS {
                    let pid_alive = opts.proc_root.join(r.pid.to_string()).exists();
                    sessions.push(Session {
                        record: r,
                        pid_alive,
                    });
                }
            }
        }
        None => {
            body.insert("source".into(), Value::Null);
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            errors.push("utmp", format!("no utmp file (tried {})", tried.join(", ")));
        }
    }
    put(&mut body, &mut errors, "sessions", sessions);
    artifact("users.json", collected_at, body, errors, true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn record(user: &str, tty: &str, host: &str, pid: i32, secs: i32, addr: [u8; 4]) -> Vec<u8> {
        let mut r = vec![0u8; UTMP_RECORD_SIZE];
        r[0..2].copy_from_slice(&USER_PROCESS.to_ne_bytes());
        r[4..8].copy_from_slice(&pid.to_ne_bytes());
        r[8..8 + tty.len()].copy_from_slice(tty.as_bytes());
        r[40..42].copy_from_slice(b"ts");
        r[44..44 + user.len()].copy_from_slice(user.as_bytes());
        r[76..76 + host.len()].copy_from_slice(host.as_bytes());
        r[336..340].copy_from_slice(&77i32.to_ne_bytes());
        r[340..344].copy_from_slice(&secs.to_ne_bytes());
        r[348..352].copy_from_slice(&addr);
        r
    }

    #[test]
    fn parses_a_user_process_record() {
        let mut bytes = record(
            "alice",
            "pts/3",
            "198.51.100.7",
            4242,
            1_700_000_000,
            [198, 51, 100, 7],
        );
        let mut boot = vec![0u8; UTMP_RECORD_SIZE];
        boot[0..2].copy_from_slice(&BOOT_TIME.to_ne_bytes());
        bytes.extend_from_slice(&boot);
        let p = parse_utmp(&bytes);
        assert!(p.errors.is_empty());
        assert_eq!(p.records.len(), 2);
        let r = &p.records[0];
        assert_eq!(r.record_type, USER_PROCESS);
        assert_eq!(
            (r.user.as_str(), r.tty.as_str(), r.pid),
            ("alice", "pts/3", 4242)
        );
        assert_eq!(r.host, "198.51.100.7");
        assert_eq!(r.id, "ts");
        assert_eq!(r.session, 77);
        assert_eq!(r.login_time.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(r.remote_address.as_deref(), Some("198.51.100.7"));
        assert_eq!(p.records[1].remote_address, None);
    }

    #[test]
    fn truncated_file_gives_an_error_not_a_panic() {
        let mut bytes = record("bob", "pts/0", "", 1, 0, [0; 4]);
        bytes.extend_from_slice(&[0u8; 100]);
        let p = parse_utmp(&bytes);
        assert_eq!(p.records.len(), 1);
        assert_eq!(p.errors.len(), 1);
        assert!(p.errors[0].contains("trailing 100 bytes"), "{:?}", p.errors);
        let p = parse_utmp(&bytes[..50]);
        assert!(p.records.is_empty());
        assert_eq!(p.errors.len(), 1);
        assert_eq!(parse_utmp(&[]), UtmpParse::default());
    }

    #[test]
    fn host_root_utmp_is_read_and_missing_one_is_an_error() {
        let root = std::env::temp_dir().join(format!("cairn-utmp-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(root.join("run")).unwrap();
        let opts = VolatileOptions {
            host_root: root.clone(),
            ..Default::default()
        };
        let doc: Value = serde_json::from_slice(&collect(&opts).bytes).unwrap();
        assert!(doc["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no utmp"));
        let me = std::process::id() as i32;
        std::fs::write(
            root.join("run/utmp"),
            record("carol", "pts/1", "h", me, 5, [0; 4]),
        )
        .unwrap();
        let a = collect(&opts);
        std::fs::remove_dir_all(&root).unwrap();
        let doc: Value = serde_json::from_slice(&a.bytes).unwrap();
        assert_eq!(doc["errors"].as_array().unwrap().len(), 0);
        assert_eq!(doc["sessions"][0]["user"], "carol");
        assert_eq!(doc["sessions"][0]["pid_alive"], true);
    }
}
