/* SPDX-License-Identifier: MIT */
/*
 * libbpfshim.so starts here, and only here: the one constructor, running the
 * start-up steps of the loader side, the agent and the runtime in the order
 * they need (start.h). It is the only code that knows every part.
 */
#include "start.h"

/* 101: the first of the library's constructors (0-100 are the toolchain's) */
__attribute__((constructor(101))) static void bpfshim_start(void)
{
	/* what everything else calls: the real libc functions, the runtime
	 * directory and connection, the runtime layer's registrations */
	dispatch_fork_begin_init();   /* the first fork handler */
	interpose_init();
	rundir_init();
	rt_loader_init();
	rt_agent_init();
	conn_init();            /* its fork handler before the follower's (uprobe_init) */
	hybrid_init();
	/* before anything attaches, runs a program or starts a thread */
	tasks_init();
	hook_keys();
	block_key_init();
	altstack_key_init();
	site_init();
	dispatch_init();
	no_jit_env();
	task_helpers_init();
	rt_thread_init();
	perf_helpers_init();
	prog_array_init();
	wakeup_init();
	/* the follower; probes that exist at start are in place before main() */
	uprobe_init();
	/* after uprobe_init, which may start the server */
	layout_early();
	dispatch_fork_end_init();     /* the last fork handler */
}
