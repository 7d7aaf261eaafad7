/* A program for the bpftool prog commands of compat_tests/test_bpftool.py:
 * no instruction the kernel rewrites into another count, so the xlated
 * dumps compare line by line. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 16); __type(key, __u32); __type(value, __u64); } bstt_cnt SEC(".maps");
SEC("syscall")
int bstt_prog(void *ctx)
{
	__u32 k = 1;
	__u64 v = 42;
	bpf_map_update_elem(&bstt_cnt, &k, &v, BPF_ANY);
	return 7;
}
char LICENSE[] SEC("license") = "GPL";
