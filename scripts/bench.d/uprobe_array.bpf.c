// SPDX-License-Identifier: GPL-2.0
/* A count into an array (slot 0, an atomic add): the uprobe program that
 * hybrid mode serves in user space on the kernel's array
 * (scripts/bench.d/hybrid). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

SEC("uprobe")
int on_entry(void *ctx)
{
	__u32 k = 0;
	__u64 *c = bpf_map_lookup_elem(&counts, &k);

	if (c)
		__sync_fetch_and_add(c, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
