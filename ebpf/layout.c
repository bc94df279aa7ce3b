/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A host program, not a BPF one: build.rs compiles and runs it to print the layout of the
 * records in bpf/events.h (every field's offset, size and C type, every record's size, and
 * the kinds, flags and syscall numbers), from which it generates the Rust constants the
 * agent decodes by (cairn_ebpf::layout) and the _Static_asserts that check the BPF target
 * lays the records out the same way. events.h is the one source of truth: a field listed
 * here that events.h changes moves in Rust too, and one whose C type changes no longer
 * type-checks in agent/src/sensor/decode.rs.
 *
 * Output, one item a line:
 *   field STRUCT FIELD TYPE OFFSET SIZE   (TYPE: u8 u16 u32 u64 i32 i64, or array)
 *   size STRUCT SIZE
 *   const GROUP NAME VALUE
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int32_t s32;
typedef int64_t s64;

#include "bpf/events.h"

/* Arrays decay to pointers in _Generic's controlling expression: they are "array". */
#define TYPE_OF(x)                                                                        \
	_Generic((x), u8: "u8", u16: "u16", u32: "u32", u64: "u64", s32: "i32", s64: "i64", \
		 default: "array")
#define FIELD(s, f)                                                                       \
	printf("field %s %s %s %zu %zu\n", #s, #f, TYPE_OF(((struct s *)0)->f),          \
	       offsetof(struct s, f), sizeof(((struct s *)0)->f))
#define SIZE(s) printf("size %s %zu\n", #s, sizeof(struct s))
#define CONST(group, name, value) printf("const %s %s %lld\n", group, #name, (long long)(value))

int main(void)
{
	SIZE(task_info);

	SIZE(event_hdr);
	FIELD(event_hdr, kind);
	FIELD(event_hdr, flags);
	FIELD(event_hdr, ts_boot_ns);
	FIELD(event_hdr, task.start_boottime);
	FIELD(event_hdr, task.cgroup_id);
	FIELD(event_hdr, task.pid);
	FIELD(event_hdr, task.tgid);
	FIELD(event_hdr, task.ppid);
	FIELD(event_hdr, task.uid);
	FIELD(event_hdr, task.gid);
	FIELD(event_hdr, task.euid);
	FIELD(event_hdr, task.loginuid);
	FIELD(event_hdr, task.comm);

	/* Every record starts with its event_hdr (build.rs checks the offset is 0). */
	SIZE(exec_event);
	FIELD(exec_event, hdr);
	FIELD(exec_event, old_pid);
	FIELD(exec_event, args_len);
	FIELD(exec_event, cwd_len);
	FIELD(exec_event, filename);
	FIELD(exec_event, cwd);
	FIELD(exec_event, args);

	SIZE(fork_event);
	FIELD(fork_event, hdr);
	FIELD(fork_event, child_pid);

	SIZE(exit_event);
	FIELD(exit_event, hdr);
	FIELD(exit_event, exit_code);

	SIZE(sock_event);
	FIELD(sock_event, hdr);
	FIELD(sock_event, family);
	FIELD(sock_event, sport);
	FIELD(sock_event, dport);
	FIELD(sock_event, protocol);
	FIELD(sock_event, saddr);
	FIELD(sock_event, daddr);
	FIELD(sock_event, result);
	FIELD(sock_event, sock_id);

	SIZE(security_event);
	FIELD(security_event, hdr);
	FIELD(security_event, syscall);
	FIELD(security_event, args);
	FIELD(security_event, str);

	CONST("abi", CAIRN_ABI, CAIRN_ABI);

	CONST("kind", EXEC, KIND_EXEC);
	CONST("kind", FORK, KIND_FORK);
	CONST("kind", EXIT, KIND_EXIT);
	CONST("kind", CONNECT, KIND_CONNECT);
	CONST("kind", ACCEPT, KIND_ACCEPT);
	CONST("kind", CLOSE, KIND_CLOSE);
	CONST("kind", SECURITY, KIND_SECURITY);
	CONST("kind", MAX, KIND_MAX);

	CONST("flag", ARGS_TRUNCATED, FLAG_ARGS_TRUNCATED);
	CONST("flag", CWD_TRUNCATED, FLAG_CWD_TRUNCATED);
	CONST("flag", FILENAME_TRUNCATED, FLAG_FILENAME_TRUNCATED);
	CONST("flag", NO_LOGINUID, FLAG_NO_LOGINUID);

	CONST("syscall", PTRACE, SC_PTRACE);
	CONST("syscall", SETUID, SC_SETUID);
	CONST("syscall", SETGID, SC_SETGID);
	CONST("syscall", SETREUID, SC_SETREUID);
	CONST("syscall", SETREGID, SC_SETREGID);
	CONST("syscall", SETRESUID, SC_SETRESUID);
	CONST("syscall", SETRESGID, SC_SETRESGID);
	CONST("syscall", SETFSUID, SC_SETFSUID);
	CONST("syscall", SETFSGID, SC_SETFSGID);
	CONST("syscall", MEMFD_CREATE, SC_MEMFD_CREATE);
	CONST("syscall", INIT_MODULE, SC_INIT_MODULE);
	CONST("syscall", FINIT_MODULE, SC_FINIT_MODULE);
	CONST("syscall", BPF_PROG_LOAD, SC_BPF_PROG_LOAD);
	return 0;
}
