// SPDX-License-Identifier: GPL-2.0
/* Uprobe + uretprobe programs for compat_tests/test_libbpf_uprobe.py and
 * test_uprobe_robustness.py, loaded by uprobe_loader.c through libbpf.
 * Built twice: plain (maps only) and with -DGLOBALS (.rodata config set by
 * the loader before load, .bss/.data counters read back with a lookup). */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct key {
	__u32 kind; /* 0 entry, 1 return */
	__u32 bucket;
};

struct event {
	__u32 kind;
	__u32 pad;
	__s64 arg;
	__s64 ret;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct key);
	__type(value, __u64);
} counts SEC(".maps");

/* One slot, atomically added to by every hit: the exact total. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} totals SEC(".maps");

/* key 0: flags set by the loader after load; bit 0 = send events. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

#ifdef GLOBALS
const volatile __u64 cfg_mod = 3;    /* rewritten by the loader before load */
const volatile __s64 cfg_bias = 0;
__u64 bss_calls;
__s64 bss_argsum;
__s64 data_last = -1;               /* .data: initial value comes from the object */
#define MOD cfg_mod
#else
#define MOD 4
#endif

static __always_inline void bump(void *ctx, __u32 kind, __s64 v)
{
	struct key k = { .kind = kind, .bucket = (__u32)((__u64)v % MOD) };
	__u64 one = 1, *c;
	__u32 zero = 0, *flags;

	c = bpf_map_lookup_elem(&counts, &k);
	if (!c) {
		if (bpf_map_update_elem(&counts, &k, &one, BPF_NOEXIST) == 0)
			goto counted;
		/* another thread created it first: add to its value */
		c = bpf_map_lookup_elem(&counts, &k);
	}
	if (c)
		__sync_fetch_and_add(c, 1);
counted:
	c = bpf_map_lookup_elem(&totals, &kind);
	if (c)
		__sync_fetch_and_add(c, 1);
	flags = bpf_map_lookup_elem(&cfg, &zero);
	if (flags && (*flags & 1)) {
		struct event e = { .kind = kind };
		if (kind == 0)
			e.arg = v;
		else
			e.ret = v;
#ifdef GLOBALS
		e.arg += cfg_bias;
#endif
		bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	}
}

SEC("uprobe")
int BPF_KPROBE(on_entry, long x)
{
#ifdef GLOBALS
	__sync_fetch_and_add(&bss_calls, 1);
	__sync_fetch_and_add(&bss_argsum, x);
	data_last = x;
#endif
	bump(ctx, 0, x);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(on_return, long ret)
{
	bump(ctx, 1, ret);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
