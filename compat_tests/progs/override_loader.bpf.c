// SPDX-License-Identifier: GPL-2.0
/* Programs of override_loader.c (compat_tests/test_override.py): every
 * 2nd call of a probed function returns OVERRIDE_RC without running it
 * (one program, attached to each function with its index as the cookie),
 * every 3rd openat(OPEN_FLAGS) of the target fails with ENOENT, every 2nd
 * getppid() returns 4242 (raw_syscalls:sys_enter) and the others 4343
 * (sys_exit_getppid), and a
 * uretprobe counts the returns it sees and those that returned
 * OVERRIDE_RC; a second program on ov_endbr counts every call; force_rc
 * makes every return of a function OVERRIDE_RC. */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define OVERRIDE_RC -7777
#define ENOENT 2
#define OPEN_FLAGS (00 | 02000000 | 0400 | 04000)   /* O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK */

/* [0..2] hits by function, [3..5] overrides, [6] openat hits, [7] openat
 * overrides, [8] uretprobe returns, [9] of them OVERRIDE_RC, [10] hits of
 * the second program, [11] getppid hits, [12] getppid overrides; cfg[0]
 * the target's tgid */
enum { HITS = 0, OVERRIDES = 3, OPEN_HITS = 6, OPEN_OVERRIDES = 7, RETS = 8, RETS_RC = 9, SECOND_HITS = 10,
       RAW_HITS = 11, RAW_OVERRIDES = 12, NCOUNTS = 16 };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NCOUNTS);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} cfg SEC(".maps");

static __u64 *slot(__u32 k)
{
	return bpf_map_lookup_elem(&counts, &k);
}

SEC("uprobe")
int every_2nd(struct pt_regs *ctx)
{
	__u32 f = (__u32)bpf_get_attach_cookie(ctx);
	__u64 *hits = slot(HITS + f), *ovs = slot(OVERRIDES + f);

	if (f > 2 || !hits || !ovs)
		return 0;
	if ((__sync_fetch_and_add(hits, 1) + 1) % 2 == 0) {
		bpf_override_return(ctx, OVERRIDE_RC);
		__sync_fetch_and_add(ovs, 1);
	}
	return 0;
}

/* a second program on ov_endbr's entry, after every_2nd: it runs on
 * every call, overridden or not */
SEC("uprobe")
int every_call(struct pt_regs *ctx)
{
	__u64 *hits = slot(SECOND_HITS);

	if (hits)
		__sync_fetch_and_add(hits, 1);
	return 0;
}

SEC("uretprobe")
int returns(struct pt_regs *ctx)
{
	__u64 *rets = slot(RETS), *rc = slot(RETS_RC);

	if (!rets || !rc)
		return 0;
	__sync_fetch_and_add(rets, 1);
	if (PT_REGS_RC(ctx) == OVERRIDE_RC)
		__sync_fetch_and_add(rc, 1);
	return 0;
}

/* in a uretprobe the helper replaces the value the caller gets */
SEC("uretprobe")
int force_rc(struct pt_regs *ctx)
{
	bpf_override_return(ctx, OVERRIDE_RC);
	return 0;
}

/* the sys_enter_openat record: common fields, __syscall_nr, the arguments */
struct enter_openat {
	__u64 common;
	__s32 nr, pad;
	__u64 dfd, filename, flags, mode;
};

SEC("tracepoint/syscalls/sys_enter_openat")
int every_3rd_openat(struct enter_openat *ctx)
{
	__u32 zero = 0;
	__u64 *tgid = bpf_map_lookup_elem(&cfg, &zero), *hits = slot(OPEN_HITS), *ovs = slot(OPEN_OVERRIDES);

	if (!tgid || !hits || !ovs || bpf_get_current_pid_tgid() >> 32 != *tgid || ctx->flags != OPEN_FLAGS)
		return 0;
	if ((__sync_fetch_and_add(hits, 1) + 1) % 3 == 0) {
		bpf_override_return((struct pt_regs *)ctx, -ENOENT);
		__sync_fetch_and_add(ovs, 1);
	}
	return 0;
}

/* raw_syscalls:sys_enter: every 2nd getppid() of the target returns 4242 */
struct raw_enter {
	__u64 common;
	__s64 id;
	__u64 args[6];
};

SEC("tracepoint/raw_syscalls/sys_enter")
int every_2nd_getppid(struct raw_enter *ctx)
{
	__u32 zero = 0;
	__u64 *tgid = bpf_map_lookup_elem(&cfg, &zero), *hits = slot(RAW_HITS), *ovs = slot(RAW_OVERRIDES);

	if (!tgid || !hits || !ovs || bpf_get_current_pid_tgid() >> 32 != *tgid || ctx->id != 110 /* getppid */)
		return 0;
	if ((__sync_fetch_and_add(hits, 1) + 1) % 2 == 0) {
		bpf_override_return((struct pt_regs *)ctx, 4242);
		__sync_fetch_and_add(ovs, 1);
	}
	return 0;
}

/* sys_exit_getppid: a result that is not 4242 (the enter program's)
 * becomes 4343 */
struct exit_rec {
	__u64 common;
	__s32 nr, pad;
	__s64 ret;
};

SEC("tracepoint/syscalls/sys_exit_getppid")
int replace_getppid(struct exit_rec *ctx)
{
	__u32 zero = 0;
	__u64 *tgid = bpf_map_lookup_elem(&cfg, &zero);

	if (tgid && bpf_get_current_pid_tgid() >> 32 == *tgid && ctx->ret != 4242)
		bpf_override_return((struct pt_regs *)ctx, 4343);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
