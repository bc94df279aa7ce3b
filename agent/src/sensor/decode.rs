//! Records from the ring buffer, decoded by offset. The offsets are those of
//! `ebpf/bpf/events.h`, generated from it at build time ([`cairn_ebpf::layout`]) and typed by
//! the C field's type: a field whose type changes in the header no longer compiles here.

use cairn_ebpf::kind;
use cairn_ebpf::layout::{
    event_hdr as hdr, exec_event as exec, exit_event as exit, flag, fork_event as fork,
    security_event as security, sock_event as sock, Array, I32, I64, U16, U32, U64,
};

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

pub const FLAG_ARGS_TRUNCATED: u32 = flag::ARGS_TRUNCATED;
pub const FLAG_CWD_TRUNCATED: u32 = flag::CWD_TRUNCATED;
pub const FLAG_FILENAME_TRUNCATED: u32 = flag::FILENAME_TRUNCATED;

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

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    /// `N` bytes at `at`, zeros past the end of the record.
    fn le<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut b = [0u8; N];
        if let Some(s) = self.0.get(at..at + N) {
            b.copy_from_slice(s);
        }
        b
    }
    fn u16(&self, f: U16) -> u16 {
        u16::from_le_bytes(self.le(f.0))
    }
    fn u32(&self, f: U32) -> u32 {
        u32::from_le_bytes(self.le(f.0))
    }
    fn u64(&self, f: U64) -> u64 {
        u64::from_le_bytes(self.le(f.0))
    }
    fn i32(&self, f: I32) -> i32 {
        i32::from_le_bytes(self.le(f.0))
    }
    fn i64(&self, f: I64) -> i64 {
        i64::from_le_bytes(self.le(f.0))
    }
    /// An array of exactly `N` bytes (an address).
    fn array<const N: usize>(&self, f: Array) -> [u8; N] {
        debug_assert_eq!(f.len, N);
        self.le(f.offset)
    }
    /// The array's little-endian `u64`s (arguments).
    fn u64s<const N: usize>(&self, f: Array) -> [u64; N] {
        debug_assert_eq!(f.len, N * 8);
        std::array::from_fn(|i| u64::from_le_bytes(self.le(f.offset + i * 8)))
    }
    /// A NUL-terminated string inside the array.
    fn cstr(&self, f: Array) -> String {
        let end = (f.offset + f.len).min(self.0.len());
        let s = self.0.get(f.offset..end).unwrap_or_default();
        let s = s.split(|b| *b == 0).next().unwrap_or_default();
        String::from_utf8_lossy(s).into_owned()
    }
    /// NUL-separated strings in the first `used` bytes of the array (a trailing NUL ends the
    /// last one); `used` is clipped to the array.
    fn strings(&self, f: Array, used: usize) -> Vec<String> {
        let at = f.offset;
        let end = (at + used.min(f.len)).min(self.0.len());
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
        family: b.u16(sock::FAMILY),
        sport: b.u16(sock::SPORT),
        dport: b.u16(sock::DPORT),
        protocol: b.u16(sock::PROTOCOL),
        saddr: b.array(sock::SADDR),
        daddr: b.array(sock::DADDR),
        result: b.i64(sock::RESULT),
        sock_id: b.u64(sock::SOCK_ID),
    }
}

/// Decodes one ring buffer record.
pub fn decode(data: &[u8]) -> Result<RawEvent, DecodeError> {
    let b = Bytes(data);
    let kind = b.u32(hdr::KIND);
    need(kind, data.len(), hdr::SIZE)?;
    let hdr = RawHeader {
        kind,
        flags: b.u32(hdr::FLAGS),
        ts_boot_ns: b.u64(hdr::TS_BOOT_NS),
        task: RawTask {
            start_boottime_ns: b.u64(hdr::TASK_START_BOOTTIME),
            cgroup_id: b.u64(hdr::TASK_CGROUP_ID),
            pid: b.u32(hdr::TASK_PID),
            tgid: b.u32(hdr::TASK_TGID),
            ppid: b.u32(hdr::TASK_PPID),
            uid: b.u32(hdr::TASK_UID),
            gid: b.u32(hdr::TASK_GID),
            euid: b.u32(hdr::TASK_EUID),
            loginuid: b.u32(hdr::TASK_LOGINUID),
            comm: b.cstr(hdr::TASK_COMM),
        },
    };
    let body = match kind {
        kind::EXEC => {
            // The record is cut after the argv bytes used.
            need(kind, data.len(), exec::ARGS.offset)?;
            RawBody::Exec {
                old_pid: b.u32(exec::OLD_PID),
                filename: b.cstr(exec::FILENAME),
                cwd_components: b.strings(exec::CWD, b.u32(exec::CWD_LEN) as usize),
                args: b.strings(exec::ARGS, b.u32(exec::ARGS_LEN) as usize),
            }
        }
        kind::FORK => {
            need(kind, data.len(), fork::SIZE)?;
            RawBody::Fork {
                child_pid: b.u32(fork::CHILD_PID),
            }
        }
        kind::EXIT => {
            need(kind, data.len(), exit::SIZE)?;
            RawBody::Exit {
                exit_code: b.i32(exit::EXIT_CODE),
            }
        }
        kind::CONNECT | kind::ACCEPT | kind::CLOSE => {
            need(kind, data.len(), sock::SIZE)?;
            let s = socket(&b);
            match kind {
                kind::CONNECT => RawBody::Connect(s),
                kind::ACCEPT => RawBody::Accept(s),
                _ => RawBody::Close(s),
            }
        }
        kind::SECURITY => {
            need(kind, data.len(), security::SIZE)?;
            RawBody::Security {
                syscall: b.u32(security::SYSCALL),
                args: b.u64s(security::ARGS),
                text: b.cstr(security::STR),
            }
        }
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(RawEvent { hdr, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(v: &mut [u8], at: usize, bytes: &[u8]) {
        v[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn header(kind: u32, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        put(&mut v, hdr::KIND.0, &kind.to_le_bytes());
        put(&mut v, hdr::TASK_TGID.0, &42u32.to_le_bytes());
        put(&mut v, hdr::TASK_COMM.offset, b"true");
        v
    }

    #[test]
    fn decodes_exec_argv_and_cwd() {
        let mut v = header(kind::EXEC, exec::ARGS.offset + 16);
        let args = b"/bin/true\0a\0b c\0";
        put(&mut v, exec::ARGS_LEN.0, &(args.len() as u32).to_le_bytes());
        let cwd = b"tmp\0work\0";
        put(&mut v, exec::CWD_LEN.0, &(cwd.len() as u32).to_le_bytes());
        put(&mut v, exec::FILENAME.offset, b"/bin/true");
        put(&mut v, exec::CWD.offset, cwd);
        put(&mut v, exec::ARGS.offset, args);
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
        let mut v = header(kind::EXEC, exec::ARGS.offset + 4);
        put(&mut v, exec::ARGS_LEN.0, &u32::MAX.to_le_bytes());
        put(&mut v, exec::CWD_LEN.0, &u32::MAX.to_le_bytes());
        assert!(decode(&v).is_ok());
    }

    #[test]
    fn decodes_sockets_exits_and_security_calls() {
        let mut v = header(kind::CONNECT, sock::SIZE);
        put(&mut v, sock::FAMILY.0, &2u16.to_le_bytes());
        put(&mut v, sock::DPORT.0, &443u16.to_le_bytes());
        put(&mut v, sock::DADDR.offset, &[10, 0, 0, 1]);
        put(&mut v, sock::RESULT.0, &(-115i64).to_le_bytes());
        put(&mut v, sock::SOCK_ID.0, &7u64.to_le_bytes());
        let RawBody::Connect(s) = decode(&v).unwrap().body else {
            panic!("not a connect")
        };
        assert_eq!((s.family, s.dport, s.result, s.sock_id), (2, 443, -115, 7));
        assert_eq!(&s.daddr[..4], &[10, 0, 0, 1]);

        let mut v = header(kind::EXIT, exit::SIZE);
        put(&mut v, exit::EXIT_CODE.0, &(-1i32).to_le_bytes());
        assert_eq!(decode(&v).unwrap().body, RawBody::Exit { exit_code: -1 });

        let mut v = header(kind::SECURITY, security::SIZE);
        put(&mut v, security::SYSCALL.0, &1u32.to_le_bytes());
        put(&mut v, security::ARGS.offset + 24, &9u64.to_le_bytes());
        put(&mut v, security::STR.offset, b"name\0junk");
        assert_eq!(
            decode(&v).unwrap().body,
            RawBody::Security {
                syscall: 1,
                args: [0, 0, 0, 9],
                text: "name".into()
            }
        );
    }
}
