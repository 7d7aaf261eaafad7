// SPDX-License-Identifier: GPL-2.0
/* @[tid] = count() and a 16-byte event into a ringbuf per hit: what
 * scripts/bench hybrid measures for programs that output events (in hybrid
 * mode the twin's events are forwarded into the kernel's ringbuf, which
 * uprobe_loader.c consumes). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

SEC("uprobe")
int on_entry(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid(), ev[2] = { id, bpf_ktime_get_ns() };
	__u32 tid = (__u32)id;
	__u64 one = 1, *c = bpf_map_lookup_elem(&counts, &tid);

	if (c)
		__sync_fetch_and_add(c, 1);
	else
		bpf_map_update_elem(&counts, &tid, &one, BPF_NOEXIST);
	bpf_ringbuf_output(&events, ev, sizeof(ev), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
