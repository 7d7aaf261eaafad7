// SPDX-License-Identifier: GPL-2.0
/* A kernel tracepoint program and a uprobe program sharing a hash map and a
 * ringbuf (compat_tests/test_hybrid.py, with hybrid_loader.c): the
 * tracepoint (sys_enter_getppid of the target) stores a timestamp by tid,
 * the uprobe on work(x) reads it back, and both count into `counts` and send
 * an event through `events`. */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct event {
	__u32 kind;          /* 0 tracepoint, 1 uprobe */
	__u32 seen_start;    /* uprobe: the tracepoint's timestamp was there and not later */
	__s64 x;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

const volatile __u32 target_tgid;

static __always_inline void count(__u32 key)
{
	__u64 one = 1, *c = bpf_map_lookup_elem(&counts, &key);

	if (c)
		__sync_fetch_and_add(c, 1);
	else
		bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST);
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid(), now = bpf_ktime_get_ns();
	__u32 tid = (__u32)id;
	struct event *e;

	if (id >> 32 != target_tgid)
		return 0;
	bpf_map_update_elem(&start, &tid, &now, BPF_ANY);
	count(0);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		e->kind = 0;
		e->seen_start = 0;
		e->x = 0;
		bpf_ringbuf_submit(e, 0);
	}
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(on_work, int x)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *t = bpf_map_lookup_elem(&start, &tid), now = bpf_ktime_get_ns();
	struct event ev = { .kind = 1, .x = x };

	if (t && *t <= now) {
		ev.seen_start = 1;
		bpf_map_delete_elem(&start, &tid);
	}
	count(1);
	count(2 + ev.seen_start);
	bpf_ringbuf_output(&events, &ev, sizeof(ev), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
