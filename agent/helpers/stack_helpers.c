/* SPDX-License-Identifier: MIT */
/*
 * bpf_get_stackid and bpf_get_stack (kernel/bpf/stackmap.c) for programs
 * run by probes: the callchain is get_perf_callchain()'s for the pt_regs the
 * trampoline filled.
 *
 *   - User stack (BPF_F_USER_STACK): perf_callchain_user() on x86-64: ip,
 *     the return address at [sp] when the probe sits on a `push %rbp`
 *     (is_uprobe_at_func_entry(); not on `endbr64`, measured on 6.18), then the frame-pointer chain
 *     from bp ({next fp, return address} pairs) read fault-safely until a
 *     read fails or max_depth entries; return addresses swapped for the
 *     uretprobe trampoline are put back (fixup_uretprobe_trampoline_entries()).
 *   - Kernel stack: the regs of a uprobe are user-mode regs, so the kernel's
 *     callchain is empty: get_stackid gives -EFAULT, get_stack 0 bytes, as
 *     on the kernel.
 *   - Syscall tracepoints: the user regs at the syscall, whose address the
 *     record starts with (as the kernel's perf_call_bpf_enter puts it there).
 *   - Programs whose context is not a pt_regs (raw tracepoints run through
 *     PROG_TEST_RUN) have no user regs here: an empty callchain (the kernel
 *     would walk the user stack of the bpf() caller).
 * BPF_F_USER_BUILD_ID: no build ids are read; every frame is
 * BPF_STACK_BUILD_ID_IP with its ip (the kernel's fallback).
 */
#include <errno.h>
#include <string.h>
#include "helpers.h"
#include "map.h"
#include "rt.h"

#define PERF_MAX_STACK_DEPTH 127          /* sysctl kernel.perf_event_max_stack */
#define TASK_SIZE_MAX 0x7ffffffff000ull   /* x86-64, 4-level paging */
#define MMAP_MIN_ADDR 4096ull             /* below: never mapped, a read would fault */

/* The callchain of the probed thread, at most max entries. */
static uint32_t callchain(int user, uint64_t *ips, uint32_t max)
{
	const struct bpf_run_ctx *rc = bpf_cur_run_ctx;
	const struct hook_pt_regs *regs;
	uint32_t n = 0;
	uint64_t fp, ret;

	if (!user || !max || !rc || !rc->prog || !rc->ctx)
		return 0;
	int tp = rc->prog->prog_type == BPF_PROG_TYPE_TRACEPOINT;
	if (tp)
		regs = *(const struct hook_pt_regs *const *)rc->ctx;   /* the record starts with the regs pointer */
	else if (rc->prog->prog_type == BPF_PROG_TYPE_KPROBE || rc->prog->prog_type == BPF_PROG_TYPE_PERF_EVENT)
		regs = rc->ctx;   /* a perf event's struct bpf_perf_event_data starts with its regs */
	else
		return 0;
	ips[n++] = regs->ip;
	if (n < max && !tp && rt_at_func_entry() && !bpf_rt_copy_nofault(&ret, (void *)(uintptr_t)regs->sp, 8))
		ips[n++] = ret;
	fp = regs->bp;
	while (n < max) {
		uint64_t frame[2];   /* next_frame, return_address */
		if (fp < MMAP_MIN_ADDR || fp > TASK_SIZE_MAX - sizeof(frame) ||
		    bpf_rt_copy_nofault(frame, (void *)(uintptr_t)fp, sizeof(frame)))
			break;
		ips[n++] = frame[1];
		fp = frame[0];
	}
	/* uretprobe trampolines in the chain: the return addresses they replaced */
	uint64_t tramp, orig[PERF_MAX_STACK_DEPTH];
	size_t norig = rt_ret_addrs(regs->sp, &tramp, orig, PERF_MAX_STACK_DEPTH), k = 0;
	for (uint32_t i = 0; i < n && k < norig; i++)
		if (ips[i] == tramp)
			ips[i] = orig[k++];
	return n;
}

/* bpf_get_stackid(ctx, map, flags) */
u64 bpf_get_stackid(u64 ctx, u64 map, u64 flags, u64 r4, u64 r5)
{
	struct shm_map *m = (struct shm_map *)(uintptr_t)map;
	uint64_t ips[PERF_MAX_STACK_DEPTH];
	uint32_t skip = flags & BPF_F_SKIP_FIELD_MASK, max_depth, elem;

	if (flags & ~(u64)(BPF_F_SKIP_FIELD_MASK | BPF_F_USER_STACK | BPF_F_FAST_STACK_CMP | BPF_F_REUSE_STACKID))
		return bpf_rt_err(EINVAL);
	if (!m || m->hdr->attr.map_type != BPF_MAP_TYPE_STACK_TRACE)
		return bpf_rt_err(EINVAL);
	elem = m->hdr->attr.map_flags & BPF_F_STACK_BUILD_ID ? sizeof(struct bpf_stack_build_id) : sizeof(uint64_t);
	max_depth = m->hdr->attr.value_size / elem + skip;
	if (max_depth > PERF_MAX_STACK_DEPTH)
		max_depth = PERF_MAX_STACK_DEPTH;
	uint32_t nr = callchain(!!(flags & BPF_F_USER_STACK), ips, max_depth);
	return (u64)(int64_t)shm_stack_map_get_stackid(m, ips, nr, flags);
}

/* bpf_get_stack(ctx, buf, size, flags): bytes written, or -errno with buf
 * zeroed (__bpf_get_stack()). */
u64 bpf_get_stack(u64 ctx, u64 buf, u64 size, u64 flags, u64 r5)
{
	uint64_t ips[PERF_MAX_STACK_DEPTH];
	uint32_t skip = flags & BPF_F_SKIP_FIELD_MASK, elem, num_elem, max_depth, nr, trace_nr;
	int user = !!(flags & BPF_F_USER_STACK), build_id = !!(flags & BPF_F_USER_BUILD_ID);
	char *dst = (char *)(uintptr_t)buf;
	int err = -EINVAL;
	uint64_t copied = 0;

	if (flags & ~(u64)(BPF_F_SKIP_FIELD_MASK | BPF_F_USER_STACK | BPF_F_USER_BUILD_ID))
		goto clear;
	if (!user && build_id)
		goto clear;
	elem = user && build_id ? sizeof(struct bpf_stack_build_id) : sizeof(uint64_t);
	if (size % elem)
		goto clear;
	num_elem = (uint32_t)(size / elem);
	max_depth = num_elem + skip;
	if (max_depth > PERF_MAX_STACK_DEPTH)
		max_depth = PERF_MAX_STACK_DEPTH;
	nr = callchain(user, ips, max_depth);
	if (nr < skip) {
		err = -EFAULT;
		goto clear;
	}
	trace_nr = nr - skip < num_elem ? nr - skip : num_elem;
	for (uint32_t i = 0; i < trace_nr; i++) {
		if (elem == sizeof(uint64_t)) {
			if (bpf_rt_copy_nofault(dst + copied, &ips[skip + i], 8))
				return bpf_rt_err(EFAULT);
		} else {
			struct bpf_stack_build_id id;
			memset(&id, 0, sizeof(id));
			id.status = BPF_STACK_BUILD_ID_IP;
			id.ip = ips[skip + i];
			if (bpf_rt_copy_nofault(dst + copied, &id, sizeof(id)))
				return bpf_rt_err(EFAULT);
		}
		copied += elem;
	}
	err = 0;
clear:
	for (uint64_t i = copied; i < size; i += 8) {
		static const char zeros[8];
		if (bpf_rt_copy_nofault(dst + i, zeros, size - i < 8 ? size - i : 8))
			return bpf_rt_err(EFAULT);
	}
	return err ? bpf_rt_err(-err) : copied;
}
