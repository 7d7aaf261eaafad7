// SPDX-License-Identifier: GPL-2.0
/* @[tid] = count(): what scripts/bench.d/uprobe measures per hit. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

static __always_inline int count(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 one = 1, *c = bpf_map_lookup_elem(&counts, &tid);

	if (c)
		__sync_fetch_and_add(c, 1);
	else
		bpf_map_update_elem(&counts, &tid, &one, BPF_NOEXIST);
	return 0;
}

SEC("uprobe")
int on_entry(void *ctx) { return count(); }

SEC("uretprobe")
int on_return(void *ctx) { return count(); }

char LICENSE[] SEC("license") = "GPL";
