/* SPDX-License-Identifier: MIT */
/*
 * The runtime layer: what both sides of libbpfshim.so sit on. The loader
 * side (libbpf_shim/) and the agent (agent/: hooks, the attach-table
 * follower, syscall tracepoints) never reference each other; what one needs
 * of the other goes through here, registered at start-up by the side that
 * has it (callbacks go down, never calls up). The engines, helpers and maps
 * (agent/maps, agent/helpers, prog_run.c, interp.c, ...) are below both too.
 *
 * In the server's core library nothing registers: every entry answers
 * "none" (-ENOSYS), and each caller says what that means for it.
 */
#ifndef BPFSHIM_RT_H
#define BPFSHIM_RT_H

#include <stddef.h>
#include <stdint.h>

struct bpf_prog_rt;

/* What the loader side provides (libbpf_shim/: rundir.c, conn.c, prog.c,
 * interpose.c). */
struct rt_loader {
	/* The runtime directory of this process's server (rundir.c): 0 or -errno. */
	int (*runtime_dir)(char *out, size_t n);
	/* Follow the server in `dir` from now on (`bpfshim attach`). */
	int (*set_runtime_dir)(const char *dir);
	/* This library is in the process's global scope (preloaded). */
	int (*interposing)(void);
	/* Connect to a running server, never spawning one. */
	void (*connect_early)(void);
	/* The program cache: a program by id (held until released), and what it
	 * needs before a probe may run it (its maps, rings, tail-call targets). */
	const struct bpf_prog_rt *(*prog_by_id)(uint32_t id);
	void (*prog_release)(uint32_t id);
	void (*prog_prepare)(const struct bpf_prog_rt *prog);
};

/* Once, by the loader side's start-up, before the agent's. */
void rt_register_loader(const struct rt_loader *l);

int rt_runtime_dir(char *out, size_t n);       /* -ENOSYS: no loader (the server) */
int rt_set_runtime_dir(const char *dir);
int rt_interposing(void);                      /* 0 without a loader */
void rt_connect_early(void);
const struct bpf_prog_rt *rt_prog_by_id(uint32_t id);
void rt_prog_release(uint32_t id);
void rt_prog_prepare(const struct bpf_prog_rt *prog);

/* Followers (agent/uprobe.c) sleep on the attach table's generation word,
 * shared by every process of the user. The agent registers the word when it
 * maps the table. rt_followers_kick() wakes them through it (async-signal
 * safe: nothing when the agent has no table); rt_followers_poke() maps the
 * table for the wake if this process follows none (a loader that changed a
 * slot every follower must look at again). */
void rt_follow_word_set(const uint32_t *gen);
void rt_followers_kick(void);
void rt_followers_poke(void);
/* The table's generation word (the agent's, or mapped for a loader), or NULL. */
const uint32_t *rt_attach_gen(void);

/* Binary-identical to the kernel's x86-64 struct pt_regs, as BPF programs
 * read it (PT_REGS_PARM1 = di at offset 112, PT_REGS_RC = ax at 80). */
struct hook_pt_regs {
	uint64_t r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	uint64_t ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};
_Static_assert(offsetof(struct hook_pt_regs, di) == 112, "pt_regs layout");
_Static_assert(offsetof(struct hook_pt_regs, ax) == 80, "pt_regs layout");
_Static_assert(offsetof(struct hook_pt_regs, ip) == 128, "pt_regs layout");
_Static_assert(offsetof(struct hook_pt_regs, sp) == 152, "pt_regs layout");
_Static_assert(sizeof(struct hook_pt_regs) == 168, "pt_regs layout");

/* What the agent's hook engine gives user stack walks (helpers/stack_helpers.c),
 * as the kernel's perf_callchain_user() from a uprobe: at_func_entry() is 1
 * while entry handlers of a site whose original instruction is `push %rbp`
 * run on this thread; ret_addrs() gives the return trampoline's address and
 * the return addresses it replaced in frames at or above sp, innermost first
 * (agent/hook/hook.h). Both 0 without an agent. */
struct rt_agent {
	int (*at_func_entry)(void);
	size_t (*ret_addrs)(uint64_t sp, uint64_t *tramp, uint64_t *out, size_t max);
};
void rt_register_agent(const struct rt_agent *a);
int rt_at_func_entry(void);
size_t rt_ret_addrs(uint64_t sp, uint64_t *tramp, uint64_t *out, size_t max);

/* ---- bpfshim's per-thread state on application threads ---- */

/* The Syscall User Dispatch selector of this thread (PR_SET_SYSCALL_USER_DISPATCH):
 * SYSCALL_DISPATCH_FILTER_BLOCK (1) while the thread's syscalls go to the
 * tracepoints (agent/syscall/dispatch.c), ALLOW (0) otherwise. */
extern __thread char sud_selector;

/* bpfshim's own work on an application thread (a server request, a map
 * command, a probe's program) makes syscalls the kernel would not trace:
 * they run with the selector open. */
#ifndef BPFSHIM_CORE_ONLY
#define SUD_INTERNAL_BEGIN() char sud_saved_ = sud_selector; sud_selector = 0
#define SUD_INTERNAL_END() (sud_selector = sud_saved_)
#else   /* the server's copy of the runtime traces nothing */
#define SUD_INTERNAL_BEGIN() do { } while (0)
#define SUD_INTERNAL_END() do { } while (0)
#endif

/* 1 while a program runs on this thread, 2 in the runtime's own work: no
 * probe or tracepoint fires then. */
extern __thread int in_probe;

#endif
