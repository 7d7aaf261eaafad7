/* SPDX-License-Identifier: MIT */
/*
 * Packet helpers, on the skb context PROG_TEST_RUN builds
 * (libbpf_shim/test_run.c), with the semantics of net/core/filter.c and
 * net/core/skbuff.c for that skb: linear, on loopback, no checksum offload
 * (ip_summed CHECKSUM_NONE). Async-signal-safe: no allocation, the packet
 * grows into the headroom the runner gave it.
 */
#include <errno.h>
#include <string.h>
#include "helpers.h"
#include "../maps/map.h"   /* SHM_ENOTSUPP */

#define ETH_ALEN 6
#define ETH_HLEN 14
#define VLAN_HLEN 4
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define ETH_P_802_3 0x0001
#define ETH_P_802_2 0x0004
#define ETH_P_802_3_MIN 0x0600
#define SKF_NET_OFF (-0x100000)
#define SKF_LL_OFF (-0x200000)

static inline uint16_t htons16(uint16_t v)
{
	return __builtin_bswap16(v);
}

static inline uint16_t get_be16(const unsigned char *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

u64 bpf_skb_load_bytes(u64 ctx, u64 offset, u64 to, u64 len, u64 a5)
{
	const struct shim_skb_ctx *c = (const struct shim_skb_ctx *)(uintptr_t)ctx;

	if (offset > 0xffff || !len || offset + len > c->len) {
		memset((void *)(uintptr_t)to, 0, len);
		return bpf_rt_err(EFAULT);
	}
	memcpy((void *)(uintptr_t)to, c->data + offset, len);
	return 0;
}

/* Negative offsets address the network header (SKF_NET_OFF) or the MAC
 * header (SKF_LL_OFF) instead of skb->data; the load must end inside the
 * packet (bpf_internal_load_pointer_neg_helper). */
int64_t bpf_rt_ld_abs(const void *skb, int32_t off, uint32_t size)
{
	const struct shim_skb_ctx *c = skb;
	const unsigned char *base = c->data;
	int64_t at = off;
	uint32_t v = 0;

	if (off < 0) {
		if (off >= SKF_NET_OFF) {
			base = c->net;
			at = (int64_t)off - SKF_NET_OFF;
		} else if (off >= SKF_LL_OFF) {
			base = c->mac;
			at = (int64_t)off - SKF_LL_OFF;
		} else {
			return -EFAULT;
		}
	}
	/* from base + at, size bytes, all before the packet's end */
	if (at + size > (int64_t)(c->data + c->len - base))
		return -EFAULT;
	for (uint32_t i = 0; i < size; i++)
		v = v << 8 | base[at + i];
	return v;
}

/* One's complement sums as lib/checksum.c and the x86 csum_partial
 * compute them (include/net/checksum.h). */
static inline uint32_t csum_add(uint32_t a, uint32_t b)
{
	uint32_t r = a + b;

	return r + (r < b);
}

static uint32_t csum_partial(const unsigned char *p, uint32_t len, uint32_t seed)
{
	uint64_t acc = seed;
	int odd = (uintptr_t)p & 1;

	if (odd) {   /* x86: sum from an even address, rotate back at the end */
		if (!len)
			return seed;
		acc = (seed >> 8 | seed << 24) & 0xffffffffu;
		acc += (uint64_t)*p++ << 8;
		len--;
	}
	for (; len >= 8; p += 8, len -= 8) {
		uint64_t w;

		memcpy(&w, p, 8);
		acc += w;
		acc += acc < w;
	}
	if (len) {
		uint64_t w = 0;

		memcpy(&w, p, len);
		acc += w;
		acc += acc < w;
	}
	uint32_t r = csum_add((uint32_t)(acc >> 32), (uint32_t)acc);
	if (odd) {
		r = (r & 0xffff) + (r >> 16);
		r = (r & 0xffff) + (r >> 16);
		r = ((r >> 8) & 0xff) | ((r & 0xff) << 8);
	}
	return r;
}

static inline uint32_t from32to16(uint32_t x)
{
	x = (x & 0xffff) + (x >> 16);
	return (x & 0xffff) + (x >> 16);
}

/* bpf_csum_diff: the sum of `to` less the sum of `from`, seeded, folded to
 * 16 bits (the kernel's result on every arch since 6.13), for any sizes:
 * 6.18 no longer refuses sizes that are not multiples of 4. */
u64 bpf_csum_diff(u64 from, u64 from_size, u64 to, u64 to_size, u64 seed)
{
	uint32_t t = csum_partial((const unsigned char *)(uintptr_t)to, (uint32_t)to_size, (uint32_t)seed);
	uint32_t f = csum_partial((const unsigned char *)(uintptr_t)from, (uint32_t)from_size, 0);

	return from32to16(csum_add(t, ~f));
}

/* Only an skb with CHECKSUM_COMPLETE has a csum to update; the test run's
 * has none (CHECKSUM_NONE). */
u64 bpf_csum_update(u64 ctx, u64 csum, u64 a3, u64 a4, u64 a5)
{
	return bpf_rt_err(SHM_ENOTSUPP);
}

/* ---- VLAN (net/core/skbuff.c skb_vlan_push / skb_vlan_pop) ----
 * The outer tag is the skb's accelerated tag (__sk_buff vlan_present,
 * vlan_tci, vlan_proto); pushing a second one writes the first into the
 * packet after the MAC addresses. Both need skb->data at the MAC header. */
static inline int eth_type_vlan(uint16_t be_proto)
{
	return be_proto == htons16(ETH_P_8021Q) || be_proto == htons16(ETH_P_8021AD);
}

static void hwaccel_put(struct shim_skb_ctx *c, uint16_t be_proto, uint16_t tci)
{
	c->skb.vlan_proto = be_proto;
	c->skb.vlan_tci = tci;
	c->skb.vlan_present = 1;
}

/* __skb_vlan_pop(): the tag in the packet out, its TCI in *tci. */
static int vlan_pop_packet(struct shim_skb_ctx *c, uint16_t *tci)
{
	unsigned char *d = c->data;

	if (d != c->mac)
		return -EINVAL;
	if (c->len < ETH_HLEN + VLAN_HLEN)
		return -ENOMEM;   /* skb_ensure_writable: pskb_may_pull fails */
	*tci = get_be16(d + ETH_HLEN);
	uint16_t encap = get_be16(d + ETH_HLEN + 2);
	memmove(d + VLAN_HLEN, d, 2 * ETH_ALEN);
	c->data = d + VLAN_HLEN;
	c->len -= VLAN_HLEN;
	c->skb.len = c->len;
	/* vlan_set_encap_proto() */
	if (encap >= ETH_P_802_3_MIN)
		c->skb.protocol = htons16(encap);
	else if (c->len >= ETH_HLEN + 2 && get_be16(c->data + ETH_HLEN) == 0xFFFF)
		c->skb.protocol = htons16(ETH_P_802_3);
	else
		c->skb.protocol = htons16(ETH_P_802_2);
	c->mac += VLAN_HLEN;
	if (c->net < c->mac + ETH_HLEN)
		c->net = c->mac + ETH_HLEN;
	return 0;
}

u64 bpf_skb_vlan_push(u64 ctx, u64 proto, u64 tci, u64 a4, u64 a5)
{
	struct shim_skb_ctx *c = (struct shim_skb_ctx *)(uintptr_t)ctx;
	uint16_t be_proto = (uint16_t)proto;

	if (!eth_type_vlan(be_proto))
		be_proto = htons16(ETH_P_8021Q);
	if (c->skb.vlan_present) {
		unsigned char *d = c->data;

		if (d != c->mac)
			return bpf_rt_err(EINVAL);
		if ((size_t)(d - c->head) < VLAN_HLEN)
			return bpf_rt_err(ENOMEM);   /* no headroom left: bpfshim's limit, not the kernel's */
		/* __vlan_insert_tag() of the accelerated tag */
		memmove(d - VLAN_HLEN, d, 2 * ETH_ALEN);
		d -= VLAN_HLEN;
		uint16_t p = (uint16_t)c->skb.vlan_proto, t = (uint16_t)c->skb.vlan_tci;
		memcpy(d + 2 * ETH_ALEN, &p, 2);
		d[2 * ETH_ALEN + 2] = (unsigned char)(t >> 8);
		d[2 * ETH_ALEN + 3] = (unsigned char)t;
		c->data = c->mac = d;
		c->len += VLAN_HLEN;
		c->skb.len = c->len;
		c->skb.protocol = c->skb.vlan_proto;
	}
	hwaccel_put(c, be_proto, (uint16_t)tci);
	return 0;
}

u64 bpf_skb_vlan_pop(u64 ctx, u64 a2, u64 a3, u64 a4, u64 a5)
{
	struct shim_skb_ctx *c = (struct shim_skb_ctx *)(uintptr_t)ctx;
	uint16_t tci;
	int err;

	if (c->skb.vlan_present) {
		c->skb.vlan_present = 0;
		c->skb.vlan_tci = 0;
		c->skb.vlan_proto = 0;
	} else {
		if (!eth_type_vlan((uint16_t)c->skb.protocol))
			return 0;
		err = vlan_pop_packet(c, &tci);
		if (err)
			return bpf_rt_err(-err);
	}
	/* the next tag in the packet becomes the accelerated one */
	if (!eth_type_vlan((uint16_t)c->skb.protocol))
		return 0;
	uint16_t be_proto = (uint16_t)c->skb.protocol;
	err = vlan_pop_packet(c, &tci);
	if (err)
		return bpf_rt_err(-err);
	hwaccel_put(c, be_proto, tci);
	return 0;
}
