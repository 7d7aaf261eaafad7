/* SPDX-License-Identifier: MIT */
/*
 * Socket helpers (net/core/filter.c): bpf_sk_lookup_tcp/udp and
 * bpf_skc_lookup_tcp find a real socket of the caller's network namespace
 * by its tuple, as the kernel's __inet_lookup / __udp4_lib_lookup do (the
 * exact-match request of NETLINK_SOCK_DIAG runs those same lookups); the
 * program gets a read-only snapshot of it (struct bpf_sock, and struct
 * bpf_tcp_sock from tcp_info) in a slot of a fixed pool that bpf_sk_release
 * frees. Async-signal-safe: raw system calls, stack buffers, a lock-free
 * pool. The netlink socket takes an fd number for the length of the call.
 *
 * What the snapshot cannot show (sock_diag does not report it to user
 * space): mark and priority read 0; rcv_nxt, snd_nxt, snd_una, rcv_wup,
 * ecn_flags, rate_* of bpf_tcp_sock read 0.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/inet_diag.h>
#include <linux/tcp.h>
#include "helpers.h"
#include "../rawsys.h"

#define PTR(r) ((void *)(uintptr_t)(r))
#define SK_POOL 64
/* PROG_TEST_RUN's packets arrive on loopback (the kernel's test run and
 * bpfshim's): the lookup's dif */
#define LOOPBACK_IFINDEX 1
/* include/net/tcp_states.h */
#define TCP_ESTABLISHED 1
#define TCP_SYN_RECV 3
#define TCP_TIME_WAIT 6
#define TCP_LISTEN 10
/* include/net/tcp.h */
#define TCP_INFINITE_SSTHRESH 0x7fffffff
#ifndef TCP_MSS_DEFAULT
#define TCP_MSS_DEFAULT 536U
#endif
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

struct sk_slot {
	struct bpf_sock sk;          /* what the program reads: first, the slot's address */
	struct bpf_tcp_sock tp;
	uint32_t full;               /* sk_fullsock(): not a timewait or request socket */
	int busy;
};
static struct sk_slot sk_pool[SK_POOL];

/* The slot a pointer the program holds (a bpf_sock or bpf_tcp_sock view) is
 * in, or NULL: anything else (skb->sk of a test-run packet) is no socket. */
static struct sk_slot *slot_of(u64 p)
{
	uintptr_t base = (uintptr_t)sk_pool, off;

	if (p < base || p >= base + sizeof(sk_pool))
		return NULL;
	off = (p - base) % sizeof(struct sk_slot);
	if (off != offsetof(struct sk_slot, sk) && off != offsetof(struct sk_slot, tp))
		return NULL;
	struct sk_slot *s = &sk_pool[(p - base) / sizeof(struct sk_slot)];
	return __atomic_load_n(&s->busy, __ATOMIC_ACQUIRE) ? s : NULL;
}

static struct sk_slot *slot_get(void)
{
	for (int i = 0; i < SK_POOL; i++) {
		int idle = 0;
		if (__atomic_compare_exchange_n(&sk_pool[i].busy, &idle, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
			return &sk_pool[i];
	}
	return NULL;
}

static void fill_tcp(struct bpf_tcp_sock *t, const struct tcp_info *i, size_t n)
{
	struct tcp_info z;

	memset(&z, 0, sizeof(z));
	memcpy(&z, i, n < sizeof(z) ? n : sizeof(z));
	t->snd_cwnd = z.tcpi_snd_cwnd;
	t->srtt_us = z.tcpi_rtt << 3;        /* tp->srtt_us is kept << 3; tcp_info reports it >> 3 */
	t->rtt_min = z.tcpi_min_rtt;
	t->snd_ssthresh = z.tcpi_snd_ssthresh;
	t->mss_cache = z.tcpi_snd_mss;
	t->packets_out = z.tcpi_unacked;
	t->retrans_out = z.tcpi_retrans;
	t->total_retrans = z.tcpi_total_retrans;
	t->segs_in = z.tcpi_segs_in;
	t->data_segs_in = z.tcpi_data_segs_in;
	t->segs_out = z.tcpi_segs_out;
	t->data_segs_out = z.tcpi_data_segs_out;
	t->lost_out = z.tcpi_lost;
	t->sacked_out = z.tcpi_sacked;
	t->bytes_received = z.tcpi_bytes_received;
	t->bytes_acked = z.tcpi_bytes_acked;
	t->dsack_dups = z.tcpi_dsack_dups;
	t->delivered = z.tcpi_delivered;
	t->delivered_ce = z.tcpi_delivered_ce;
	t->icsk_retransmits = z.tcpi_retransmits;
	if (z.tcpi_state == TCP_LISTEN) {
		/* tcp_get_info() stops early for a listener and aliases unacked
		 * and sacked to its accept queue; a listener never sent or
		 * received, so it keeps what tcp_init_sock() gave it */
		t->packets_out = t->sacked_out = 0;
		t->snd_ssthresh = TCP_INFINITE_SSTHRESH;
		t->mss_cache = TCP_MSS_DEFAULT;
		t->rtt_min = ~0u;
	}
}

/* One exact-match SOCK_DIAG_BY_FAMILY request: the socket whose local end is
 * (laddr, lport) and remote end (raddr, rport), ports in network order. 1
 * and *s filled, 0 when there is none, -errno. */
static int diag_one(int family, int proto, const uint32_t *laddr, uint16_t lport, const uint32_t *raddr,
		    uint16_t rport, struct sk_slot *s)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 r;
	} req;
	union {
		struct nlmsghdr nlh;
		char b[1024];
	} resp;
	struct sockaddr_nl nl = { .nl_family = AF_NETLINK };
	int words = family == AF_INET ? 1 : 4, found = 0;
	long fd, n;

	memset(&req, 0, sizeof(req));
	req.nlh.nlmsg_len = sizeof(req);
	req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	req.nlh.nlmsg_flags = NLM_F_REQUEST;
	req.r.sdiag_family = (uint8_t)family;
	req.r.sdiag_protocol = (uint8_t)proto;
	req.r.idiag_states = ~0u;
	req.r.idiag_ext = proto == IPPROTO_TCP ? 1 << (INET_DIAG_INFO - 1) : 0;
	req.r.id.idiag_cookie[0] = req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	req.r.id.idiag_if = LOOPBACK_IFINDEX;
	if (proto == IPPROTO_TCP) {
		/* inet_diag_find_one_icsk(): __inet_lookup(src = idiag_dst, dst = idiag_src) */
		memcpy(req.r.id.idiag_src, laddr, words * 4);
		memcpy(req.r.id.idiag_dst, raddr, words * 4);
		req.r.id.idiag_sport = lport;
		req.r.id.idiag_dport = rport;
	} else {
		/* udp_dump_one(): __udp4_lib_lookup(src = idiag_src, dst = idiag_dst) */
		memcpy(req.r.id.idiag_src, raddr, words * 4);
		memcpy(req.r.id.idiag_dst, laddr, words * 4);
		req.r.id.idiag_sport = rport;
		req.r.id.idiag_dport = lport;
	}
	fd = BPF_RT_SYS(SYS_socket, AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0)
		return (int)fd;
	n = BPF_RT_SYS(SYS_sendto, fd, &req, sizeof(req), 0, &nl, sizeof(nl));
	if (n >= 0)
		n = BPF_RT_SYS(SYS_recvfrom, fd, resp.b, sizeof(resp.b), 0, 0, 0);
	BPF_RT_SYS(SYS_close, fd);
	if (n < 0)
		return (int)n;
	if (n < (long)sizeof(struct nlmsghdr) || resp.nlh.nlmsg_len > (uint32_t)n ||
	    resp.nlh.nlmsg_type != SOCK_DIAG_BY_FAMILY ||
	    resp.nlh.nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
		return 0;         /* NLMSG_ERROR: ENOENT, or no such family/protocol */
	const struct inet_diag_msg *m = NLMSG_DATA(&resp.nlh);
	struct bpf_sock *b = &s->sk;

	memset(b, 0, sizeof(*b));
	memset(&s->tp, 0, sizeof(s->tp));
	b->bound_dev_if = m->id.idiag_if;
	b->family = m->idiag_family;
	b->type = proto == IPPROTO_TCP ? SOCK_STREAM : SOCK_DGRAM;
	b->protocol = (uint32_t)proto;
	b->src_port = __builtin_bswap16(m->id.idiag_sport);
	b->dst_port = m->id.idiag_dport;
	b->state = m->idiag_state;
	b->rx_queue_mapping = -1;       /* NO_QUEUE_MAPPING: loopback records none */
	if (family == AF_INET) {
		b->src_ip4 = m->id.idiag_src[0];
		b->dst_ip4 = m->id.idiag_dst[0];
	} else {
		memcpy(b->src_ip6, m->id.idiag_src, 16);
		memcpy(b->dst_ip6, m->id.idiag_dst, 16);
		if (!m->id.idiag_src[0] && !m->id.idiag_src[1] && m->id.idiag_src[2] == __builtin_bswap32(0xffff))
			b->src_ip4 = m->id.idiag_src[3];       /* v4-mapped: skc_rcv_saddr */
		if (!m->id.idiag_dst[0] && !m->id.idiag_dst[1] && m->id.idiag_dst[2] == __builtin_bswap32(0xffff))
			b->dst_ip4 = m->id.idiag_dst[3];
	}
	s->full = m->idiag_state != TCP_TIME_WAIT && !(proto == IPPROTO_TCP && m->idiag_state == TCP_SYN_RECV);
	for (uint32_t at = NLMSG_LENGTH(sizeof(*m)); at + sizeof(struct nlattr) <= resp.nlh.nlmsg_len;) {
		const struct nlattr *a = (const void *)(resp.b + at);
		if (a->nla_len < sizeof(*a) || at + a->nla_len > resp.nlh.nlmsg_len)
			break;
		if (a->nla_type == INET_DIAG_INFO && proto == IPPROTO_TCP)
			fill_tcp(&s->tp, (const void *)(a + 1), a->nla_len - sizeof(*a));
		at += NLA_ALIGN(a->nla_len);
	}
	found = 1;
	return found;
}

/* __bpf_skc_lookup(): tuple_size picks the family; a netns id other than
 * the caller's (BPF_F_CURRENT_NETNS, any negative s32) names a peer
 * namespace bpfshim cannot enter: no socket. */
static struct sk_slot *skc_lookup(u64 tuple, u64 len, u64 netns, u64 flags, int proto)
{
	const struct bpf_sock_tuple *t = PTR(tuple);
	uint32_t l[4] = { 0 }, r[4] = { 0 };
	uint16_t lport, rport;
	int family;

	if (len == sizeof(t->ipv4)) {
		family = AF_INET;
		l[0] = t->ipv4.daddr;
		r[0] = t->ipv4.saddr;
		lport = t->ipv4.dport;
		rport = t->ipv4.sport;
	} else if (len == sizeof(t->ipv6)) {
		family = AF_INET6;
		memcpy(l, t->ipv6.daddr, 16);
		memcpy(r, t->ipv6.saddr, 16);
		lport = t->ipv6.dport;
		rport = t->ipv6.sport;
	} else {
		return NULL;
	}
	if (flags || (int32_t)netns >= 0)
		return NULL;
	struct sk_slot *s = slot_get();
	if (!s)
		return NULL;
	if (diag_one(family, proto, l, lport, r, rport, s) == 1)
		return s;
	__atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
	return NULL;
}

static void slot_put(struct sk_slot *s)
{
	if (s)
		__atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
}

/* bpf_sk_lookup(): a request socket gives its listener, a timewait one none */
static u64 sk_lookup(u64 tuple, u64 len, u64 netns, u64 flags, int proto)
{
	struct sk_slot *s = skc_lookup(tuple, len, netns, flags, proto);
	uint32_t zero[4] = { 0 };

	if (s && !s->full && s->sk.state == TCP_SYN_RECV && proto == IPPROTO_TCP) {
		uint32_t l[4] = { 0 };
		int family = (int)s->sk.family;
		memcpy(l, family == AF_INET ? &s->sk.src_ip4 : s->sk.src_ip6, family == AF_INET ? 4 : 16);
		if (diag_one(family, proto, l, __builtin_bswap16((uint16_t)s->sk.src_port), zero, 0, s) != 1 ||
		    s->sk.state != TCP_LISTEN) {
			slot_put(s);
			s = NULL;
		}
	}
	if (s && !s->full) {
		slot_put(s);
		s = NULL;
	}
	return (u64)(uintptr_t)(s ? &s->sk : NULL);
}

u64 bpf_sk_lookup_tcp(u64 ctx, u64 tuple, u64 len, u64 netns, u64 flags)
{
	return sk_lookup(tuple, len, netns, flags, IPPROTO_TCP);
}

u64 bpf_sk_lookup_udp(u64 ctx, u64 tuple, u64 len, u64 netns, u64 flags)
{
	return sk_lookup(tuple, len, netns, flags, IPPROTO_UDP);
}

u64 bpf_skc_lookup_tcp(u64 ctx, u64 tuple, u64 len, u64 netns, u64 flags)
{
	struct sk_slot *s = skc_lookup(tuple, len, netns, flags, IPPROTO_TCP);

	return (u64)(uintptr_t)(s ? &s->sk : NULL);
}

u64 bpf_sk_release(u64 sk, u64 r2, u64 r3, u64 r4, u64 r5)
{
	slot_put(slot_of(sk));
	return 0;
}

u64 bpf_sk_fullsock(u64 sk, u64 r2, u64 r3, u64 r4, u64 r5)
{
	struct sk_slot *s = slot_of(sk);

	return (u64)(uintptr_t)(s && s->full ? &s->sk : NULL);
}

u64 bpf_tcp_sock(u64 sk, u64 r2, u64 r3, u64 r4, u64 r5)
{
	struct sk_slot *s = slot_of(sk);

	return (u64)(uintptr_t)(s && s->full && s->sk.protocol == IPPROTO_TCP ? &s->tp : NULL);
}

u64 bpf_get_listener_sock(u64 sk, u64 r2, u64 r3, u64 r4, u64 r5)
{
	struct sk_slot *s = slot_of(sk);

	return (u64)(uintptr_t)(s && s->full && s->sk.protocol == IPPROTO_TCP && s->sk.state == TCP_LISTEN ?
				&s->sk : NULL);
}

/* The socket of a packet: the ones bpfshim's PROG_TEST_RUN builds have none
 * (the kernel's test run gives them a fresh socket of its own, whose cookie
 * no process can know), and a cookie of no socket is 0. */
u64 bpf_get_socket_cookie(u64 ctx, u64 r2, u64 r3, u64 r4, u64 r5)
{
	return 0;
}

/* The network namespace of the caller (a NULL ctx: the kernel's init_net,
 * the caller's when it runs there) */
u64 bpf_get_netns_cookie(u64 ctx, u64 r2, u64 r3, u64 r4, u64 r5)
{
	uint64_t cookie = 0;
	uint32_t n = sizeof(cookie);
	long fd = BPF_RT_SYS(SYS_socket, AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return 0;
	if (BPF_RT_SYS(SYS_getsockopt, fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &n))
		cookie = 0;
	BPF_RT_SYS(SYS_close, fd);
	return cookie;
}

/* task_get_classid(): the net_cls cgroup of the calling thread (cgroup v1
 * only; 0 where there is none, as on a cgroup2-only system), read from the
 * controller's usual mount point. */
u64 bpf_get_cgroup_classid(u64 ctx, u64 r2, u64 r3, u64 r4, u64 r5)
{
	static const char mnt[] = "/sys/fs/cgroup/net_cls";
	static const char file[] = "/net_cls.classid";
	char buf[2048], path[512];
	const char *p = buf;
	uint64_t v = 0;

	if (bpf_rt_read_file("/proc/thread-self/cgroup", buf, sizeof(buf)) <= 0)
		return 0;
	for (; *p; p++) {
		/* "ID:controllers:path": a controller list naming net_cls */
		const char *c = strchr(p, ':'), *e = strchr(p, '\n');
		if (!e)
			e = p + strlen(p);
		if (c && c < e) {
			const char *ce = memchr(c + 1, ':', (size_t)(e - c - 1));
			for (const char *q = c + 1; ce && q + 7 <= ce; q++)
				if (!memcmp(q, "net_cls", 7) && (q == c + 1 || q[-1] == ',') && (q[7] == ',' || q + 7 == ce) &&
				    (size_t)(e - ce) + sizeof(mnt) + sizeof(file) < sizeof(path)) {
					size_t k = sizeof(mnt) - 1;
					memcpy(path, mnt, k);
					memcpy(path + k, ce + 1, (size_t)(e - ce - 1));
					k += (size_t)(e - ce - 1);
					memcpy(path + k, file, sizeof(file));
					if (bpf_rt_read_file(path, buf, sizeof(buf)) <= 0)
						return 0;
					for (const char *d = buf; *d >= '0' && *d <= '9'; d++)
						v = v * 10 + (uint64_t)(*d - '0');
					return (uint32_t)v;
				}
		}
		p = e;
		if (!*p)
			break;
	}
	return 0;
}
