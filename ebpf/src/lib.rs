//! Kernel-side programs of the cairn sensor, compiled from C (CO-RE) by `build.rs` and embedded.
//!
//! `bpf/cairn.bpf.c` holds every program (tracepoints only); `bpf/events.h` is the layout of the
//! records they write into the ring buffer, which the agent decodes; `bpf/vmlinux.h` is the small
//! subset of kernel types they read, relocated at load time against the kernel's BTF.

/// Bytes with the alignment an ELF parser expects (aya reads the object in place).
#[repr(C, align(8))]
pub struct Aligned<B: ?Sized> {
    pub bytes: B,
}

static CAIRN: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/cairn.bpf.o")),
};

/// The sensor's object: every program and map (`events`, `drops`, …) of `bpf/cairn.bpf.c`.
pub fn cairn_object() -> &'static [u8] {
    &CAIRN.bytes
}

static SELFTEST: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/selftest.bpf.o")),
};

/// The readiness self-test's probe (`bpf/selftest.bpf.c`): one tracepoint program on
/// `syscalls/sys_enter_getppid` that counts hits and writes the caller's tgid to a ring buffer.
pub fn selftest_object() -> &'static [u8] {
    &SELFTEST.bytes
}

/// The self-test probe's program, maps and tracepoint.
pub mod selftest {
    pub const PROGRAM: &str = "selftest_getppid";
    pub const HITS_MAP: &str = "selftest_hits";
    pub const RING_MAP: &str = "selftest_ring";
    pub const CATEGORY: &str = "syscalls";
    pub const TRACEPOINT: &str = "sys_enter_getppid";
}

/// Name of the ring buffer map (its size is set by the loader before load).
pub const RINGBUF_MAP: &str = "events";
/// Name of the per-CPU drop counter array, indexed by record kind.
pub const DROPS_MAP: &str = "drops";

/// Record kinds, as `enum cairn_kind` in `bpf/events.h`.
pub mod kind {
    pub const EXEC: u32 = 1;
    pub const FORK: u32 = 2;
    pub const EXIT: u32 = 3;
    pub const CONNECT: u32 = 4;
    pub const ACCEPT: u32 = 5;
    pub const CLOSE: u32 = 6;
    pub const SECURITY: u32 = 7;
    /// Size of the drop counter array.
    pub const MAX: u32 = 8;
}

/// Every tracepoint program of the object: (program name, tracepoint category, tracepoint).
pub const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_fork", "sched", "sched_process_fork"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("sys_enter_clone", "syscalls", "sys_enter_clone"),
    ("sys_enter_clone3", "syscalls", "sys_enter_clone3"),
    ("sys_enter_connect", "syscalls", "sys_enter_connect"),
    ("sys_exit_connect", "syscalls", "sys_exit_connect"),
    ("sys_exit_accept4", "syscalls", "sys_exit_accept4"),
    ("sys_exit_accept", "syscalls", "sys_exit_accept"),
    ("inet_sock_set_state", "sock", "inet_sock_set_state"),
    ("sys_enter_ptrace", "syscalls", "sys_enter_ptrace"),
    ("sys_enter_setuid", "syscalls", "sys_enter_setuid"),
    ("sys_enter_setgid", "syscalls", "sys_enter_setgid"),
    ("sys_enter_setreuid", "syscalls", "sys_enter_setreuid"),
    ("sys_enter_setregid", "syscalls", "sys_enter_setregid"),
    ("sys_enter_setresuid", "syscalls", "sys_enter_setresuid"),
    ("sys_enter_setresgid", "syscalls", "sys_enter_setresgid"),
    ("sys_enter_setfsuid", "syscalls", "sys_enter_setfsuid"),
    ("sys_enter_setfsgid", "syscalls", "sys_enter_setfsgid"),
    (
        "sys_enter_memfd_create",
        "syscalls",
        "sys_enter_memfd_create",
    ),
    ("sys_enter_init_module", "syscalls", "sys_enter_init_module"),
    (
        "sys_enter_finit_module",
        "syscalls",
        "sys_enter_finit_module",
    ),
    ("sys_enter_bpf", "syscalls", "sys_enter_bpf"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_is_an_aligned_bpf_elf() {
        let o = cairn_object();
        assert_eq!(&o[..4], b"\x7fELF");
        assert_eq!(o.as_ptr() as usize % 8, 0);
        // e_machine (offset 18, little-endian) is EM_BPF = 247.
        assert_eq!(u16::from_le_bytes([o[18], o[19]]), 247);
    }
}
