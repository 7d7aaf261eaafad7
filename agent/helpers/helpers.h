/* SPDX-License-Identifier: MIT */
/*
 * What the engines (interp.c), the runner (prog_run.c), the conformance
 * entry and the helpers share inside the agent. Not part of the ABI of AOT
 * blobs (that is bpf_rt.h).
 */
#ifndef BPFSHIM_HELPERS_H
#define BPFSHIM_HELPERS_H

#include <stddef.h>
#include <stdint.h>
#include "bpf_rt.h"

typedef uint64_t u64;

/* A helper's return value for -errno. */
static inline u64 bpf_rt_err(int e)
{
	return (u64)(int64_t)-e;
}

/* Frames of bpf-to-bpf calls and callbacks (bpf_loop) below the program's
 * entry frame on this thread; the engines refuse to go past
 * BPF_RT_MAX_CALL_FRAMES. Saved and reset by bpf_prog_run (a nested run
 * starts at 0) and restored after it, also on the fault path. */
extern __thread int bpf_rt_call_depth;

/* End the program run in progress on this thread as a fault (what the
 * engines do on an instruction the loader should have refused): jumps to the
 * run's fault_jmp. Outside a run, traps. */
__attribute__((noreturn)) void bpf_rt_fault(int sig);
/* End the run in progress at once with r0 (not a fault): the conformance
 * suite's "unwind" helper. */
__attribute__((noreturn)) void bpf_rt_exit_run(uint64_t r0);

/* Fault-safe copies of arbitrary addresses of this process (the kernel's
 * copy_{from,to}_user_nofault): 0 or -EFAULT, never a crash. A partial copy
 * may have happened when -EFAULT is returned. */
int bpf_rt_copy_nofault(void *dst, const void *src, size_t n);
/* A guard over a longer stretch of code touching such memory (a loader's
 * whole bpf() command, each copy inside it): a fault in it returns to jb,
 * set with bpf_rt_setjmp, non-zero. enter returns the guard it replaces,
 * for exit. Inline: a map element command arms three (ns each count). */
extern __thread bpf_rt_jmp_buf *volatile bpf_rt_copy_jmp;
extern int bpf_rt_handlers_installed;   /* -1 once the fault handler is in (bpf_rt_once) */
void bpf_rt_guard_install(void);
static inline bpf_rt_jmp_buf *bpf_rt_guard_enter(bpf_rt_jmp_buf *jb)
{
	bpf_rt_jmp_buf *prev = bpf_rt_copy_jmp;

	if (__builtin_expect(__atomic_load_n(&bpf_rt_handlers_installed, __ATOMIC_ACQUIRE) != -1, 0))
		bpf_rt_guard_install();
	bpf_rt_copy_jmp = jb;
	__asm__ __volatile__("" ::: "memory");
	return prev;
}
static inline void bpf_rt_guard_exit(bpf_rt_jmp_buf *prev)
{
	__asm__ __volatile__("" ::: "memory");
	bpf_rt_copy_jmp = prev;
}
/* This process is a forked child: per-task caches are stale. */
void bpf_rt_forked(void);
/* The calling thread exits with this task->exit_code (current_task.c). */
void bpf_rt_task_exiting(int exit_code);
/* Changes in each forked child (task_helpers.c). */
unsigned bpf_rt_fork_gen(void);
/* The calling thread's comm (16 bytes, NUL-padded), cached per thread and
 * read again after a fork or a rename: prctl(PR_SET_NAME) and
 * pthread_setname_np() bump bpf_rt_comm_epoch (current_task.c). */
const char *bpf_rt_comm(void);
extern unsigned bpf_rt_comm_epoch;

/* The synthetic task structures of bpf_get_current_task (current_task.c).
 * What can change under a process (its credentials, its parent after a
 * reparenting) is refreshed when a probe read touches it: the probe reads
 * call bpf_rt_task_watch() on what they read. */
extern uintptr_t bpf_rt_task_watch_lo, bpf_rt_task_watch_hi;
void bpf_rt_task_touch(uintptr_t addr, size_t n);
void bpf_rt_current_task_forked(void);
/* Read the task layout now (the follower, before a probe needs it). */
void bpf_rt_task_prepare(void);
static inline void bpf_rt_task_watch(const void *src, size_t n)
{
	uintptr_t a = (uintptr_t)src;

	if (__builtin_expect(a < bpf_rt_task_watch_hi && a + n > bpf_rt_task_watch_lo, 0))
		bpf_rt_task_touch(a, n);
}
/* strncpy_from_user_nofault(): bytes copied including the NUL (at most n, the
 * string cut and NUL-terminated at n - 1), or -EFAULT. */
long bpf_rt_strncpy_nofault(char *dst, const char *src, size_t n);

/* The interpreter, entered at a subprogram (callbacks): insn_idx may carry
 * BPF_RT_CB_INSN_TAG. */
uint64_t bpf_interp_call(const struct bpf_prog_rt *prog, uint64_t insn_idx, uint64_t r1, uint64_t r2,
			 uint64_t r3, uint64_t r4, uint64_t r5);
/* The interpreter with r1 and r2 set (bpf_conformance convention). */
uint64_t bpf_interp_run2(const struct bpf_prog_rt *prog, uint64_t r1, uint64_t r2);

/* Runner internals shared with conformance.c: run `prog` in a pushed run
 * context with fault containment, r1/r2 as given and `helpers` (NULL: the
 * program's own table). 0 and *ret, or -EFAULT. */
int bpf_rt_run_guarded(const struct bpf_prog_rt *prog, void *ctx, uint64_t r2, uint64_t cookie,
		       uint64_t func_ip, uint64_t *ret);

/* Ringbuf samples reserved on this thread and not yet submitted or
 * discarded: a run notes the count when it starts and discards what is left
 * above it when it ends, also after a fault (ringbuf_helpers.c). */
uint32_t bpf_rt_ringbuf_mark(void);
void bpf_rt_ringbuf_release(uint32_t mark);

/* bpf_override_return's request on this thread, for the code that runs
 * probe programs (agent/uprobe.c, agent/syscall/trace.c): it clears `set`
 * before its programs run and applies `rc` after them. Probe runs do not
 * nest on a thread (in_probe). */
struct bpf_rt_override {
	int set;
	uint64_t rc;
};
extern __thread struct bpf_rt_override bpf_rt_override;

/* The helpers of agent/helpers/, one function each, named after their
 * enum bpf_func_id entry (BPF_FUNC_x -> bpf_x). */
#define BPF_RT_HELPERS(X)                                                          \
	X(map_lookup_elem) X(map_update_elem) X(map_delete_elem)                   \
	X(map_push_elem) X(map_pop_elem) X(map_peek_elem) X(tail_call)             \
	X(probe_read) X(probe_read_user) X(probe_read_kernel)                      \
	X(probe_read_str) X(probe_read_user_str) X(probe_read_kernel_str)          \
	X(probe_write_user) X(strncmp) X(strtol) X(strtoul) X(snprintf)           \
	X(ktime_get_ns) X(ktime_get_boot_ns) X(ktime_get_coarse_ns)               \
	X(ktime_get_tai_ns) X(jiffies64)                                            \
	X(get_prandom_u32) X(get_smp_processor_id) X(get_numa_node_id)             \
	X(get_current_pid_tgid) X(get_current_uid_gid) X(get_current_comm)         \
	X(get_current_task) X(get_current_task_btf) X(get_ns_current_pid_tgid)                             \
	X(send_signal) X(send_signal_thread)                                       \
	X(get_func_ip) X(get_attach_cookie) X(override_return)                  \
	X(skb_load_bytes) X(csum_diff) X(csum_update)                              \
	X(skb_vlan_push) X(skb_vlan_pop)                                           \
	X(loop) X(for_each_map_elem) X(spin_lock) X(spin_unlock)                  \
	X(trace_printk) X(trace_vprintk)                                          \
	X(ringbuf_output) X(ringbuf_reserve) X(ringbuf_submit)                     \
	X(ringbuf_discard) X(ringbuf_query)                                        \
	X(get_stackid) X(get_stack)                                                \
	X(sk_lookup_tcp) X(sk_lookup_udp) X(skc_lookup_tcp) X(sk_release)         \
	X(sk_fullsock) X(tcp_sock) X(get_listener_sock)                           \
	X(get_socket_cookie) X(get_netns_cookie) X(get_cgroup_classid)            \
	X(current_task_under_cgroup)

#define BPF_RT_HELPER_DECL(name) u64 bpf_##name(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5);
BPF_RT_HELPERS(BPF_RT_HELPER_DECL)
#undef BPF_RT_HELPER_DECL

#endif
