// SPDX-License-Identifier: GPL-2.0
/* compat_tests/test_hybrid.py: a uprobe and a kernel tracepoint counting
 * into one array and one hash map; in hybrid mode the uprobe runs in user
 * space in the process with the library, on the kernel's array memory. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __u32 pid_lib, pid_plain;     /* set before load (.rodata) */

/* 0: work() calls in pid_lib, 1: in pid_plain, 2: their getppid calls,
 * 3: work() calls of other processes */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} hyarr_counts SEC(".maps");

/* the same counts in a hash map, as BCC and libbpf-tools count: an atomic
 * add, or an insert of 1 when the key is new (in hybrid mode: counted in
 * shared memory, folded into this map by the loader) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} hyhash_counts SEC(".maps");

static __always_inline void add(__u32 k)
{
	__u64 one = 1, *v = bpf_map_lookup_elem(&hyarr_counts, &k);

	if (v)
		__sync_fetch_and_add(v, 1);
	v = bpf_map_lookup_elem(&hyhash_counts, &k);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&hyhash_counts, &k, &one, BPF_NOEXIST);
}

SEC("uprobe")
int on_work(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	add(tgid == pid_lib ? 0 : tgid == pid_plain ? 1 : 3);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (tgid == pid_lib || tgid == pid_plain)
		add(2);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
