// SPDX-License-Identifier: GPL-2.0
/*
 * The readiness self-test's probe: the smallest program that proves this host can load and
 * attach a tracepoint program and use a ring buffer. Each getppid() counts a hit and writes the
 * caller's tgid into the ring buffer; the agent calls getppid() and expects to read both back.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} selftest_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} selftest_hits SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int selftest_getppid(void *ctx)
{
	__u32 key = 0;
	__u64 *hits = bpf_map_lookup_elem(&selftest_hits, &key);
	if (hits)
		__sync_fetch_and_add(hits, 1);
	__u32 *rec = bpf_ringbuf_reserve(&selftest_ring, sizeof(__u32), 0);
	if (rec) {
		*rec = bpf_get_current_pid_tgid() >> 32;
		bpf_ringbuf_submit(rec, 0);
	}
	return 0;
}
