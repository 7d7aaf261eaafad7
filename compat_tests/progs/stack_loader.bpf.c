// SPDX-License-Identifier: GPL-2.0
/* bpf_get_stack / bpf_get_stackid from a uprobe, for compat_tests/test_stack.py
 * (loaded by stack_loader.c): probed_fn(x) runs case x and stores the helper's
 * return value and the buffer it filled in res[x]. */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct res {
	__s64 ret;
	__u64 ips[8];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 27);
	__type(key, __u32);
	__type(value, struct res);
} res SEC(".maps");

/* many buckets: the stacks hold libc addresses (ASLR), so whether two of
 * them collide must not be left to chance */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 4096);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 127 * sizeof(__u64));
} stacks SEC(".maps");

/* two frames a stack, one bucket: every other stack collides */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 2 * sizeof(__u64));
} tiny SEC(".maps");

/* one frame: the probed address */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 256);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u64));
} one SEC(".maps");

#define U BPF_F_USER_STACK

SEC("uprobe")
int BPF_KPROBE(on_entry, long x)
{
	__u32 k = (__u32)x;
	struct res *r = bpf_map_lookup_elem(&res, &k);

	if (!r)
		return 0;
	switch (k) {
	case 0: r->ret = bpf_get_stack(ctx, r->ips, 64, U); break;
	case 1: r->ret = bpf_get_stack(ctx, r->ips, 64, U | 1); break;
	case 2: r->ret = bpf_get_stack(ctx, r->ips, 64, U | 2); break;
	case 3: r->ret = bpf_get_stack(ctx, r->ips, 64, U | 40); break;
	case 4: r->ret = bpf_get_stack(ctx, r->ips, 64, 0); break;
	case 5: r->ret = bpf_get_stack(ctx, r->ips, 60, U); break;
	case 6: r->ret = bpf_get_stack(ctx, r->ips, 64, U | (1ull << 20)); break;
	case 7: r->ret = bpf_get_stack(ctx, r->ips, 16, U); break;
	case 8: r->ret = bpf_get_stack(ctx, r->ips, 64, BPF_F_USER_BUILD_ID); break;
	case 9: r->ret = bpf_get_stack(ctx, r->ips, 64, 1); break;
	case 10: r->ret = bpf_get_stackid(ctx, &stacks, U); break;
	case 11: r->ret = bpf_get_stackid(ctx, &stacks, U); break;
	case 12: r->ret = bpf_get_stackid(ctx, &stacks, U | 1); break;
	case 13: r->ret = bpf_get_stackid(ctx, &stacks, U | BPF_F_FAST_STACK_CMP); break;
	case 14: r->ret = bpf_get_stackid(ctx, &stacks, 0); break;
	case 15: r->ret = bpf_get_stackid(ctx, &stacks, U | 30); break;
	case 16: r->ret = bpf_get_stackid(ctx, &stacks, U | (1ull << 20)); break;
	case 17: r->ret = bpf_get_stackid(ctx, &tiny, U); break;
	case 18: r->ret = bpf_get_stackid(ctx, &tiny, U); break;
	case 19: r->ret = bpf_get_stackid(ctx, &tiny, U | 1); break;
	case 20: r->ret = bpf_get_stackid(ctx, &tiny, U | 1 | BPF_F_FAST_STACK_CMP); break;
	case 21: r->ret = bpf_get_stackid(ctx, &tiny, U | 1 | BPF_F_REUSE_STACKID); break;
	case 22: r->ret = bpf_get_stackid(ctx, &tiny, U | 1); break;
	case 23: r->ret = bpf_get_stackid(ctx, &tiny, U); break;
	case 24: r->ret = bpf_get_stackid(ctx, &one, U); break;
	case 25: r->ret = bpf_get_stackid(ctx, &one, U | BPF_F_FAST_STACK_CMP); break;
	case 26: r->ret = bpf_get_stackid(ctx, &one, U | BPF_F_REUSE_STACKID); break;
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
