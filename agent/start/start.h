/* SPDX-License-Identifier: MIT */
/*
 * The start-up steps of each part of the native libraries, run in one
 * explicit sequence by the library's only constructor (libbpf_shim/start/preload.c for
 * libbpfshim.so, agent/start/core.c for the server's libbpfshim_core.so) instead
 * of constructor priorities. A step a file needs at load goes here and in
 * the sequence, where its place says what it needs before and after it.
 * The map engine (agent/maps) keeps its own constructor (shm_lock.c's fork
 * handler): it is also built into programs of its own (agent/maps/tests).
 */
#ifndef BPFSHIM_START_H
#define BPFSHIM_START_H

/* the loader side (libbpf_shim/) */
void interpose_init(void);      /* interpose.c: the real libc functions */
void rundir_init(void);         /* rundir.c: the runtime directory, from the environment at load */
void rt_loader_init(void);      /* rt_loader.c: what the loader gives the runtime layer */
void conn_init(void);           /* conn.c: the connection's fork handler */
void hybrid_init(void);         /* hybrid.c: BPFSHIM_KERNEL */
void no_jit_env(void);          /* prog.c: BPFSHIM_NO_JIT */
void perf_helpers_init(void);   /* perf_event.c */
void prog_array_init(void);     /* prog.c */
void wakeup_init(void);         /* wakeup.c */

/* the agent (agent/: hooks, follower, syscall tracepoints) */
void rt_agent_init(void);       /* hook/rt_agent.c: what the hook engine gives the runtime layer */
void tasks_init(void);          /* hook/tasks.c: before anything attaches or starts a thread */
void hook_keys(void);           /* hook/hook.c: thread keys, before the application's */
void site_init(void);           /* syscall/site.c */
void dispatch_init(void);       /* syscall/dispatch.c: BPFSHIM_NO_SYSCALL_DISPATCH, fork handler */
void dispatch_fork_begin_init(void);  /* syscall/dispatch.c: a fork child's handlers are the runtime's: the first */
void dispatch_fork_end_init(void);    /* syscall/dispatch.c: ... and the last handler registered */
void uprobe_init(void);         /* uprobe.c: the follower, probes that exist at start */

/* the runtime (agent/rt, engines, helpers, maps) */
void block_key_init(void);      /* helpers/current_task.c */
void altstack_key_init(void);   /* prog_run.c */
void task_helpers_init(void);   /* helpers/task_helpers.c */
void rt_thread_init(void);      /* rt_thread.c */
void layout_early(void);        /* helpers/current_task.c: the task layout, once the server may run */

#endif
