// SPDX-License-Identifier: GPL-2.0
/* compat_tests/test_hybrid.py, with hybrid_events.c: a kernel tracepoint
 * program and a uprobe program of two processes (pids[0] runs the library
 * in a hybrid run, pids[1] does not) sharing a hash map and a ringbuf. The
 * uprobe only adds to the map, and outputs its events with
 * bpf_ringbuf_output (even x), reserve + submit (odd x) and a reserve +
 * discard (x a multiple of 5): in hybrid mode it has a user-space twin in
 * the process with the library, whose events are forwarded into this
 * ringbuf. */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct event {
	__u32 kind;          /* 0 tracepoint, 1 uprobe */
	__u32 who;           /* 0: pids[0], 1: pids[1] */
	__s64 x;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} hyev_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} hyev_events SEC(".maps");

const volatile __u32 pids[2];

static __always_inline int who(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	return tgid == pids[0] ? 0 : tgid == pids[1] ? 1 : -1;
}

static __always_inline void count(__u32 key)
{
	__u64 one = 1, *c = bpf_map_lookup_elem(&hyev_counts, &key);

	if (c)
		__sync_fetch_and_add(c, 1);
	else
		bpf_map_update_elem(&hyev_counts, &key, &one, BPF_NOEXIST);
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	int w = who();
	struct event *e;

	if (w < 0)
		return 0;
	count(w);
	e = bpf_ringbuf_reserve(&hyev_events, sizeof(*e), 0);
	if (e) {
		e->kind = 0;
		e->who = w;
		e->x = 0;
		bpf_ringbuf_submit(e, 0);
	}
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(on_work, unsigned int x)
{
	int w = who();
	struct event ev = { .kind = 1, .x = x }, *e;

	if (w < 0)
		return 0;
	ev.who = w;
	count(2 + w);
	if (x & 1) {
		e = bpf_ringbuf_reserve(&hyev_events, sizeof(*e), 0);
		if (e) {
			*e = ev;
			bpf_ringbuf_submit(e, 0);
		}
	} else {
		bpf_ringbuf_output(&hyev_events, &ev, sizeof(ev), 0);
	}
	if (x % 5 == 0) {
		e = bpf_ringbuf_reserve(&hyev_events, sizeof(*e), 0);
		if (e)
			bpf_ringbuf_discard(e, 0);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
