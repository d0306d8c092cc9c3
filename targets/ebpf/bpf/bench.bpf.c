// SPDX-License-Identifier: Apache-2.0
/*
 * Benchmark baselines: the bare map lookups that a packet needs in pipec.bpf.c, without
 * the parsing, rewriting and bookkeeping around them. The bench binary runs these next to
 * the real programs (on the same pinned maps) to measure the pipeline's own overhead.
 *
 * They assume an IPv4/TCP packet without IP options; they are not a datapath.
 */
#include <linux/pkt_cls.h>

#include "pipec.h"

struct tuple4 {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
};

static __always_inline int load_tuple(struct __sk_buff *skb, struct tuple4 *t)
{
	__builtin_memset(t, 0, sizeof(*t));
	if (bpf_skb_load_bytes(skb, 14 + 12, t->saddr, 4) < 0 ||
	    bpf_skb_load_bytes(skb, 14 + 16, t->daddr, 4) < 0 ||
	    bpf_skb_load_bytes(skb, 14 + 20, &t->sport, 2) < 0 ||
	    bpf_skb_load_bytes(skb, 14 + 22, &t->dport, 2) < 0)
		return -1;
	return 0;
}

/* endpoint, service (miss), conntrack twice (miss), ipcache (host hash, then LPM trie on a
 * miss), policy twice, counter. */
static __always_inline int policy_lookups(struct tuple4 *t, int with_service)
{
	__u32 zero = 0;
	int n = 0;
	n += bpf_map_lookup_elem(&config, &zero) != 0;
	struct endpoint_key ek = {.family = PIPEC_AF_INET};
	__builtin_memcpy(ek.addr, t->saddr, 16);
	n += bpf_map_lookup_elem(&endpoints, &ek) != 0;
	struct service_key sk = {.family = PIPEC_AF_INET, .protocol = 6, .port = t->dport};
	__builtin_memcpy(sk.addr, t->daddr, 16);
	struct service_value *svc = bpf_map_lookup_elem(&services, &sk);
	if (with_service && svc) {
		struct ct_key sck = {.sport = t->sport, .dport = t->dport, .protocol = 6,
				     .family = PIPEC_AF_INET, .direction = PIPEC_DIR_SERVICE};
		__builtin_memcpy(sck.saddr, t->saddr, 16);
		__builtin_memcpy(sck.daddr, t->daddr, 16);
		n += bpf_map_lookup_elem(&ct, &sck) != 0;
		struct maglev_key mk = {.service_id = svc->service_id, .slot = 0};
		__u32 *b = bpf_map_lookup_elem(&maglev, &mk);
		if (b) {
			struct backend_value *be = bpf_map_lookup_elem(&backends, b);
			if (be) {
				__builtin_memcpy(t->daddr, be->addr, 16);
				t->dport = be->port;
			}
		}
	}
	struct ct_key ck = {.sport = t->sport, .dport = t->dport, .protocol = 6,
			    .family = PIPEC_AF_INET, .direction = PIPEC_DIR_EGRESS};
	__builtin_memcpy(ck.saddr, t->saddr, 16);
	__builtin_memcpy(ck.daddr, t->daddr, 16);
	n += bpf_map_lookup_elem(&ct, &ck) != 0;
	ck.direction = PIPEC_DIR_INGRESS;
	n += bpf_map_lookup_elem(&ct, &ck) != 0;
	/* The ipcache as the pipeline reads it: the host hash map, the LPM trie on a miss. */
	struct ipcache_host_key hk = {.family = PIPEC_AF_INET};
	__builtin_memcpy(hk.addr, t->daddr, 16);
	struct ipcache_value *iv = bpf_map_lookup_elem(&ipcache_host, &hk);
	if (!iv) {
		struct ipcache_key ik = {.prefixlen = PIPEC_IPCACHE_PREFIX_FIXED + 32,
					 .family = PIPEC_AF_INET};
		__builtin_memcpy(ik.addr, t->daddr, 16);
		iv = bpf_map_lookup_elem(&ipcache, &ik);
	}
	struct policy_key pk = {.prefixlen = PIPEC_POLICY_PREFIX_FULL,
				.endpoint_id = 1,
				.identity = iv ? iv->identity : 2,
				.direction = PIPEC_DIR_EGRESS,
				.protocol = 6,
				.dport = t->dport};
	n += bpf_map_lookup_elem(&policy, &pk) != 0;
	pk.identity = 0;
	struct policy_value *pv = bpf_map_lookup_elem(&policy, &pk);
	__u64 cookie = pv ? pv->cookie : 0;
	n += bpf_map_lookup_elem(&counters, &cookie) != 0;
	return n;
}

SEC("classifier")
int lookups_policy(struct __sk_buff *skb)
{
	struct tuple4 t;
	if (load_tuple(skb, &t) < 0)
		return TC_ACT_OK;
	return policy_lookups(&t, 0) >= 0 ? TC_ACT_OK : TC_ACT_SHOT;
}

SEC("classifier")
int lookups_service(struct __sk_buff *skb)
{
	struct tuple4 t;
	if (load_tuple(skb, &t) < 0)
		return TC_ACT_OK;
	return policy_lookups(&t, 1) >= 0 ? TC_ACT_OK : TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Apache-2.0";
