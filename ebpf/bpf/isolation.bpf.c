// SPDX-License-Identifier: GPL-2.0
/*
 * Container isolation: cgroup_skb programs attached (ingress and egress) to one container's
 * cgroup v2 directory. They see every packet of every socket in that cgroup subtree, whatever
 * the CNI and whatever network namespace the container is in, and nothing of other cgroups.
 *
 * A packet passes when it is on loopback (ifindex 1 in every network namespace) or when its
 * remote address (egress: destination, ingress: source) matches an allow entry; everything
 * else is dropped and counted. `config.enforce == 0` lets everything pass: release clears it
 * first (one map update), so the programs stop cutting before they are detached.
 *
 * Not CO-RE: only the UAPI context (`struct __sk_buff`, stable) and packet bytes are read.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

/* Must match MAX_ALLOW in cairn-protocol's containment module. */
#define MAX_ALLOW 64

/*
 * The start of the UAPI `struct __sk_buff` (linux/bpf.h), up to the fields read here: the
 * verifier checks context accesses by offset, so a prefix of the real layout is enough.
 */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
};

/*
 * One allow entry, written by the agent (`agent/src/containment/cgroup.rs`, `encode`):
 * addresses and masks in network byte order, an IPv4 address in word 0. The agent masks the
 * address, so a match is (remote & mask) == addr on every word.
 */
struct allow_entry {
	__u8 family; /* 0: unused slot, 4, 6 */
	__u8 proto;  /* 0: any, 6: TCP, 17: UDP */
	__u16 port;  /* remote port, host byte order; 0: any */
	__u32 addr[4];
	__u32 mask[4];
};

_Static_assert(sizeof(struct allow_entry) == 36, "the agent writes 36-byte allow entries");

struct isolation_config {
	__u32 enforce;
	__u32 count; /* entries in use, from slot 0 */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_ALLOW);
	__type(key, __u32);
	__type(value, struct allow_entry);
} isolation_allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct isolation_config);
} isolation_config SEC(".maps");

/* Dropped packets: [0] egress, [1] ingress. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} isolation_dropped SEC(".maps");

#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

struct remote {
	__u8 family;
	__u8 proto;
	__u16 port; /* host byte order; 0 when unknown (fragments, other protocols) */
	__u32 addr[4];
};

static __always_inline __u16 ntohs16(__u16 v)
{
	return (__u16)((v >> 8) | (v << 8));
}

/* Reads the remote end of the packet; 0 on success. */
static __always_inline int parse(struct __sk_buff *skb, int egress, struct remote *r)
{
	__u8 first;
	if (bpf_skb_load_bytes(skb, 0, &first, 1) < 0)
		return -1;
	__u8 version = first >> 4;
	__u16 ports[2];
	if (version == 4) {
		__u8 hdr[20];
		if (bpf_skb_load_bytes(skb, 0, hdr, sizeof(hdr)) < 0)
			return -1;
		__u32 ihl = (hdr[0] & 0x0f) * 4;
		if (ihl < 20)
			return -1;
		r->family = 4;
		r->proto = hdr[9];
		__builtin_memcpy(&r->addr[0], egress ? &hdr[16] : &hdr[12], 4);
		/* Only the first fragment carries the ports. */
		__u16 frag = ((__u16)(hdr[6] & 0x1f) << 8) | hdr[7];
		if (frag == 0 && (r->proto == IPPROTO_TCP || r->proto == IPPROTO_UDP) &&
		    bpf_skb_load_bytes(skb, ihl & 0x3c, ports, sizeof(ports)) == 0)
			r->port = ntohs16(egress ? ports[1] : ports[0]);
		return 0;
	}
	if (version == 6) {
		__u8 hdr[40];
		if (bpf_skb_load_bytes(skb, 0, hdr, sizeof(hdr)) < 0)
			return -1;
		r->family = 6;
		/* Extension headers are not walked: the next header is the protocol or unknown. */
		r->proto = hdr[6];
		__builtin_memcpy(r->addr, egress ? &hdr[24] : &hdr[8], 16);
		if ((r->proto == IPPROTO_TCP || r->proto == IPPROTO_UDP) &&
		    bpf_skb_load_bytes(skb, 40, ports, sizeof(ports)) == 0)
			r->port = ntohs16(egress ? ports[1] : ports[0]);
		return 0;
	}
	return -1;
}

static __always_inline int matches(const struct allow_entry *a, const struct remote *r)
{
	if (a->family != r->family)
		return 0;
	if (a->proto && a->proto != r->proto)
		return 0;
	if (a->port && a->port != r->port)
		return 0;
	int words = r->family == 4 ? 1 : 4;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		if (i < words && (r->addr[i] & a->mask[i]) != a->addr[i])
			return 0;
	}
	return 1;
}

static __always_inline int decide(struct __sk_buff *skb, int egress)
{
	__u32 zero = 0;
	struct isolation_config *cfg = bpf_map_lookup_elem(&isolation_config, &zero);
	if (!cfg || !cfg->enforce)
		return 1;
	if (skb->ifindex == 1)
		return 1;
	struct remote r = {};
	if (parse(skb, egress, &r) == 0) {
		__u32 count = cfg->count;
		for (__u32 i = 0; i < MAX_ALLOW; i++) {
			if (i >= count)
				break;
			__u32 key = i;
			struct allow_entry *a = bpf_map_lookup_elem(&isolation_allow, &key);
			if (a && matches(a, &r))
				return 1;
		}
	}
	__u32 slot = egress ? 0 : 1;
	__u64 *n = bpf_map_lookup_elem(&isolation_dropped, &slot);
	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}

SEC("cgroup_skb/egress")
int isolation_egress(struct __sk_buff *skb)
{
	return decide(skb, 1);
}

SEC("cgroup_skb/ingress")
int isolation_ingress(struct __sk_buff *skb)
{
	return decide(skb, 0);
}
