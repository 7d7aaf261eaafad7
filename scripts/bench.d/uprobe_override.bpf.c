// SPDX-License-Identifier: GPL-2.0
/* @[tid] = count(), then bpf_override_return(ctx, 0): the function does
 * not run. What scripts/bench.d/uprobe measures per overridden call
 * (bpfshim only: the kernel refuses the helper on uprobes). */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

SEC("uprobe")
int on_override(struct pt_regs *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 one = 1, *c = bpf_map_lookup_elem(&counts, &tid);

	if (c)
		__sync_fetch_and_add(c, 1);
	else
		bpf_map_update_elem(&counts, &tid, &one, BPF_NOEXIST);
	bpf_override_return(ctx, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
