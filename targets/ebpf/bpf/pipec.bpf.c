// SPDX-License-Identifier: Apache-2.0
/*
 * pipec's software datapath: tc (clsact) programs for the pod side and the wire side.
 *
 * The programs are fixed; the compiled pipeline is the content of the maps in pipec.h.
 *
 *   from_pod  (tc ingress of the host side of a pod's veth: packets the pod sends)
 *       anti-spoof -> service LB (DNAT, ClientIP affinity, Maglev) -> conntrack (a reply
 *       of a connection that came in through a service frontend leaves from that
 *       frontend) -> dst ipcache -> egress policy
 *   to_pod    (tc egress of the same veth: packets for the pod)
 *       conntrack (reverse NAT of replies) -> src ipcache -> ingress policy
 *   from_wire (tc ingress of the uplink: packets from outside the node)
 *       service LB for every frontend (cluster IPs, node ports on the node's addresses,
 *       load-balancer and external IPs; the wire's own rows in wire_services first) ->
 *       for a local destination, the to_pod pipeline on the translated packet, with the
 *       original client as the source, then a mark so that to_pod does not run it a
 *       second time. A backend on another node is left to the kernel's routing, without
 *       source NAT (see ARCHITECTURE.md: its reply does not come back through this node).
 *   to_wire   (tc egress of the uplink): clears pipec's mark bits, and marks pod-to-pod
 *       packets for a remote node for IPsec on the CPT (PIPEC_MARK_ENCRYPT | peer id);
 *       routing, encapsulation and the encryption itself belong to the other targets.
 *
 * Only helpers that are not GPL-only are used, so the object carries the project's licence.
 */
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>

#include "pipec.h"

#define NSEC_PER_SEC 1000000000ULL

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif
#define IPPROTO_ICMPV6_ 58

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04

/* A parsed packet: everything the pipeline matches on, and where to rewrite it. */
struct pkt {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__be16 policy_port; /* dport for TCP/UDP/SCTP; 0 for ICMP (protocol-only rules) */
	__u8 family;
	__u8 protocol;
	__u8 tcp_flags;
	__u8 is_reply_type; /* an ICMP echo reply: never opens a flow */
	__u16 l3_off;
	__u16 l4_off;
	__u32 len;
};

static __always_inline void copy16(__u8 *dst, const __u8 *src)
{
	__builtin_memcpy(dst, src, 16);
}

/* Parses Ethernet, IPv4/IPv6 and the first L4 header. Returns 0 for IP packets. */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__builtin_memset(p, 0, sizeof(*p));
	__be16 eth_proto;
	if (bpf_skb_load_bytes(skb, 12, &eth_proto, 2) < 0)
		return -1;
	p->l3_off = ETH_HLEN;
	p->len = skb->len;
	int frag = 0;

	if (eth_proto == bpf_htons(ETH_P_IP)) {
		__u8 hdr[20];
		if (bpf_skb_load_bytes(skb, ETH_HLEN, hdr, 20) < 0)
			return -1;
		__u8 ihl = hdr[0] & 0x0f;
		if ((hdr[0] >> 4) != 4 || ihl < 5)
			return -1;
		p->family = PIPEC_AF_INET;
		p->protocol = hdr[9];
		__builtin_memcpy(p->saddr, &hdr[12], 4);
		__builtin_memcpy(p->daddr, &hdr[16], 4);
		p->l4_off = ETH_HLEN + ihl * 4;
		/* A non-first fragment carries no L4 header: match it on addresses only. */
		frag = ((hdr[6] & 0x1f) | hdr[7]) != 0;
	} else if (eth_proto == bpf_htons(ETH_P_IPV6)) {
		__u8 hdr[40];
		if (bpf_skb_load_bytes(skb, ETH_HLEN, hdr, 40) < 0)
			return -1;
		if ((hdr[0] >> 4) != 6)
			return -1;
		p->family = PIPEC_AF_INET6;
		p->protocol = hdr[6];
		copy16(p->saddr, &hdr[8]);
		copy16(p->daddr, &hdr[24]);
		p->l4_off = ETH_HLEN + 40;
	} else {
		return -1;
	}
	if (frag)
		return 0;

	__u8 l4[14];
	switch (p->protocol) {
	case IPPROTO_TCP:
		if (bpf_skb_load_bytes(skb, p->l4_off, l4, 14) < 0)
			return 0;
		p->tcp_flags = l4[13];
		/* fall through: the ports sit at the same offsets */
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		if (bpf_skb_load_bytes(skb, p->l4_off, l4, 4) < 0)
			return 0;
		__builtin_memcpy(&p->sport, &l4[0], 2);
		__builtin_memcpy(&p->dport, &l4[2], 2);
		p->policy_port = p->dport;
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_:
		if (bpf_skb_load_bytes(skb, p->l4_off, l4, 8) < 0)
			return 0;
		/* Echo request and reply share their identifier, which stands in for both ports
		 * so that conntrack pairs them; other ICMP types have no ports. */
		if (l4[0] == 8 || l4[0] == 128 || l4[0] == 0 || l4[0] == 129) {
			__builtin_memcpy(&p->sport, &l4[4], 2);
			p->dport = p->sport;
			p->is_reply_type = l4[0] == 0 || l4[0] == 129;
		}
		break;
	}
	return 0;
}

static __always_inline struct config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config, &zero);
}

/* Seconds a conntrack entry lives after its last packet, by protocol and state. */
static __always_inline __u64 ct_lifetime(const struct config *cfg, __u8 protocol, __u8 state)
{
	__u32 s;
	switch (protocol) {
	case IPPROTO_TCP:
		if (state == PIPEC_CT_ESTABLISHED)
			s = cfg ? cfg->ct_tcp_established : 21600;
		else if (state == PIPEC_CT_SYN_SENT)
			s = cfg ? cfg->ct_tcp_syn : 60;
		else
			s = cfg ? cfg->ct_tcp_closing : 10;
		break;
	case IPPROTO_UDP:
		s = cfg ? cfg->ct_udp : 60;
		break;
	case IPPROTO_SCTP:
		s = cfg ? cfg->ct_sctp : 60;
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_:
		s = cfg ? cfg->ct_icmp : 30;
		break;
	default:
		s = cfg ? cfg->ct_other : 60;
	}
	return (__u64)s * NSEC_PER_SEC;
}

static __always_inline void ct_make_key(struct ct_key *k, const struct pkt *p, __u8 dir, int reverse)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (reverse) {
		copy16(k->saddr, p->daddr);
		copy16(k->daddr, p->saddr);
		k->sport = p->dport;
		k->dport = p->sport;
	} else {
		copy16(k->saddr, p->saddr);
		copy16(k->daddr, p->daddr);
		k->sport = p->sport;
		k->dport = p->dport;
	}
	k->protocol = p->protocol;
	k->family = p->family;
	k->direction = dir;
}

/* Whether the packet's reverse tuple is the packet's own tuple. */
static __always_inline int symmetric(const struct pkt *p)
{
	if (p->sport != p->dport)
		return 0;
	__u64 s[2], d[2];
	__builtin_memcpy(s, p->saddr, 16);
	__builtin_memcpy(d, p->daddr, 16);
	return s[0] == d[0] && s[1] == d[1];
}

/* Looks a tuple up, dropping an entry whose deadline has passed (LRU eviction and the
 * userspace GC reclaim the rest). */
static __always_inline struct ct_value *ct_lookup(struct ct_key *k, __u64 now)
{
	struct ct_value *v = bpf_map_lookup_elem(&ct, k);
	if (v && v->expires < now) {
		bpf_map_delete_elem(&ct, k);
		return 0;
	}
	return v;
}

/* Advances the TCP state machine and the deadline of an entry on a packet of its flow. */
static __always_inline void ct_update(struct ct_value *v, const struct pkt *p, int reply,
				      const struct config *cfg, __u64 now)
{
	__u8 state = v->state;
	__u8 flags = v->flags;
	if (reply)
		flags |= PIPEC_CT_SEEN_REPLY;
	if (p->protocol == IPPROTO_TCP) {
		if (p->tcp_flags & TCP_FLAG_RST) {
			state = PIPEC_CT_CLOSED;
		} else if (p->tcp_flags & TCP_FLAG_FIN) {
			flags |= reply ? PIPEC_CT_FIN_REPLY : PIPEC_CT_FIN_FORWARD;
			state = (flags & PIPEC_CT_FIN_REPLY) && (flags & PIPEC_CT_FIN_FORWARD)
					? PIPEC_CT_CLOSED
					: PIPEC_CT_CLOSING;
		} else if (state == PIPEC_CT_SYN_SENT && reply) {
			state = PIPEC_CT_ESTABLISHED;
		}
	}
	v->state = state;
	v->flags = flags;
	v->expires = now + ct_lifetime(cfg, p->protocol, state);
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, p->len);
}

static __always_inline void ct_create(struct ct_key *k, const struct pkt *p, __u64 cookie,
				      __u32 rev_nat, __u32 backend_id, __u32 remote_identity,
				      __u16 proxy_port, const struct config *cfg, __u64 now)
{
	if (cfg && (cfg->flags & PIPEC_CONFIG_NO_CT_CREATE))
		return;
	struct ct_value v = {};
	v.created = now;
	v.cookie = cookie;
	v.rev_nat = rev_nat;
	v.backend_id = backend_id;
	v.remote_identity = remote_identity;
	v.proxy_port = proxy_port;
	if (p->protocol == IPPROTO_TCP)
		v.state = (p->tcp_flags & TCP_FLAG_SYN) ? PIPEC_CT_SYN_SENT : PIPEC_CT_ESTABLISHED;
	else
		v.state = PIPEC_CT_ESTABLISHED;
	v.expires = now + ct_lifetime(cfg, p->protocol, v.state);
	v.packets = 1;
	v.bytes = p->len;
	bpf_map_update_elem(&ct, k, &v, BPF_ANY);
}

static __always_inline void count(__u64 cookie, __u32 len)
{
	struct counter_value *c = bpf_map_lookup_elem(&counters, &cookie);
	if (c) {
		/* Per-CPU values: no atomics needed. */
		c->packets += 1;
		c->bytes += len;
		return;
	}
	struct counter_value init = {.packets = 1, .bytes = len};
	bpf_map_update_elem(&counters, &cookie, &init, BPF_NOEXIST);
}

/* Not inlined on purpose: as a function parameter, struct flow_event reaches the object's
 * BTF, where the layout test finds it (a ring buffer map names no value type). */
static __noinline void fill_event_tuple(struct flow_event *e, const struct pkt *p)
{
	copy16(e->saddr, p->saddr);
	copy16(e->daddr, p->daddr);
	e->sport = p->sport;
	e->dport = p->dport;
	e->protocol = p->protocol;
	e->family = p->family;
}

static __always_inline void emit(const struct pkt *p, const struct config *cfg, __u8 dir,
				 __u8 verdict, __u32 reason, __u64 cookie, __u32 endpoint_id,
				 __u32 remote_identity, __u64 now)
{
	if (cfg && (cfg->flags & PIPEC_CONFIG_NO_EVENTS))
		return;
	struct flow_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return;
	fill_event_tuple(e, p);
	e->timestamp = now;
	e->cookie = cookie;
	e->direction = dir;
	e->verdict = verdict;
	e->endpoint_id = endpoint_id;
	e->remote_identity = remote_identity;
	e->reason = reason;
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
}

/*
 * The identity of an address: the longest ipcache prefix that covers it. Host entries
 * (/32, /128) live in the hash map ipcache_host, all shorter prefixes in the LPM trie
 * ipcache. A host entry is always the longest prefix its address can have, so when
 * ipcache_host holds the address, no entry of the trie could be longer; and on a miss,
 * no host entry covers the address, so the trie alone gives the longest match. Hash
 * first, trie on a miss: the same answer as one LPM lookup over both maps together.
 */
static __always_inline __u32 lookup_identity(const __u8 *addr, __u8 family)
{
	struct ipcache_host_key hk = {};
	hk.family = family;
	copy16(hk.addr, addr);
	struct ipcache_value *hv = bpf_map_lookup_elem(&ipcache_host, &hk);
	if (hv)
		return hv->identity;
	struct ipcache_key k = {};
	k.prefixlen = PIPEC_IPCACHE_PREFIX_FIXED + (family == PIPEC_AF_INET ? 32 : 128);
	k.family = family;
	copy16(k.addr, addr);
	struct ipcache_value *v = bpf_map_lookup_elem(&ipcache, &k);
	/* An address outside every known prefix is the world. */
	return v ? v->identity : PIPEC_IDENTITY_WORLD;
}

/*
 * The resolved policy decision. Two LPM lookups: the remote identity, and the wildcard
 * identity 0. Within one lookup the longest port prefix wins (the compiler resolved the
 * table); across the two, a deny wins (deny precedence). No entry at all denies, so an
 * endpoint without a table is default-deny.
 */
static __always_inline struct policy_value *policy_decide(__u32 endpoint_id, __u8 dir,
							  __u32 identity, const struct pkt *p)
{
	struct policy_key k = {};
	k.prefixlen = PIPEC_POLICY_PREFIX_FULL;
	k.endpoint_id = endpoint_id;
	k.identity = identity;
	k.direction = dir;
	k.protocol = p->protocol;
	k.dport = p->policy_port;
	struct policy_value *specific = bpf_map_lookup_elem(&policy, &k);
	k.identity = 0;
	struct policy_value *any = bpf_map_lookup_elem(&policy, &k);
	if (specific && specific->action == PIPEC_ACTION_DENY)
		return specific;
	if (any && any->action == PIPEC_ACTION_DENY)
		return any;
	return specific ? specific : any;
}

static __always_inline __u16 l4_csum_off(const struct pkt *p)
{
	if (p->protocol == IPPROTO_TCP)
		return p->l4_off + 16;
	if (p->protocol == IPPROTO_UDP)
		return p->l4_off + 6;
	return 0; /* SCTP's CRC32c does not cover the addresses; ICMP has no ports to NAT */
}

/*
 * Rewrites the destination (dnat) or the source (!dnat) address and port, keeping the IPv4
 * header checksum and the TCP/UDP checksum right. BPF_F_PSEUDO_HDR makes the helpers do the
 * right thing for CHECKSUM_PARTIAL packets from local sockets too.
 */
static __always_inline int nat_rewrite(struct __sk_buff *skb, struct pkt *p, const __u8 *addr,
				       __be16 port, int dnat)
{
	__u16 csum_off = l4_csum_off(p);
	__u64 mangled = p->protocol == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__u8 *old_addr = dnat ? p->daddr : p->saddr;
	__be16 old_port = dnat ? p->dport : p->sport;

	if (p->family == PIPEC_AF_INET) {
		__be32 o, n;
		__builtin_memcpy(&o, old_addr, 4);
		__builtin_memcpy(&n, addr, 4);
		__u32 addr_off = p->l3_off + (dnat ? 16 : 12);
		if (csum_off &&
		    bpf_l4_csum_replace(skb, csum_off, o, n, BPF_F_PSEUDO_HDR | mangled | 4) < 0)
			return -1;
		if (bpf_l3_csum_replace(skb, p->l3_off + 10, o, n, 4) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, &n, 4, 0) < 0)
			return -1;
	} else {
		__u32 addr_off = p->l3_off + (dnat ? 24 : 8);
		__u8 o[16], n[16];
		copy16(o, old_addr);
		copy16(n, addr);
		__s64 diff = bpf_csum_diff((__be32 *)o, 16, (__be32 *)n, 16, 0);
		if (csum_off &&
		    bpf_l4_csum_replace(skb, csum_off, 0, diff, BPF_F_PSEUDO_HDR | mangled) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, n, 16, 0) < 0)
			return -1;
	}
	if (port != old_port && p->protocol != IPPROTO_ICMP && p->protocol != IPPROTO_ICMPV6_) {
		if (csum_off &&
		    bpf_l4_csum_replace(skb, csum_off, old_port, port, mangled | 2) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, p->l4_off + (dnat ? 2 : 0), &port, 2, 0) < 0)
			return -1;
	}
	if (dnat) {
		copy16(p->daddr, addr);
		p->dport = port;
		p->policy_port = port;
	} else {
		copy16(p->saddr, addr);
		p->sport = port;
	}
	return 0;
}

/* A small deterministic mixing hash over the tuple (the Maglev slot must not depend on a
 * per-boot seed, so tests and the MAG interpreter can predict it). */
static __always_inline __u32 tuple_hash(const struct pkt *p)
{
	__u32 h = 0x9e3779b9;
	__u32 w[4];
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__builtin_memcpy(&w[0], &p->saddr[i * 4], 4);
		__builtin_memcpy(&w[1], &p->daddr[i * 4], 4);
		h ^= w[0];
		h *= 0x85ebca6b;
		h ^= w[1];
		h *= 0xc2b2ae35;
	}
	h ^= ((__u32)p->sport << 16) | p->dport;
	h *= 0x85ebca6b;
	h ^= p->protocol;
	h ^= h >> 16;
	h *= 0x7feb352d;
	h ^= h >> 15;
	return h;
}

/*
 * The frontend a packet's destination is. A packet from the wire takes the wire's own row
 * when there is one (the MAG's rows for sending endpoint 0, which outrank the rows for every
 * sender), else the row it shares with the pods; a pod's packet never sees the wire's rows.
 */
static __always_inline struct service_value *lookup_frontend(const struct pkt *p, int from_wire)
{
	struct service_key sk = {};
	copy16(sk.addr, p->daddr);
	sk.family = p->family;
	sk.protocol = p->protocol;
	sk.port = p->dport;
	if (from_wire) {
		struct service_value *w = bpf_map_lookup_elem(&wire_services, &sk);
		if (w)
			return w;
	}
	return bpf_map_lookup_elem(&services, &sk);
}

/*
 * Service load balancing for a packet leaving a pod or arriving from the wire. Returns the
 * reverse-NAT id (the service id) when the packet was DNATed, 0 when no service matched,
 * -1 to drop.
 */
static __always_inline long service_lb(struct __sk_buff *skb, struct pkt *p,
				       const struct config *cfg, __u64 now, __u32 *backend_out,
				       int from_wire)
{
	struct service_value *svc = lookup_frontend(p, from_wire);
	if (!svc)
		return 0;
	__u32 service_id = svc->service_id;

	/* An existing flow keeps its backend even when the Maglev table changes. */
	struct ct_key ck;
	ct_make_key(&ck, p, PIPEC_DIR_SERVICE, 0);
	struct ct_value *sct = ct_lookup(&ck, now);
	__u32 backend_id = 0;
	struct backend_value *be = 0;
	if (sct) {
		backend_id = sct->backend_id;
		be = bpf_map_lookup_elem(&backends, &backend_id);
	}

	struct affinity_key ak = {};
	int sticky = svc->flags & PIPEC_SVC_AFFINITY;
	if (!be && sticky) {
		ak.service_id = service_id;
		ak.family = p->family;
		copy16(ak.addr, p->saddr);
		struct affinity_value *av = bpf_map_lookup_elem(&affinity, &ak);
		if (av && now - av->last_used <= (__u64)svc->affinity_timeout * NSEC_PER_SEC) {
			backend_id = av->backend_id;
			be = bpf_map_lookup_elem(&backends, &backend_id);
		}
	}
	if (!be && svc->maglev_size) {
		struct maglev_key mk = {.service_id = service_id,
					.slot = tuple_hash(p) % svc->maglev_size};
		__u32 *b = bpf_map_lookup_elem(&maglev, &mk);
		if (b) {
			backend_id = *b;
			be = bpf_map_lookup_elem(&backends, &backend_id);
		}
	}
	if (!be)
		return -1;
	if (sticky) {
		struct affinity_value av = {.last_used = now, .backend_id = backend_id};
		bpf_map_update_elem(&affinity, &ak, &av, BPF_ANY);
	}
	if (sct)
		ct_update(sct, p, 0, cfg, now);
	else
		ct_create(&ck, p, 0, service_id, backend_id, 0, 0, cfg, now);

	__u8 addr[16];
	copy16(addr, be->addr);
	if (nat_rewrite(skb, p, addr, be->port, 1) < 0)
		return -1;
	*backend_out = backend_id;
	return service_id;
}

static __always_inline int allow(struct __sk_buff *skb, __u16 proxy_port)
{
	if (proxy_port)
		skb->mark = ((__u32)proxy_port << 16) | PIPEC_MARK_TO_PROXY;
	return TC_ACT_OK;
}

/*
 * Undoes a service DNAT on a reply: its source becomes the frontend (address and port) the
 * client sent the first packet to, so the client sees its own connection answered.
 * rev_nat 0 is a connection that was not translated. Returns -1 to drop.
 */
static __always_inline int reverse_nat(struct __sk_buff *skb, struct pkt *p, __u32 rev_nat)
{
	if (!rev_nat)
		return 0;
	struct revnat_value *rn = bpf_map_lookup_elem(&revnat, &rev_nat);
	if (!rn)
		return 0;
	__u8 addr[16];
	copy16(addr, rn->addr);
	return nat_rewrite(skb, p, addr, rn->port, 0);
}

/* The pipeline for packets a pod sends. */
static __always_inline int egress_pipeline(struct __sk_buff *skb)
{
	struct pkt p;
	if (parse(skb, &p) < 0)
		return TC_ACT_OK; /* ARP and other non-IP traffic */
	const struct config *cfg = get_config();
	__u64 now = bpf_ktime_get_ns();

	struct endpoint_key ek = {};
	copy16(ek.addr, p.saddr);
	ek.family = p.family;
	struct endpoint_value *ep = bpf_map_lookup_elem(&endpoints, &ek);
	if (!ep || ep->ifindex != skb->ifindex) {
		count(0, p.len);
		emit(&p, cfg, PIPEC_DIR_EGRESS, PIPEC_VERDICT_DENIED, PIPEC_REASON_SPOOF, 0, 0, 0, now);
		return TC_ACT_SHOT;
	}
	__u32 endpoint_id = ep->endpoint_id;

	__u32 backend_id = 0;
	long rev_nat = service_lb(skb, &p, cfg, now, &backend_id, 0);
	if (rev_nat < 0) {
		count(0, p.len);
		emit(&p, cfg, PIPEC_DIR_EGRESS, PIPEC_VERDICT_DENIED, PIPEC_REASON_NO_BACKEND, 0,
		     endpoint_id, 0, now);
		return TC_ACT_SHOT;
	}

	struct ct_key ck;
	ct_make_key(&ck, &p, PIPEC_DIR_EGRESS, 0);
	struct ct_value *cv = ct_lookup(&ck, now);
	if (cv) {
		ct_update(cv, &p, 0, cfg, now);
		count(cv->cookie, p.len);
		return allow(skb, cv->proxy_port);
	}
	struct ct_key rk;
	ct_make_key(&rk, &p, PIPEC_DIR_INGRESS, 1);
	cv = ct_lookup(&rk, now);
	if (cv) {
		/* A reply of a connection the pod accepted: policies are stateful. When the
		 * connection came from the wire through a service frontend, the reply leaves
		 * from that frontend. */
		ct_update(cv, &p, 1, cfg, now);
		count(cv->cookie, p.len);
		if (reverse_nat(skb, &p, cv->rev_nat) < 0)
			return TC_ACT_SHOT;
		return TC_ACT_OK;
	}

	__u32 remote = lookup_identity(p.daddr, p.family);
	struct policy_value *pv = policy_decide(endpoint_id, PIPEC_DIR_EGRESS, remote, &p);
	if (!pv || pv->action == PIPEC_ACTION_DENY || p.is_reply_type) {
		__u64 cookie = pv ? pv->cookie : 0;
		count(cookie, p.len);
		emit(&p, cfg, PIPEC_DIR_EGRESS, PIPEC_VERDICT_DENIED,
		     pv ? PIPEC_REASON_POLICY : PIPEC_REASON_NO_ENTRY, cookie, endpoint_id, remote,
		     now);
		return TC_ACT_SHOT;
	}
	__u64 cookie = pv->cookie;
	__u16 proxy_port = pv->action == PIPEC_ACTION_REDIRECT ? pv->proxy_port : 0;
	ct_create(&ck, &p, cookie, (__u32)rev_nat, backend_id, remote, proxy_port, cfg, now);
	count(cookie, p.len);
	emit(&p, cfg, PIPEC_DIR_EGRESS,
	     proxy_port ? PIPEC_VERDICT_REDIRECTED : PIPEC_VERDICT_ALLOWED, PIPEC_REASON_POLICY,
	     cookie, endpoint_id, remote, now);
	return allow(skb, proxy_port);
}

/*
 * The ingress checks of a parsed packet for a local endpoint: conntrack, then the ingress
 * policy of the destination with the packet's source as the remote. A packet that came in
 * through a service frontend carries the service's reverse-NAT id in rev_nat, which its
 * connection keeps so that from_pod can undo the DNAT on the replies. *handled says
 * whether the destination is a local endpoint; when it is not, the packet passes untouched
 * and the caller decides.
 */
static __always_inline int ingress_checks(struct __sk_buff *skb, struct pkt *p, __u32 rev_nat,
					  __u32 backend_id, int *handled)
{
	*handled = 0;
	struct endpoint_key ek = {};
	copy16(ek.addr, p->daddr);
	ek.family = p->family;
	struct endpoint_value *ep = bpf_map_lookup_elem(&endpoints, &ek);
	if (!ep)
		return TC_ACT_OK;
	*handled = 1;
	__u32 endpoint_id = ep->endpoint_id;
	const struct config *cfg = get_config();
	__u64 now = bpf_ktime_get_ns();

	struct ct_key ck;
	ct_make_key(&ck, p, PIPEC_DIR_INGRESS, 0);
	struct ct_value *cv = ct_lookup(&ck, now);
	if (cv) {
		ct_update(cv, p, 0, cfg, now);
		count(cv->cookie, p->len);
		return allow(skb, cv->proxy_port);
	}
	struct ct_key rk;
	ct_make_key(&rk, p, PIPEC_DIR_EGRESS, 1);
	/* A packet a pod sends to itself with equal ports (an ICMP echo to itself) has a
	 * reverse tuple equal to its own: the egress entry its first packet just created is
	 * not a connection it replies to. */
	cv = symmetric(p) ? 0 : ct_lookup(&rk, now);
	if (cv) {
		/* A reply of a connection the endpoint opened; undo the service DNAT. */
		ct_update(cv, p, 1, cfg, now);
		count(cv->cookie, p->len);
		if (reverse_nat(skb, p, cv->rev_nat) < 0)
			return TC_ACT_SHOT;
		return TC_ACT_OK;
	}

	__u32 remote = lookup_identity(p->saddr, p->family);
	struct policy_value *pv = policy_decide(endpoint_id, PIPEC_DIR_INGRESS, remote, p);
	if (!pv || pv->action == PIPEC_ACTION_DENY || p->is_reply_type) {
		__u64 cookie = pv ? pv->cookie : 0;
		count(cookie, p->len);
		emit(p, cfg, PIPEC_DIR_INGRESS, PIPEC_VERDICT_DENIED,
		     pv ? PIPEC_REASON_POLICY : PIPEC_REASON_NO_ENTRY, cookie, endpoint_id, remote,
		     now);
		return TC_ACT_SHOT;
	}
	__u64 cookie = pv->cookie;
	__u16 proxy_port = pv->action == PIPEC_ACTION_REDIRECT ? pv->proxy_port : 0;
	ct_create(&ck, p, cookie, rev_nat, backend_id, remote, proxy_port, cfg, now);
	count(cookie, p->len);
	emit(p, cfg, PIPEC_DIR_INGRESS,
	     proxy_port ? PIPEC_VERDICT_REDIRECTED : PIPEC_VERDICT_ALLOWED, PIPEC_REASON_POLICY,
	     cookie, endpoint_id, remote, now);
	return allow(skb, proxy_port);
}

/* The pipeline for packets entering a local endpoint from another local pod. */
static __always_inline int ingress_pipeline(struct __sk_buff *skb)
{
	struct pkt p;
	int handled;
	if (parse(skb, &p) < 0)
		return TC_ACT_OK;
	return ingress_checks(skb, &p, 0, 0, &handled);
}

/*
 * The pipeline for packets from outside the node: service load balancing on the frontend
 * they were sent to, then, for a local destination, the ingress checks on the translated
 * packet. The source is not rewritten, so the backend's ingress policy sees the original
 * client, as Kubernetes requires for externalTrafficPolicy: Local (and as the reference
 * models for every policy: it does not model source NAT).
 */
static __always_inline int wire_pipeline(struct __sk_buff *skb)
{
	struct pkt p;
	if (parse(skb, &p) < 0)
		return TC_ACT_OK;
	const struct config *cfg = get_config();
	__u64 now = bpf_ktime_get_ns();
	__u32 backend_id = 0;
	long rev_nat = service_lb(skb, &p, cfg, now, &backend_id, 1);
	if (rev_nat < 0) {
		count(0, p.len);
		emit(&p, cfg, PIPEC_DIR_INGRESS, PIPEC_VERDICT_DENIED, PIPEC_REASON_NO_BACKEND, 0, 0,
		     0, now);
		return TC_ACT_SHOT;
	}
	int handled;
	int verdict = ingress_checks(skb, &p, (__u32)rev_nat, backend_id, &handled);
	if (handled && verdict == TC_ACT_OK && skb->mark == 0)
		skb->mark = PIPEC_MARK_POLICY_DONE;
	return verdict;
}

SEC("classifier")
int from_pod(struct __sk_buff *skb)
{
	return egress_pipeline(skb);
}

SEC("classifier")
int to_pod(struct __sk_buff *skb)
{
	if ((skb->mark & PIPEC_MARK_MAGIC_MASK) == PIPEC_MARK_POLICY_DONE) {
		skb->mark = 0;
		return TC_ACT_OK;
	}
	return ingress_pipeline(skb);
}

SEC("classifier")
int from_wire(struct __sk_buff *skb)
{
	return wire_pipeline(skb);
}

/*
 * The CPT hand-over: a packet from a local pod to a pod of a remote node is marked for
 * encryption with that node's peer id; the runtime maps the id to the peer's outbound SA.
 * Only pod-to-pod traffic is handed over (as Cilium's IPsec encrypts it): host, remote-node
 * and world destinations are not in the ipsec map, and a source that is not a local pod
 * (the host itself) is never encrypted. Returns the peer id, or 0.
 */
static __always_inline __u32 ipsec_peer(const struct pkt *p)
{
	struct ipcache_key k = {};
	k.prefixlen = PIPEC_IPCACHE_PREFIX_FIXED + (p->family == PIPEC_AF_INET ? 32 : 128);
	k.family = p->family;
	copy16(k.addr, p->daddr);
	struct ipsec_value *v = bpf_map_lookup_elem(&ipsec, &k);
	if (!v || v->peer == 0 || v->peer > 0xffff)
		return 0;
	struct endpoint_key ek = {};
	ek.family = p->family;
	copy16(ek.addr, p->saddr);
	if (!bpf_map_lookup_elem(&endpoints, &ek))
		return 0;
	return v->peer;
}

SEC("classifier")
int to_wire(struct __sk_buff *skb)
{
	/* pipec's marks are node-local; they never leave on the wire. */
	if (skb->mark & PIPEC_MARK_MAGIC_MASK)
		skb->mark = 0;
	struct pkt p;
	if (parse(skb, &p) < 0)
		return TC_ACT_OK;
	__u32 peer = ipsec_peer(&p);
	if (peer)
		skb->mark = PIPEC_MARK_ENCRYPT | (peer << 16);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Apache-2.0";
