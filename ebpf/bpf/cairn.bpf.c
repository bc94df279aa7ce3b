// SPDX-License-Identifier: GPL-2.0
/*
 * cairn's sensor: process, TCP and security-relevant events from tracepoints only (kprobes are
 * not available on every kernel). CO-RE: field offsets are relocated by the loader against the
 * running kernel's BTF.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "events.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOCK_STREAM 1
#define TCP_CLOSE 7
#define EINPROGRESS 115
#define CLONE_THREAD 0x00010000
#define BPF_PROG_LOAD 5

/* Size set by the agent before load (EbpfLoader::set_max_entries). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024);
} events SEC(".maps");

/* Wake the reader only once a sixteenth of the ring is waiting; it also polls every 100 ms.
 * Under a storm this turns a wakeup (two context switches) per event into one per batch. */
#ifndef BPF_RB_NO_WAKEUP
#define BPF_RB_NO_WAKEUP 1
#define BPF_RB_FORCE_WAKEUP 2
#define BPF_RB_AVAIL_DATA 0
#define BPF_RB_RING_SIZE 1
#endif
static __always_inline u64 wakeup_flags(void)
{
	u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	u64 size = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);
	return avail >= size / 16 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

/* Records that did not fit in the ring buffer, per kind (index = enum cairn_kind). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KIND_MAX);
	__type(key, u32);
	__type(value, u64);
} drops SEC(".maps");

/* Scratch space for exec records (too big for the 512-byte stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct exec_event);
} exec_scratch SEC(".maps");

struct connect_args {
	u64 fd;
	u16 family;
	u16 port; /* network order */
	u32 _pad;
	u8 addr[16];
};

/* connect() arguments between sys_enter and sys_exit, by thread id. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct connect_args);
} connect_inflight SEC(".maps");

/* clone flags between sys_enter_clone{,3} and sched_process_fork, by thread id. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u64);
} clone_flags SEC(".maps");

/* Who owns a TCP socket (struct sock address), filled at connect/accept, read at close. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);
	__type(value, struct task_info);
} sock_owner SEC(".maps");

static __always_inline void count_drop(u32 kind)
{
	u64 *n = bpf_map_lookup_elem(&drops, &kind);
	if (n)
		*n += 1;
}

static __always_inline void fill_task(struct task_info *t, struct task_struct *task)
{
	u64 id = bpf_get_current_pid_tgid();
	t->pid = (u32)id;
	t->tgid = id >> 32;
	t->ppid = BPF_CORE_READ(task, real_parent, tgid);
	t->uid = BPF_CORE_READ(task, cred, uid.val);
	t->gid = BPF_CORE_READ(task, cred, gid.val);
	t->euid = BPF_CORE_READ(task, cred, euid.val);
	if (bpf_core_field_exists(task->loginuid))
		t->loginuid = BPF_CORE_READ(task, loginuid.val);
	else
		t->loginuid = (u32)-1;
	t->start_boottime = BPF_CORE_READ(task, group_leader, start_boottime);
	t->cgroup_id = bpf_get_current_cgroup_id();
	t->_pad = 0;
	bpf_get_current_comm(t->comm, sizeof(t->comm));
}

static __always_inline void fill_hdr(struct event_hdr *h, u32 kind, struct task_struct *task)
{
	h->kind = kind;
	h->flags = 0;
	h->ts_boot_ns = bpf_ktime_get_boot_ns();
	fill_task(&h->task, task);
}

/* Path components of the task's working directory, innermost first, up to its root. */
static __always_inline void read_cwd(struct task_struct *task, struct exec_event *e)
{
	struct path pwd, root;
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	u32 off = 0;

	e->cwd_len = 0;
	if (!fs)
		return;
	if (BPF_CORE_READ_INTO(&pwd, fs, pwd) || BPF_CORE_READ_INTO(&root, fs, root))
		return;
	struct dentry *d = pwd.dentry;
	struct vfsmount *vm = pwd.mnt;
	struct mount *mnt = (void *)vm - bpf_core_field_offset(struct mount, mnt);
	bool done = false;

	/* Unrolled: 6.1's verifier rejects this loop's back-edge as clang lays it out. */
#pragma unroll
	for (int i = 0; i < CWD_MAX_DEPTH; i++) {
		if (d == root.dentry && vm == root.mnt) {
			done = true;
			break;
		}
		struct dentry *parent = BPF_CORE_READ(d, d_parent);
		struct dentry *mnt_root = BPF_CORE_READ(vm, mnt_root);
		if (d == mnt_root || d == parent) {
			struct mount *up = BPF_CORE_READ(mnt, mnt_parent);
			if (up == mnt || !up) {
				done = true;
				break;
			}
			d = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = up;
			vm = (void *)up + bpf_core_field_offset(struct mount, mnt);
			continue;
		}
		if (off > CWD_MAX_LEN - CWD_NAME_MAX)
			break;
		const unsigned char *name = BPF_CORE_READ(d, d_name.name);
		long n = bpf_probe_read_kernel_str(&e->cwd[off], CWD_NAME_MAX, name);
		if (n <= 0)
			break;
		off += n;
		d = parent;
	}
	if (!done)
		e->hdr.flags |= FLAG_CWD_TRUNCATED;
	e->cwd_len = off;
}

SEC("tracepoint/sched/sched_process_exec")
int sched_process_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	u32 zero = 0;
	struct exec_event *e = bpf_map_lookup_elem(&exec_scratch, &zero);
	if (!e)
		return 0;
	struct task_struct *task = (void *)bpf_get_current_task();

	fill_hdr(&e->hdr, KIND_EXEC, task);
	e->old_pid = ctx->old_pid;
	e->_pad = 0;

	unsigned int loc = ctx->__data_loc_filename & 0xFFFF;
	long n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), (void *)ctx + loc);
	if (n == sizeof(e->filename))
		e->hdr.flags |= FLAG_FILENAME_TRUNCATED;
	if (n < 0)
		e->filename[0] = 0;

	read_cwd(task, e);

	unsigned long start = BPF_CORE_READ(task, mm, arg_start);
	unsigned long end = BPF_CORE_READ(task, mm, arg_end);
	u64 len = end > start ? end - start : 0;
	if (len > ARGS_MAX_LEN - 1) {
		len = ARGS_MAX_LEN - 1;
		e->hdr.flags |= FLAG_ARGS_TRUNCATED;
	}
	len &= ARGS_MAX_LEN - 1;
	if (len && bpf_probe_read_user(e->args, len, (void *)start))
		len = 0;
	e->args_len = len;

	u64 size = offsetof(struct exec_event, args) + len;
	if (size > sizeof(*e))
		return 0;
	if (bpf_ringbuf_output(&events, e, size, wakeup_flags()))
		count_drop(KIND_EXEC);
	return 0;
}

static __always_inline void stash_clone_flags(u64 flags)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&clone_flags, &tid, &flags, BPF_ANY);
}

SEC("tracepoint/syscalls/sys_enter_clone")
int sys_enter_clone(struct trace_event_raw_sys_enter *ctx)
{
	stash_clone_flags(ctx->args[0]);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_clone3")
int sys_enter_clone3(struct trace_event_raw_sys_enter *ctx)
{
	u64 flags = 0; /* struct clone_args starts with u64 flags */
	bpf_probe_read_user(&flags, sizeof(flags), (void *)ctx->args[0]);
	stash_clone_flags(flags);
	return 0;
}

SEC("tracepoint/sched/sched_process_fork")
int sched_process_fork(struct trace_event_raw_sched_process_fork *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 *flags = bpf_map_lookup_elem(&clone_flags, &tid);
	if (flags) {
		u64 f = *flags;
		bpf_map_delete_elem(&clone_flags, &tid);
		if (f & CLONE_THREAD)
			return 0; /* a thread, not a process */
	}
	struct fork_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop(KIND_FORK);
		return 0;
	}
	fill_hdr(&e->hdr, KIND_FORK, (void *)bpf_get_current_task());
	e->child_pid = ctx->child_pid;
	e->_pad = 0;
	bpf_ringbuf_submit(e, wakeup_flags());
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int sched_process_exit(void *ctx)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	/* signal->live drops to 0 in do_exit() before this tracepoint, for the last thread of the
	 * group only: one record per process, whichever thread ends last. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	struct exit_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop(KIND_EXIT);
		return 0;
	}
	fill_hdr(&e->hdr, KIND_EXIT, task);
	e->exit_code = BPF_CORE_READ(task, exit_code);
	e->_pad = 0;
	bpf_ringbuf_submit(e, wakeup_flags());
	return 0;
}

/* fd -> file -> socket -> sock, in the current task's file table. */
static __always_inline struct sock *sock_from_fd(struct task_struct *task, u64 fd)
{
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return NULL;
	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return NULL;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	if (!sock || BPF_CORE_READ(sock, file) != f)
		return NULL;
	return BPF_CORE_READ(sock, sk);
}

static __always_inline bool is_tcp(struct sock *sk)
{
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	return (family == AF_INET || family == AF_INET6) &&
	       BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP && BPF_CORE_READ(sk, sk_type) == SOCK_STREAM;
}

static __always_inline void tuple_from_sock(struct sock_event *e, struct sock *sk)
{
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->protocol = IPPROTO_TCP;
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	/* bpf_core_read with explicit sizes: the destinations are byte arrays */
	if (e->family == AF_INET) {
		bpf_core_read(e->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(e->daddr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
}

SEC("tracepoint/syscalls/sys_enter_connect")
int sys_enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	struct connect_args a = {};
	void *uaddr = (void *)ctx->args[1];
	a.fd = ctx->args[0];
	if (bpf_probe_read_user(&a.family, sizeof(a.family), uaddr))
		return 0;
	if (a.family == AF_INET) {
		bpf_probe_read_user(&a.port, sizeof(a.port), uaddr + 2);
		bpf_probe_read_user(a.addr, 4, uaddr + 4);
	} else if (a.family == AF_INET6) {
		bpf_probe_read_user(&a.port, sizeof(a.port), uaddr + 2);
		bpf_probe_read_user(a.addr, 16, uaddr + 8);
	} else {
		return 0;
	}
	u32 tid = (u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&connect_inflight, &tid, &a, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int sys_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct connect_args *ap = bpf_map_lookup_elem(&connect_inflight, &tid);
	if (!ap)
		return 0;
	struct connect_args a = *ap;
	bpf_map_delete_elem(&connect_inflight, &tid);

	struct task_struct *task = (void *)bpf_get_current_task();
	struct sock *sk = sock_from_fd(task, a.fd);
	if (!sk || !is_tcp(sk))
		return 0;
	long ret = ctx->ret;

	struct sock_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop(KIND_CONNECT);
	} else {
		fill_hdr(&e->hdr, KIND_CONNECT, task);
		tuple_from_sock(e, sk);
		/* The remote end as asked: after a failed connect the socket no longer holds it. */
		e->family = a.family;
		e->dport = bpf_ntohs(a.port);
		__builtin_memcpy(e->daddr, a.addr, sizeof(e->daddr));
		e->result = ret;
		e->sock_id = (u64)sk;
		if (ret == 0 || ret == -EINPROGRESS) {
			u64 key = (u64)sk;
			/* Kernels before 6.2 refuse ring-buffer memory as a map value: copy it first. */
			struct task_info owner = e->hdr.task;
			bpf_map_update_elem(&sock_owner, &key, &owner, BPF_ANY);
		}
		bpf_ringbuf_submit(e, wakeup_flags());
		return 0;
	}
	if (ret == 0 || ret == -EINPROGRESS) {
		struct task_info t;
		fill_task(&t, task);
		u64 key = (u64)sk;
		bpf_map_update_elem(&sock_owner, &key, &t, BPF_ANY);
	}
	return 0;
}

static __always_inline int on_accept(struct trace_event_raw_sys_exit *ctx)
{
	long fd = ctx->ret;
	if (fd < 0)
		return 0;
	struct task_struct *task = (void *)bpf_get_current_task();
	struct sock *sk = sock_from_fd(task, fd);
	if (!sk || !is_tcp(sk))
		return 0;
	u64 key = (u64)sk;
	struct sock_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop(KIND_ACCEPT);
		struct task_info t;
		fill_task(&t, task);
		bpf_map_update_elem(&sock_owner, &key, &t, BPF_ANY);
		return 0;
	}
	fill_hdr(&e->hdr, KIND_ACCEPT, task);
	tuple_from_sock(e, sk);
	e->result = fd;
	e->sock_id = key;
	/* Kernels before 6.2 refuse ring-buffer memory as a map value: copy it first. */
	struct task_info owner = e->hdr.task;
	bpf_map_update_elem(&sock_owner, &key, &owner, BPF_ANY);
	bpf_ringbuf_submit(e, wakeup_flags());
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int sys_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int sys_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx);
}

/* Runs in softirq for many transitions: the current task is not the owner. */
SEC("tracepoint/sock/inet_sock_set_state")
int inet_sock_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->newstate != TCP_CLOSE || ctx->protocol != IPPROTO_TCP)
		return 0;
	u64 key = (u64)ctx->skaddr;
	struct task_info *owner = bpf_map_lookup_elem(&sock_owner, &key);
	if (!owner)
		return 0; /* not seen at connect/accept (older than the sensor, or a listener) */
	struct sock_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop(KIND_CLOSE);
		bpf_map_delete_elem(&sock_owner, &key);
		return 0;
	}
	e->hdr.kind = KIND_CLOSE;
	e->hdr.flags = 0;
	e->hdr.ts_boot_ns = bpf_ktime_get_boot_ns();
	e->hdr.task = *owner;
	e->family = ctx->family;
	e->protocol = IPPROTO_TCP;
	e->sport = ctx->sport;
	e->dport = ctx->dport;
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	if (ctx->family == AF_INET) {
		/* ctx arrays at relocated offsets: copy them with a helper, not a ctx load */
		bpf_probe_read_kernel(e->saddr, 4, ctx->saddr);
		bpf_probe_read_kernel(e->daddr, 4, ctx->daddr);
	} else {
		bpf_probe_read_kernel(e->saddr, 16, ctx->saddr_v6);
		bpf_probe_read_kernel(e->daddr, 16, ctx->daddr_v6);
	}
	e->result = ctx->oldstate;
	e->sock_id = key;
	bpf_map_delete_elem(&sock_owner, &key);
	bpf_ringbuf_submit(e, wakeup_flags());
	return 0;
}

static __always_inline int security_call(struct trace_event_raw_sys_enter *ctx, u32 which)
{
	if (which == SC_BPF_PROG_LOAD && ctx->args[0] != BPF_PROG_LOAD)
		return 0;
	struct security_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop(KIND_SECURITY);
		return 0;
	}
	fill_hdr(&e->hdr, KIND_SECURITY, (void *)bpf_get_current_task());
	e->syscall = which;
	e->_pad = 0;
	bpf_probe_read_kernel(e->args, sizeof(e->args), ctx->args);
	e->str[0] = 0;
	const char *s = NULL;
	if (which == SC_MEMFD_CREATE)
		s = (const char *)ctx->args[0];
	else if (which == SC_INIT_MODULE)
		s = (const char *)ctx->args[2];
	else if (which == SC_FINIT_MODULE)
		s = (const char *)ctx->args[1];
	if (s && bpf_probe_read_user_str(e->str, sizeof(e->str), s) < 0)
		e->str[0] = 0;
	bpf_ringbuf_submit(e, wakeup_flags());
	return 0;
}

#define SECURITY_CALL(name, which)                                                                 \
	SEC("tracepoint/syscalls/sys_enter_" #name)                                                \
	int sys_enter_##name(struct trace_event_raw_sys_enter *ctx)                                \
	{                                                                                          \
		return security_call(ctx, which);                                                  \
	}

SECURITY_CALL(ptrace, SC_PTRACE)
SECURITY_CALL(setuid, SC_SETUID)
SECURITY_CALL(setgid, SC_SETGID)
SECURITY_CALL(setreuid, SC_SETREUID)
SECURITY_CALL(setregid, SC_SETREGID)
SECURITY_CALL(setresuid, SC_SETRESUID)
SECURITY_CALL(setresgid, SC_SETRESGID)
SECURITY_CALL(setfsuid, SC_SETFSUID)
SECURITY_CALL(setfsgid, SC_SETFSGID)
SECURITY_CALL(memfd_create, SC_MEMFD_CREATE)
SECURITY_CALL(init_module, SC_INIT_MODULE)
SECURITY_CALL(finit_module, SC_FINIT_MODULE)
SECURITY_CALL(bpf, SC_BPF_PROG_LOAD)
