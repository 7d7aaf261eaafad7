/* USDT through libbpf (usdt.bpf.h): counts the app:tick probe's hits and
 * sums its two arguments (compat_tests/progs/usdt_loader.c). */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 4); __type(key, __u32); __type(value, __u64); } out SEC(".maps");
SEC("usdt")
int BPF_USDT(on_tick, long i, long j)
{
	__u32 k0 = 0, k1 = 1, k2 = 2;
	__u64 *a = bpf_map_lookup_elem(&out, &k0), *b = bpf_map_lookup_elem(&out, &k1), *c = bpf_map_lookup_elem(&out, &k2);
	if (a) __sync_fetch_and_add(a, 1);
	if (b) __sync_fetch_and_add(b, i);
	if (c) __sync_fetch_and_add(c, j);
	return 0;
}
char LICENSE[] SEC("license") = "GPL";
