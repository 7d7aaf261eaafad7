// SPDX-License-Identifier: GPL-2.0
/* A kernel uprobe program that only filters its process out (a tgid found
 * in a hash map): what a kernel breakpoint left in a process whose hits
 * bpfshim serves would cost per hit if the kernel's copy were filtered
 * rather than removed (scripts/bench.d/hybrid). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} served SEC(".maps");

SEC("uprobe")
int on_entry(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (bpf_map_lookup_elem(&served, &tgid))
		return 0;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
