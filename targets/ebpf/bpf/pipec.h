/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Map layouts and map definitions of pipec's eBPF datapath.
 *
 * Every struct here has a #[repr(C)] twin in the Rust crate `pipec-ebpf-common`; a test
 * compares both field by field against the BTF of the compiled object, so a change here
 * must be made there too. Addresses are 16-byte arrays: IPv6 as it is, IPv4 in the first
 * four bytes with the rest zero, and a `family` field (4 or 6) says which. Ports are in
 * network byte order so that LPM prefixes on them run from the most significant bit.
 *
 * The maps are pinned by name: a second object (the benchmark baseline) or a restarted
 * loader finds the same maps under the pin directory.
 */
#ifndef PIPEC_H
#define PIPEC_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define PIPEC_AF_INET 4
#define PIPEC_AF_INET6 6

/* Directions of the policy table and of conntrack entries. */
#define PIPEC_DIR_EGRESS 0  /* traffic leaving the local endpoint */
#define PIPEC_DIR_INGRESS 1 /* traffic entering the local endpoint */
#define PIPEC_DIR_SERVICE 2 /* conntrack only: the pre-DNAT tuple of a service flow */

/* Policy actions. Zero is not an action, so an all-zero value is never mistaken for one. */
#define PIPEC_ACTION_ALLOW 1
#define PIPEC_ACTION_DENY 2
#define PIPEC_ACTION_REDIRECT 3 /* allowed at L4, sent to the L7 proxy */

/* Flow event verdicts and reasons. */
#define PIPEC_VERDICT_ALLOWED 1
#define PIPEC_VERDICT_DENIED 2
#define PIPEC_VERDICT_REDIRECTED 3
#define PIPEC_REASON_POLICY 1     /* a policy entry decided */
#define PIPEC_REASON_NO_ENTRY 2   /* no policy entry: default deny */
#define PIPEC_REASON_SPOOF 3      /* source address does not belong to the interface */
#define PIPEC_REASON_NO_BACKEND 4 /* a service without backends */

/* Service flags. */
#define PIPEC_SVC_AFFINITY 1 /* sessionAffinity: ClientIP */

/* Reserved identities (Cilium numbering). */
#define PIPEC_IDENTITY_WORLD 2

/* Policy LPM key: all bits before `protocol` are always matched exactly. */
#define PIPEC_POLICY_PREFIX_FIXED 72
#define PIPEC_POLICY_PREFIX_FULL 96
/* ipcache LPM key: the family (plus padding) is always matched exactly. */
#define PIPEC_IPCACHE_PREFIX_FIXED 32

/* skb->mark values, in Cilium's style: the magic lives in bits 8..11. */
#define PIPEC_MARK_MAGIC_MASK 0x0f00
#define PIPEC_MARK_TO_PROXY 0x0200    /* proxy port in the upper 16 bits */
#define PIPEC_MARK_POLICY_DONE 0x0a00 /* from_wire already ran the ingress pipeline */
/* to_wire hands the packet to the CPT for IPsec; the peer id is in the upper 16 bits. */
#define PIPEC_MARK_ENCRYPT 0x0e00

/* Conntrack states. */
#define PIPEC_CT_NEW 0
#define PIPEC_CT_SYN_SENT 1
#define PIPEC_CT_ESTABLISHED 2
#define PIPEC_CT_CLOSING 3
#define PIPEC_CT_CLOSED 4

/* Conntrack flags. */
#define PIPEC_CT_SEEN_REPLY 1
#define PIPEC_CT_FIN_FORWARD 2
#define PIPEC_CT_FIN_REPLY 4

/* Config flags. */
#define PIPEC_CONFIG_NO_CT_CREATE 1 /* evaluate every packet as a new flow (probes, benches) */
#define PIPEC_CONFIG_NO_EVENTS 2    /* do not emit flow events */

struct endpoint_key {
	__u8 addr[16];
	__u8 family;
	__u8 pad[3];
};

struct endpoint_value {
	__u32 endpoint_id;
	__u32 ifindex;
	__u32 identity;
	__u32 flags;
};

struct ipcache_key {
	__u32 prefixlen;
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

/* ipcache_host key: an IPv4 /32 or IPv6 /128 (the LPM key without its prefix length). */
struct ipcache_host_key {
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct ipcache_value {
	__u32 identity;
	__u32 flags;
};

/*
 * ipsec value: the peer node a destination prefix lives on. The peer id is the node's
 * 1-based position among the local node's peers in name order, the order the CPT target
 * numbers its SA slots by; the runtime maps it to the peer's current outbound SA.
 */
struct ipsec_value {
	__u32 peer;
	__u32 flags;
};

struct policy_key {
	__u32 prefixlen;
	__u32 endpoint_id;
	__u32 identity; /* 0 matches any remote identity */
	__u8 direction;
	__u8 protocol;
	__be16 dport;
};

struct policy_value {
	__u64 cookie;
	__u8 action;
	__u8 pad;
	__u16 proxy_port;
	__u32 pad2;
};

struct service_key {
	__u8 addr[16];
	__u8 family;
	__u8 protocol;
	__be16 port;
};

struct service_value {
	__u32 service_id;
	__u32 maglev_size;
	__u32 flags;
	__u32 affinity_timeout; /* seconds */
};

struct maglev_key {
	__u32 service_id;
	__u32 slot;
};

struct backend_value {
	__u8 addr[16];
	__u8 family;
	__u8 flags;
	__be16 port;
};

struct affinity_key {
	__u32 service_id;
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct affinity_value {
	__u64 last_used; /* bpf_ktime_get_ns() */
	__u32 backend_id;
	__u32 pad;
};

struct revnat_value {
	__u8 addr[16];
	__u8 family;
	__u8 pad;
	__be16 port;
};

struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 protocol;
	__u8 family;
	__u8 direction;
	__u8 pad;
};

struct ct_value {
	__u64 created; /* bpf_ktime_get_ns() */
	__u64 expires; /* bpf_ktime_get_ns() deadline; userspace GC deletes past it */
	__u64 packets;
	__u64 bytes;
	__u64 cookie; /* the policy entry that allowed the flow */
	__u32 rev_nat;
	__u32 backend_id;
	__u32 remote_identity;
	__u16 proxy_port;
	__u8 state;
	__u8 flags;
};

struct counter_value {
	__u64 packets;
	__u64 bytes;
};

struct flow_event {
	__u64 timestamp;
	__u64 cookie;
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 protocol;
	__u8 family;
	__u8 direction;
	__u8 verdict;
	__u32 endpoint_id;
	__u32 remote_identity;
	__u32 reason;
	__u32 pad;
};

struct config {
	__u32 ct_tcp_syn; /* seconds */
	__u32 ct_tcp_established;
	__u32 ct_tcp_closing;
	__u32 ct_udp;
	__u32 ct_sctp;
	__u32 ct_icmp;
	__u32 ct_other;
	__u32 flags;
};

#define PIPEC_MAP(name_, type_, key_, value_, max_, flags_)                                 \
	struct {                                                                           \
		__uint(type, type_);                                                       \
		__type(key, key_);                                                         \
		__type(value, value_);                                                     \
		__uint(max_entries, max_);                                                 \
		__uint(map_flags, flags_);                                                 \
		__uint(pinning, LIBBPF_PIN_BY_NAME);                                       \
	} name_ SEC(".maps")

PIPEC_MAP(endpoints, BPF_MAP_TYPE_HASH, struct endpoint_key, struct endpoint_value, 16384, 0);
/*
 * The ipcache is two maps: host entries (IPv4 /32, IPv6 /128: the pod addresses, which
 * churn on every pod add) in the hash map ipcache_host, every other prefix in the LPM
 * trie ipcache. A hash map takes batched updates several times faster than the trie,
 * which inserts one node at a time. Readers look ipcache_host up first and the trie on
 * a miss (see lookup_identity in pipec.bpf.c).
 */
PIPEC_MAP(ipcache_host, BPF_MAP_TYPE_HASH, struct ipcache_host_key, struct ipcache_value, 524288,
	  0);
PIPEC_MAP(ipcache, BPF_MAP_TYPE_LPM_TRIE, struct ipcache_key, struct ipcache_value, 524288,
	  BPF_F_NO_PREALLOC);
/* Remote pods' prefixes (pod CIDRs and addresses) when IPsec is on; empty otherwise. */
PIPEC_MAP(ipsec, BPF_MAP_TYPE_LPM_TRIE, struct ipcache_key, struct ipsec_value, 65536,
	  BPF_F_NO_PREALLOC);
PIPEC_MAP(policy, BPF_MAP_TYPE_LPM_TRIE, struct policy_key, struct policy_value, 262144,
	  BPF_F_NO_PREALLOC);
PIPEC_MAP(services, BPF_MAP_TYPE_HASH, struct service_key, struct service_value, 65536, 0);
/*
 * Frontends whose balancing differs for packets from the wire (a cluster IP under
 * internalTrafficPolicy: Local keeps every endpoint for an outside client). from_wire looks
 * here first and in services on a miss; from_pod never reads this map.
 */
PIPEC_MAP(wire_services, BPF_MAP_TYPE_HASH, struct service_key, struct service_value, 65536, 0);
PIPEC_MAP(backends, BPF_MAP_TYPE_HASH, __u32, struct backend_value, 65536, 0);
PIPEC_MAP(maglev, BPF_MAP_TYPE_HASH, struct maglev_key, __u32, 1048576, BPF_F_NO_PREALLOC);
PIPEC_MAP(affinity, BPF_MAP_TYPE_LRU_HASH, struct affinity_key, struct affinity_value, 65536, 0);
PIPEC_MAP(revnat, BPF_MAP_TYPE_HASH, __u32, struct revnat_value, 65536, 0);
PIPEC_MAP(ct, BPF_MAP_TYPE_LRU_HASH, struct ct_key, struct ct_value, 262144, 0);
PIPEC_MAP(counters, BPF_MAP_TYPE_PERCPU_HASH, __u64, struct counter_value, 65536, 0);
PIPEC_MAP(config, BPF_MAP_TYPE_ARRAY, __u32, struct config, 1, 0);

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

#endif
