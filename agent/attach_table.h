/* SPDX-License-Identifier: MIT */
/*
 * The attach table: what every process running the agent must hook.
 *
 * One file per user, $RUNTIME_DIR/attach.tbl, written only by the server,
 * mapped read-only by every agent. A change bumps `gen` and wakes the
 * agents futex-waiting on it; each agent then compares the slots with what
 * it has applied (by slot index and `seq`) and patches or unpatches.
 * Also read by cffi (syscall_server/attach.py): plain structs only.
 */
#ifndef BPFSHIM_ATTACH_TABLE_H
#define BPFSHIM_ATTACH_TABLE_H

enum {
	ATTACH_TABLE_MAGIC = 0x4c425441,   /* "ATBL" */
	ATTACH_TABLE_VERSION = 1,
	ATTACH_TABLE_SLOTS = 4096,
	ATTACH_PATH_MAX = 256,
};

enum attach_state {
	ATTACH_FREE = 0,
	ATTACH_ENABLED = 1,
	ATTACH_DISABLED = 2,
};

enum attach_flags {
	ATTACH_F_RETPROBE = 1,
	/* A syscall tracepoint (agent/syscall/trace.c), not a uprobe: `offset` is
	 * the syscall number (syscalls:sys_{enter,exit}_*), any syscall with
	 * ATTACH_F_RAW_SYSCALLS (raw_syscalls:*); `tp_type` the event id. */
	ATTACH_F_SYSCALL = 2,
	ATTACH_F_SYS_EXIT = 4,
	ATTACH_F_RAW_SYSCALLS = 8,
	/* sched:sched_process_exit, fired by a thread's exit or exit_group
	 * (with ATTACH_F_SYSCALL; `offset` unused) */
	ATTACH_F_SCHED_EXIT = 16,
	/* sched:sched_process_fork (the parent of a clone, fork or vfork) and
	 * sched:sched_process_exec (a new image, before main) */
	ATTACH_F_SCHED_FORK = 32,
	ATTACH_F_SCHED_EXEC = 64,
	/* signal:signal_generate, for the signals kill/tkill/tgkill/
	 * rt_(tg)sigqueueinfo send (not those the kernel generates) */
	ATTACH_F_SIGNAL_GENERATE = 128,
	/* A hybrid loader's uprobe (libbpf_shim/hybrid.c): the kernel's uprobe
	 * on the same site serves the processes without the agent. An agent
	 * takes the site over from the kernel's breakpoint (agent/uprobe.c). */
	ATTACH_F_KERNEL_TWIN = 256,
};

struct attach_slot {
	uint32_t state;            /* enum attach_state */
	uint32_t prog_id;
	uint64_t seq;              /* changes whenever the slot is (re)used */
	uint64_t dev;              /* the probed file: st_dev, st_ino */
	uint64_t ino;
	uint64_t offset;           /* file offset of the probed instruction */
	uint64_t ref_ctr_offset;   /* USDT semaphore, 0 if none */
	uint64_t cookie;           /* bpf_get_attach_cookie() */
	int32_t pid;               /* only this process, or -1 */
	uint32_t flags;            /* enum attach_flags */
	uint32_t event_id;         /* the perf event (or link) behind it */
	uint32_t tp_type;          /* tracepoints: the tracefs event id (common_type) */
	char path[ATTACH_PATH_MAX];
};

struct attach_table {
	uint32_t magic;
	uint32_t version;
	uint32_t gen;              /* futex word */
	uint32_t nslots;
	uint64_t _reserved[6];
	struct attach_slot slots[ATTACH_TABLE_SLOTS];
};

#endif
