//! Records from the ring buffer, decoded by offset. The layouts are `ebpf/bpf/events.h`, whose
//! `_Static_assert`s pin the offsets used here.

use cairn_ebpf::kind;

/// `struct task_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTask {
    pub start_boottime_ns: u64,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub loginuid: u32,
    pub comm: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHeader {
    pub kind: u32,
    pub flags: u32,
    pub ts_boot_ns: u64,
    pub task: RawTask,
}

pub const FLAG_ARGS_TRUNCATED: u32 = 1;
pub const FLAG_CWD_TRUNCATED: u32 = 1 << 1;
pub const FLAG_FILENAME_TRUNCATED: u32 = 1 << 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSocket {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub result: i64,
    pub sock_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawBody {
    Exec {
        old_pid: u32,
        filename: String,
        /// Path components, innermost first.
        cwd_components: Vec<String>,
        args: Vec<String>,
    },
    Fork {
        child_pid: u32,
    },
    Exit {
        exit_code: i32,
    },
    Connect(RawSocket),
    Accept(RawSocket),
    Close(RawSocket),
    Security {
        syscall: u32,
        args: [u64; 4],
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub hdr: RawHeader,
    pub body: RawBody,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its kind ({kind}) needs ({need})")]
    Short { kind: u32, len: usize, need: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

const HDR: usize = 80;
const EXEC_FILENAME: usize = 96;
const EXEC_CWD: usize = 352;
const EXEC_ARGS: usize = 1376;
const SOCK_SIZE: usize = 136;
const SECURITY_SIZE: usize = 184;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u16(&self, at: usize) -> u16 {
        let mut b = [0u8; 2];
        if let Some(s) = self.0.get(at..at + 2) {
            b.copy_from_slice(s);
        }
        u16::from_le_bytes(b)
    }
    fn u32(&self, at: usize) -> u32 {
        let mut b = [0u8; 4];
        if let Some(s) = self.0.get(at..at + 4) {
            b.copy_from_slice(s);
        }
        u32::from_le_bytes(b)
    }
    fn u64(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        if let Some(s) = self.0.get(at..at + 8) {
            b.copy_from_slice(s);
        }
        u64::from_le_bytes(b)
    }
    fn arr16(&self, at: usize) -> [u8; 16] {
        let mut b = [0u8; 16];
        if let Some(s) = self.0.get(at..at + 16) {
            b.copy_from_slice(s);
        }
        b
    }
    /// A NUL-terminated string inside `at..at+max`.
    fn cstr(&self, at: usize, max: usize) -> String {
        let end = (at + max).min(self.0.len());
        let s = self.0.get(at..end).unwrap_or_default();
        let s = s.split(|b| *b == 0).next().unwrap_or_default();
        String::from_utf8_lossy(s).into_owned()
    }
    /// NUL-separated strings in `at..at+len` (a trailing NUL ends the last one).
    fn strings(&self, at: usize, len: usize) -> Vec<String> {
        let end = (at + len).min(self.0.len());
        let mut s = self.0.get(at..end).unwrap_or_default();
        if let Some(stripped) = s.strip_suffix(&[0]) {
            s = stripped;
        }
        if s.is_empty() {
            return Vec::new();
        }
        s.split(|b| *b == 0)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }
}

fn need(kind: u32, len: usize, need: usize) -> Result<(), DecodeError> {
    if len < need {
        return Err(DecodeError::Short { kind, len, need });
    }
    Ok(())
}

fn socket(b: &Bytes<'_>) -> RawSocket {
    RawSocket {
        family: b.u16(80),
        sport: b.u16(82),
        dport: b.u16(84),
        protocol: b.u16(86),
        saddr: b.arr16(88),
        daddr: b.arr16(104),
        result: b.u64(120) as i64,
        sock_id: b.u64(128),
    }
}

/// Decodes one ring buffer record.
pub fn decode(data: &[u8]) -> Result<RawEvent, DecodeError> {
    let b = Bytes(data);
    let kind = b.u32(0);
    need(kind, data.len(), HDR)?;
    let hdr = RawHeader {
        kind,
        flags: b.u32(4),
        ts_boot_ns: b.u64(8),
        task: RawTask {
            start_boottime_ns: b.u64(16),
            cgroup_id: b.u64(24),
            pid: b.u32(32),
            tgid: b.u32(36),
            ppid: b.u32(40),
            uid: b.u32(44),
            gid: b.u32(48),
            euid: b.u32(52),
            loginuid: b.u32(56),
            comm: b.cstr(64, 16),
        },
    };
    let body = match kind {
        kind::EXEC => {
            need(kind, data.len(), EXEC_ARGS)?;
            let args_len = b.u32(84) as usize;
            let cwd_len = (b.u32(88) as usize).min(EXEC_ARGS - EXEC_CWD);
            RawBody::Exec {
                old_pid: b.u32(80),
                filename: b.cstr(EXEC_FILENAME, EXEC_CWD - EXEC_FILENAME),
                cwd_components: b.strings(EXEC_CWD, cwd_len),
                args: b.strings(EXEC_ARGS, args_len),
            }
        }
        kind::FORK => {
            need(kind, data.len(), 88)?;
            RawBody::Fork {
                child_pid: b.u32(80),
            }
        }
        kind::EXIT => {
            need(kind, data.len(), 88)?;
            RawBody::Exit {
                exit_code: b.u32(80) as i32,
            }
        }
        kind::CONNECT | kind::ACCEPT | kind::CLOSE => {
            need(kind, data.len(), SOCK_SIZE)?;
            let s = socket(&b);
            match kind {
                kind::CONNECT => RawBody::Connect(s),
                kind::ACCEPT => RawBody::Accept(s),
                _ => RawBody::Close(s),
            }
        }
        kind::SECURITY => {
            need(kind, data.len(), SECURITY_SIZE)?;
            RawBody::Security {
                syscall: b.u32(80),
                args: [b.u64(88), b.u64(96), b.u64(104), b.u64(112)],
                text: b.cstr(120, 64),
            }
        }
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(RawEvent { hdr, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u32, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        v[0..4].copy_from_slice(&kind.to_le_bytes());
        v[36..40].copy_from_slice(&42u32.to_le_bytes());
        v[64..68].copy_from_slice(b"true");
        v
    }

    #[test]
    fn decodes_exec_argv_and_cwd() {
        let mut v = header(kind::EXEC, EXEC_ARGS + 16);
        let args = b"/bin/true\0a\0b c\0";
        v[84..88].copy_from_slice(&(args.len() as u32).to_le_bytes());
        let cwd = b"tmp\0work\0";
        v[88..92].copy_from_slice(&(cwd.len() as u32).to_le_bytes());
        v[EXEC_FILENAME..EXEC_FILENAME + 9].copy_from_slice(b"/bin/true");
        v[EXEC_CWD..EXEC_CWD + cwd.len()].copy_from_slice(cwd);
        v[EXEC_ARGS..EXEC_ARGS + args.len()].copy_from_slice(args);
        let e = decode(&v).unwrap();
        assert_eq!(e.hdr.task.tgid, 42);
        assert_eq!(e.hdr.task.comm, "true");
        assert_eq!(
            e.body,
            RawBody::Exec {
                old_pid: 0,
                filename: "/bin/true".into(),
                cwd_components: vec!["tmp".into(), "work".into()],
                args: vec!["/bin/true".into(), "a".into(), "b c".into()],
            }
        );
    }

    #[test]
    fn short_and_unknown_records_are_errors_not_panics() {
        assert!(matches!(
            decode(&header(kind::EXEC, 100)),
            Err(DecodeError::Short { .. })
        ));
        assert!(decode(&[1, 0]).is_err());
        assert_eq!(decode(&header(99, 200)), Err(DecodeError::UnknownKind(99)));
        // An args_len beyond the record is clipped, not trusted.
        let mut v = header(kind::EXEC, EXEC_ARGS + 4);
        v[84..88].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&v).is_ok());
    }
}
