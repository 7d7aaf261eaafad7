// SPDX-License-Identifier: GPL-2.0
/* Programs of compat_tests/test_events.py and `scripts/bench events`: each
 * call of events_target's ev(t, i) sends one 32-byte record, through a perf
 * buffer (on_perf) or a ringbuf (on_ringbuf); a send that fails is counted
 * in `failed` (for a ringbuf that is the drop count: the kernel counts
 * nothing itself). */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define REC_MAGIC 0x6576656e74736f6bull

struct rec {
	__u64 magic;
	__s64 t;
	__s64 i;
	__u64 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} pb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 4096);
} rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} failed SEC(".maps");

static __always_inline void count_failure(void)
{
	__u32 k = 0;
	__u64 *c = bpf_map_lookup_elem(&failed, &k);

	if (c)
		__sync_fetch_and_add(c, 1);
}

SEC("uprobe")
int BPF_KPROBE(on_perf, long t, long i)
{
	struct rec r = { REC_MAGIC, t, i, 0 };

	if (bpf_perf_event_output(ctx, &pb, BPF_F_CURRENT_CPU, &r, sizeof(r)))
		count_failure();
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(on_ringbuf, long t, long i)
{
	struct rec r = { REC_MAGIC, t, i, 0 };

	if (bpf_ringbuf_output(&rb, &r, sizeof(r), 0))
		count_failure();
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
