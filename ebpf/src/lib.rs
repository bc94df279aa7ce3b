//! Kernel-side programs of the cairn agent, compiled from C by `build.rs` and embedded.
//!
//! `bpf/cairn.bpf.c` holds the sensor's programs (tracepoints only, CO-RE);
//! `bpf/isolation.bpf.c` the container isolation's `cgroup_skb` programs; `bpf/events.h` is the layout of the
//! records they write into the ring buffer, which the agent decodes by the offsets [`layout`]
//! generates from it; `bpf/vmlinux.h` is the small subset of kernel types they read, relocated
//! at load time against the kernel's BTF.

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

static ISOLATION: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/isolation.bpf.o")),
};

/// Container isolation (`bpf/isolation.bpf.c`): `cgroup_skb` ingress and egress programs that
/// drop every packet of a cgroup except loopback and an allow-list, while `enforce` is set.
pub fn isolation_object() -> &'static [u8] {
    &ISOLATION.bytes
}

/// The isolation object's programs and maps, and the layout of its map values.
pub mod isolation {
    pub const EGRESS: &str = "isolation_egress";
    pub const INGRESS: &str = "isolation_ingress";
    /// `struct allow_entry[MAX_ALLOW]`.
    pub const ALLOW_MAP: &str = "isolation_allow";
    /// `struct isolation_config[1]`: `enforce`, `count`.
    pub const CONFIG_MAP: &str = "isolation_config";
    /// `u64[2]`: packets dropped on egress, on ingress.
    pub const DROPPED_MAP: &str = "isolation_dropped";
    /// Slots of the allow map (the protocol's `MAX_ALLOW`).
    pub const MAX_ALLOW: u32 = 64;
    /// Bytes of one `struct allow_entry`: family u8, proto u8, port u16 (host order), then
    /// addr and mask as four 32-bit words each in network order.
    pub const ALLOW_ENTRY_SIZE: usize = 36;
}

/// Name of the ring buffer map (its size is set by the loader before load).
pub const RINGBUF_MAP: &str = "events";
/// Name of the per-CPU drop counter array, indexed by record kind.
pub const DROPS_MAP: &str = "drops";

/// Record kinds, as `enum cairn_kind` in `bpf/events.h`.
pub use layout::kind;

/// The records of `bpf/events.h`, generated from it by `build.rs` (which compiles and runs
/// `layout.c` on the host, then checks the same layout on the BPF target): one module per
/// record with its `SIZE` and the offset of each field, typed by its C type so that a decoder
/// reading a `u16` where the C field became a `u32` does not compile; and the kinds
/// ([`kind`]), header flags (`flag`) and security syscalls (`syscall`).
pub mod layout {
    /// A `u8` at this offset of the record.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct U8(pub usize);
    /// A little-endian `u16` at this offset.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct U16(pub usize);
    /// A little-endian `u32` at this offset.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct U32(pub usize);
    /// A little-endian `u64` at this offset.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct U64(pub usize);
    /// A little-endian `s32` at this offset.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct I32(pub usize);
    /// A little-endian `s64` at this offset.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct I64(pub usize);
    /// An array (a string, an address, arguments) of `len` bytes at `offset`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Array {
        pub offset: usize,
        pub len: usize,
    }

    include!(concat!(env!("OUT_DIR"), "/layout.rs"));

    // What the decoder relies on beyond single offsets, checked as this crate compiles: each
    // record's body follows the header, and the exec record ends with its argv (the program
    // cuts it after the bytes used).
    const _: () = {
        assert!(exec_event::OLD_PID.0 == event_hdr::SIZE);
        assert!(fork_event::CHILD_PID.0 == event_hdr::SIZE);
        assert!(exit_event::EXIT_CODE.0 == event_hdr::SIZE);
        assert!(sock_event::FAMILY.0 == event_hdr::SIZE);
        assert!(security_event::SYSCALL.0 == event_hdr::SIZE);
        assert!(exec_event::ARGS.offset + exec_event::ARGS.len == exec_event::SIZE);
        assert!(kind::MAX == kind::SECURITY + 1);
    };
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
