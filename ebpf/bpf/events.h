/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The records cairn's programs write into the ring buffer, and the one source of their layout:
 * build.rs compiles ../layout.c on the host to print every field's offset, size and type, and
 * generates from it the Rust constants the agent decodes by (cairn_ebpf::layout, used in
 * agent/src/sensor/decode.rs) and _Static_asserts that the BPF target agrees. A new field must
 * be listed in layout.c to be decoded; bump CAIRN_ABI when a layout changes.
 * All integers are little-endian (x86_64, arm64), naturally aligned, with explicit padding.
 */
#ifndef __CAIRN_EVENTS_H__
#define __CAIRN_EVENTS_H__

#define CAIRN_ABI 1

enum cairn_kind {
	KIND_EXEC = 1,
	KIND_FORK = 2,
	KIND_EXIT = 3,
	KIND_CONNECT = 4,
	KIND_ACCEPT = 5,
	KIND_CLOSE = 6,
	KIND_SECURITY = 7,
	KIND_MAX = 8, /* size of the drop counter array */
};

/* hdr.flags */
#define FLAG_ARGS_TRUNCATED (1u << 0)
#define FLAG_CWD_TRUNCATED (1u << 1)
#define FLAG_FILENAME_TRUNCATED (1u << 2)
#define FLAG_NO_LOGINUID (1u << 3)

/* The task an event belongs to: 64 bytes. */
struct task_info {
	u64 start_boottime; /* ns since boot, of the thread group leader */
	u64 cgroup_id;      /* cgroup v2 id (inode number of the cgroup directory) */
	u32 pid;            /* kernel pid = thread id */
	u32 tgid;           /* process id */
	u32 ppid;           /* real parent's tgid */
	u32 uid;
	u32 gid;
	u32 euid;
	u32 loginuid; /* (u32)-1 when unset */
	u32 _pad;
	char comm[16];
};

/* 80 bytes */
struct event_hdr {
	u32 kind;
	u32 flags;
	u64 ts_boot_ns;
	struct task_info task;
};

#define FILENAME_MAX_LEN 256
#define CWD_MAX_LEN 1024
#define CWD_NAME_MAX 256
#define CWD_MAX_DEPTH 32
#define ARGS_MAX_LEN 4096

struct exec_event {
	struct event_hdr hdr;
	u32 old_pid;
	u32 args_len; /* bytes used in args: NUL-separated argv */
	u32 cwd_len;  /* bytes used in cwd: NUL-terminated path components, innermost first */
	u32 _pad;
	char filename[FILENAME_MAX_LEN];
	char cwd[CWD_MAX_LEN];
	char args[ARGS_MAX_LEN]; /* last: the record is cut after args_len bytes */
};

struct fork_event {
	struct event_hdr hdr; /* the parent */
	u32 child_pid;
	u32 _pad;
};

struct exit_event {
	struct event_hdr hdr;
	s32 exit_code; /* task->exit_code: (status << 8) | signal */
	u32 _pad;
};

struct sock_event {
	struct event_hdr hdr; /* for close: the owner recorded at connect/accept */
	u16 family;
	u16 sport; /* host order, local */
	u16 dport; /* host order, remote */
	u16 protocol;
	u8 saddr[16]; /* local; IPv4 in the first 4 bytes */
	u8 daddr[16]; /* remote */
	s64 result;   /* connect: return value; accept: new fd; close: previous TCP state */
	u64 sock_id;  /* kernel address of struct sock, to pair connect/accept with close */
};

enum cairn_syscall {
	SC_PTRACE = 1,
	SC_SETUID,
	SC_SETGID,
	SC_SETREUID,
	SC_SETREGID,
	SC_SETRESUID,
	SC_SETRESGID,
	SC_SETFSUID,
	SC_SETFSGID,
	SC_MEMFD_CREATE,
	SC_INIT_MODULE,
	SC_FINIT_MODULE,
	SC_BPF_PROG_LOAD,
};

#define SEC_STR_LEN 64

struct security_event {
	struct event_hdr hdr;
	u32 syscall; /* enum cairn_syscall */
	u32 _pad;
	u64 args[4];
	char str[SEC_STR_LEN]; /* memfd_create name, module parameters */
};

#endif /* __CAIRN_EVENTS_H__ */
