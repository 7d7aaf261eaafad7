// SPDX-License-Identifier: GPL-2.0
/* Ringbuf programs for compat_tests/test_ringbuf.py, loaded by
 * ringbuf_loader.c through libbpf:
 *   - on_entry (uprobe): each call of probed_fn(x) sends one event through
 *     `events` in a way chosen by x % 6 (reserve/submit, output, discard,
 *     BPF_RB_NO_WAKEUP, BPF_RB_FORCE_WAKEUP, invalid flags), counting
 *     helper results in `stats`;
 *   - rb_op (syscall program, PROG_TEST_RUN): one ringbuf operation on
 *     `small` described by the context, results written back to it. */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct event {
	__u32 how;
	__u32 pad;
	__s64 x;
	__u64 ring_size;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* 0 output ok, 1 output EINVAL, 2 reserve(flags) NULL, 3 reserve NULL, 4 output other */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 5);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 i)
{
	__u64 *c = bpf_map_lookup_elem(&stats, &i);

	if (c)
		__sync_fetch_and_add(c, 1);
}

SEC("uprobe")
int BPF_KPROBE(on_entry, long x)
{
	struct event e = { .how = (__u32)((__u64)x % 6), .x = x };
	struct event *r;
	long ret;

	e.ring_size = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);
	switch (e.how) {
	case 0:
	case 2:
	case 4:
		r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
		if (!r) {
			count(3);
			return 0;
		}
		*r = e;
		if (e.how == 2)
			bpf_ringbuf_discard(r, 0);
		else
			bpf_ringbuf_submit(r, e.how == 4 ? BPF_RB_FORCE_WAKEUP : 0);
		return 0;
	case 1:
	case 3:
		ret = bpf_ringbuf_output(&events, &e, sizeof(e), e.how == 3 ? BPF_RB_NO_WAKEUP : 0);
		count(ret == 0 ? 0 : 4);
		return 0;
	default:
		ret = bpf_ringbuf_output(&events, &e, sizeof(e), 4);
		count(ret == -22 ? 1 : 4);
		r = bpf_ringbuf_reserve(&events, sizeof(*r), 1);
		if (r)
			bpf_ringbuf_discard(r, 0);
		else
			count(2);
		return 0;
	}
}

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} small SEC(".maps");

struct op {
	__u32 op;      /* 0 output, 1 reserve+submit, 2 reserve+discard, 3 reserve(flags), 4 query */
	__u32 size;    /* output: bytes; reserve: 8, 24 or 200 */
	__u64 flags;
	__s64 ret;
	__u64 q[4];    /* op 4: AVAIL_DATA, RING_SIZE, CONS_POS, PROD_POS; op 4 with flags: query(flags) in q[0] */
};

static __always_inline void *reserve(__u32 size, __u64 flags)
{
	if (size == 8)
		return bpf_ringbuf_reserve(&small, 8, flags);
	if (size == 24)
		return bpf_ringbuf_reserve(&small, 24, flags);
	return bpf_ringbuf_reserve(&small, 200, flags);
}

SEC("syscall")
int rb_op(struct op *o)
{
	char buf[256];
	__u32 size = o->size;
	__u8 *r;

	for (int i = 0; i < 256; i++)
		buf[i] = (char)(i + size);
	switch (o->op) {
	case 0:
		if (size > 256)
			size = 256;
		o->ret = bpf_ringbuf_output(&small, buf, size, o->flags);
		return 0;
	case 1:
	case 2:
		r = reserve(size, 0);
		if (!r) {
			o->ret = -1;
			return 0;
		}
		r[0] = (__u8)size;
		r[7] = 0xee;
		if (o->op == 1)
			bpf_ringbuf_submit(r, o->flags);
		else
			bpf_ringbuf_discard(r, o->flags);
		o->ret = 0;
		return 0;
	case 3:
		r = reserve(8, o->flags);
		o->ret = r != 0;
		if (r)
			bpf_ringbuf_discard(r, BPF_RB_NO_WAKEUP);
		return 0;
	default:
		if (o->flags) {
			o->q[0] = bpf_ringbuf_query(&small, o->flags);
			return 0;
		}
		o->q[0] = bpf_ringbuf_query(&small, BPF_RB_AVAIL_DATA);
		o->q[1] = bpf_ringbuf_query(&small, BPF_RB_RING_SIZE);
		o->q[2] = bpf_ringbuf_query(&small, BPF_RB_CONS_POS);
		o->q[3] = bpf_ringbuf_query(&small, BPF_RB_PROD_POS);
		return 0;
	}
}

/* rb_stress: producer `p` sends seqs [seq, seq + n) through `events`:
 * seq % 3 == 0 reserve/submit, 1 output (24 + seq % 57 bytes), 2 a reserve
 * that is discarded and then one that is submitted. Stops early when the
 * ring is full; ret = seqs sent. */
struct stress {
	__u32 p;
	__u32 n;
	__u64 seq;
	__s64 ret;
};

struct rec {
	__u32 p;
	__u32 pad;
	__u64 seq;
	__u64 fill;
};

SEC("syscall")
int rb_stress(struct stress *c)
{
	__u64 buf[10] = {};
	__u32 n = c->n > 128 ? 128 : c->n, i, sz;
	struct rec *r;

	c->ret = 0;
	for (i = 0; i < n; i++) {
		__u64 seq = c->seq + i;
		switch (seq % 3) {
		case 0:
			r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
			if (!r)
				return 0;
			r->p = c->p;
			r->pad = 0;
			r->seq = seq;
			r->fill = ~seq;
			bpf_ringbuf_submit(r, 0);
			break;
		case 1:
			buf[0] = c->p;
			buf[1] = seq;
			buf[2] = ~seq;
			sz = 24 + (__u32)(seq % 57);
			asm volatile("" : "+r"(sz));   /* the verifier needs the bound checked */
			if (sz > sizeof(buf) || bpf_ringbuf_output(&events, buf, sz, 0))
				return 0;
			break;
		default:
			r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
			if (!r)
				return 0;
			bpf_ringbuf_discard(r, 0);
			r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
			if (!r)
				return 0;
			r->p = c->p;
			r->pad = 0;
			r->seq = seq;
			r->fill = ~seq;
			bpf_ringbuf_submit(r, 0);
			break;
		}
		c->ret = i + 1;
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
