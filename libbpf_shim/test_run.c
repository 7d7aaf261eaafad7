/* SPDX-License-Identifier: MIT */
/*
 * BPF_PROG_TEST_RUN, in the caller's process, through the same engines that
 * run probes. Follows the kernel's bpf_prog_test_run() and the per-type
 * test_run functions of net/bpf/test_run.c for checks and output layout.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "shim.h"
#include "bpf_rt.h"

#define ETH_HLEN 14
#define MAX_BPF_FUNC_ARGS 12
#define SKB_MAX_DATA (4096 - 64 - 320)  /* PAGE_SIZE - NET_SKB_PAD - skb_shared_info */
/* Room for the packet to grow at its head: the kernel reallocates the
 * head when its NET_SKB_PAD runs out, bpfshim's helpers (which cannot
 * allocate) stop with -ENOMEM here, after 512 VLAN tags. */
#define SKB_HEADROOM 2048

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int put_u32(uint64_t uattr, size_t off, uint32_t v)
{
	return shim_copy_to_user(uattr + off, &v, sizeof(v));
}

/* bpf_test_run(): repeat times, duration = mean ns per run. */
static int run_repeat(const struct bpf_prog_rt *p, void *ctx, uint32_t repeat,
		      uint32_t *retval, uint32_t *duration)
{
	uint64_t r0 = 0, t0;
	int err;

	if (!repeat)
		repeat = 1;
	t0 = now_ns();
	err = bpf_prog_test_run_repeat(p, ctx, repeat, &r0);
	uint64_t d = (now_ns() - t0) / repeat;
	*duration = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
	*retval = (uint32_t)r0;
	return err;
}

/* bpf_test_finish(): data_out (ENOSPC when it does not fit), sizes, retval, duration. */
static long test_finish(const union bpf_attr *a, uint64_t uattr, const void *data, uint32_t size,
			uint32_t retval, uint32_t duration)
{
	long err = 0;

	if (a->test.data_out) {
		uint32_t copy = size;
		if (copy > a->test.data_size_out) {
			copy = a->test.data_size_out;
			err = -ENOSPC;
		}
		if (shim_copy_to_user(a->test.data_out, data, copy))
			return -EFAULT;
	}
	if (put_u32(uattr, offsetof(union bpf_attr, test.data_size_out), size) ||
	    put_u32(uattr, offsetof(union bpf_attr, test.retval), retval) ||
	    put_u32(uattr, offsetof(union bpf_attr, test.duration), duration))
		return -EFAULT;
	return err;
}

/* eth_type_trans() on the loopback device (address 00:00:00:00:00:00). */
static uint32_t pkt_type_of(const unsigned char *dest)
{
	static const unsigned char bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

	if (dest[0] & 1)
		return memcmp(dest, bcast, 6) ? 2 /* PACKET_MULTICAST */ : 1 /* PACKET_BROADCAST */;
	for (int i = 0; i < 6; i++)
		if (dest[i])
			return 3;  /* PACKET_OTHERHOST */
	return 0;          /* PACKET_HOST */
}

/* bpf_prog_test_run_skb(): the packet arrives on loopback; programs that
 * do not see L2 (socket filters, cgroup skb) start at the network header,
 * and the MAC header comes back zeroed. The packet sits after SKB_HEADROOM
 * bytes for the helpers that grow it at the head (skb_helpers.c); data_out
 * is the packet as the program left it. */
static long run_skb(const struct bpf_prog_rt *p, union bpf_attr *a, uint64_t uattr)
{
	uint32_t n = a->test.data_size_in, retval, duration;
	int is_l2 = p->prog_type == BPF_PROG_TYPE_SCHED_CLS || p->prog_type == BPF_PROG_TYPE_SCHED_ACT;
	struct shim_skb_ctx sc;
	struct __sk_buff skb;
	long err;

	if (a->test.flags || a->test.cpu || a->test.batch_size)
		return -EINVAL;
	if (n < ETH_HLEN || n > SKB_MAX_DATA)
		return -EINVAL;
	unsigned char *buf = calloc(1, SKB_HEADROOM + n), *data = buf + SKB_HEADROOM;
	if (!buf)
		return -ENOMEM;
	if (shim_copy_from_user(data, a->test.data_in, n)) {
		free(buf);
		return -EFAULT;
	}
	memset(&skb, 0, sizeof(skb));
	if (a->test.ctx_in) {
		size_t k = a->test.ctx_size_in < sizeof(skb) ? a->test.ctx_size_in : sizeof(skb);
		if (shim_copy_from_user(&skb, a->test.ctx_in, k)) {
			free(buf);
			return -EFAULT;
		}
	}
	skb.len = is_l2 ? n : n - ETH_HLEN;
	skb.protocol = (uint32_t)data[12] | (uint32_t)data[13] << 8;
	skb.pkt_type = pkt_type_of(data);
	skb.ifindex = 1;
	sc.skb = skb;
	sc.head = buf;
	sc.mac = data;
	sc.net = data + ETH_HLEN;
	sc.data = is_l2 ? sc.mac : sc.net;
	sc.len = skb.len;
	err = run_repeat(p, &sc, a->test.repeat, &retval, &duration);
	skb = sc.skb;
	unsigned char *out = sc.data;
	uint32_t size = sc.len;
	if (!is_l2) {
		out -= ETH_HLEN;
		size += ETH_HLEN;
		memset(out, 0, ETH_HLEN);
	}
	if (!err)
		err = test_finish(a, uattr, out, size, retval, duration);
	if (!err && a->test.ctx_out) {
		uint32_t k = a->test.ctx_size_out < sizeof(skb) ? a->test.ctx_size_out : sizeof(skb);
		if (shim_copy_to_user(a->test.ctx_out, &skb, k) ||
		    put_u32(uattr, offsetof(union bpf_attr, test.ctx_size_out), sizeof(skb)))
			err = -EFAULT;
	}
	free(buf);
	return err;
}

static long run_xdp(const struct bpf_prog_rt *p, union bpf_attr *a, uint64_t uattr)
{
	uint32_t n = a->test.data_size_in, retval, duration;
	struct xdp_md md;
	long err;

	if (a->test.flags || a->test.cpu || a->test.batch_size)
		return -EINVAL;
	if (n < ETH_HLEN || n > 4096 - 256 - 320)
		return -EINVAL;
	unsigned char *data = calloc(1, n);
	if (!data)
		return -ENOMEM;
	if (shim_copy_from_user(data, a->test.data_in, n)) {
		free(data);
		return -EFAULT;
	}
	memset(&md, 0, sizeof(md));
	md.data_end = n;
	err = run_repeat(p, &md, a->test.repeat, &retval, &duration);
	if (!err)
		err = test_finish(a, uattr, data, n, retval, duration);
	free(data);
	return err;
}

/* bpf_prog_test_run_raw_tp(): args in ctx_in, nothing else allowed. */
static long run_raw_tp(const struct bpf_prog_rt *p, union bpf_attr *a, uint64_t uattr)
{
	uint64_t args[MAX_BPF_FUNC_ARGS] = { 0 }, r0 = 0;
	uint32_t n = a->test.ctx_size_in;

	if (a->test.data_in || a->test.data_out || a->test.ctx_out || a->test.duration ||
	    a->test.repeat || a->test.batch_size)
		return -EINVAL;
	if (n > sizeof(args))
		return -EINVAL;
	if (!(a->test.flags & BPF_F_TEST_RUN_ON_CPU) && a->test.cpu)
		return -EINVAL;
	if (a->test.flags & ~BPF_F_TEST_RUN_ON_CPU)
		return -EINVAL;
	if (n && shim_copy_from_user(args, a->test.ctx_in, n))
		return -EFAULT;
	if (bpf_prog_run(p, args, &r0))
		return -EFAULT;
	return put_u32(uattr, offsetof(union bpf_attr, test.retval), (uint32_t)r0) ? -EFAULT : 0;
}

/* bpf_prog_test_run_syscall(): ctx_in is copied back after the run. */
static long run_syscall(const struct bpf_prog_rt *p, union bpf_attr *a, uint64_t uattr)
{
	uint32_t n = a->test.ctx_size_in;
	uint64_t r0 = 0;
	void *ctx = NULL;
	long err = 0;

	if (a->test.data_in || a->test.data_out || a->test.ctx_out || a->test.duration ||
	    a->test.repeat || a->test.flags || a->test.batch_size)
		return -EINVAL;
	if (n > 65535)
		return -EINVAL;
	if (n) {
		ctx = malloc(n);
		if (!ctx)
			return -ENOMEM;
		if (shim_copy_from_user(ctx, a->test.ctx_in, n)) {
			free(ctx);
			return -EFAULT;
		}
	}
	if (bpf_prog_run(p, ctx, &r0))
		err = -EFAULT;
	if (!err && put_u32(uattr, offsetof(union bpf_attr, test.retval), (uint32_t)r0))
		err = -EFAULT;
	if (!err && n && shim_copy_to_user(a->test.ctx_in, ctx, n))
		err = -EFAULT;
	free(ctx);
	return err;
}

long shim_prog_test_run(union bpf_attr *a, uint64_t uattr)
{
	const struct bpf_prog_rt *p;
	int err = 0;

	if ((a->test.ctx_size_in && !a->test.ctx_in) || (!a->test.ctx_size_in && a->test.ctx_in))
		return -EINVAL;
	if ((a->test.ctx_size_out && !a->test.ctx_out) || (!a->test.ctx_size_out && a->test.ctx_out))
		return -EINVAL;
	p = shim_prog_get((int)a->test.prog_fd, &err);
	if (!p)
		return err;
	shim_prog_prepare(p);   /* not a probe: the rings its perf event arrays name (BEGIN's printf) */
	switch (p->prog_type) {
	case BPF_PROG_TYPE_SOCKET_FILTER:
	case BPF_PROG_TYPE_SCHED_CLS:
	case BPF_PROG_TYPE_SCHED_ACT:
	case BPF_PROG_TYPE_CGROUP_SKB:
		return run_skb(p, a, uattr);
	case BPF_PROG_TYPE_XDP:
		return run_xdp(p, a, uattr);
	case BPF_PROG_TYPE_RAW_TRACEPOINT:
		return run_raw_tp(p, a, uattr);
	case BPF_PROG_TYPE_SYSCALL:
		return run_syscall(p, a, uattr);
	default:
		return -SHM_ENOTSUPP;
	}
}
