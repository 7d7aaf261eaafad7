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
	ATTACH_TABLE_VERSION = 2,
	ATTACH_TABLE_SLOTS = 4096,
	ATTACH_PATH_MAX = 256,
};

enum attach_state {
	ATTACH_FREE = 0,
	ATTACH_ENABLED = 1,
	ATTACH_DISABLED = 2,
};

/* What a slot attaches, one kind per kernel event; each kind is served in
 * one place of the agent. */
enum attach_kind {
	/* A uprobe or uretprobe: `dev`/`ino`/`path` the file, `offset` the
	 * probed instruction's file offset (agent/uprobe.c). */
	ATTACH_KIND_UPROBE = 0,
	/* syscalls:sys_enter_* / sys_exit_* of `syscall_nr`, raw_syscalls:*
	 * (any syscall, ATTACH_F_RAW_SYSCALLS) (agent/syscall/trace.c) */
	ATTACH_KIND_SYS_ENTER = 1,
	ATTACH_KIND_SYS_EXIT = 2,
	/* sched:sched_process_exit, fired by a thread's exit or exit_group */
	ATTACH_KIND_SCHED_PROCESS_EXIT = 3,
	/* sched:sched_process_fork (the parent of a clone, fork or vfork) and
	 * sched:sched_process_exec (a new image, before main) */
	ATTACH_KIND_SCHED_PROCESS_FORK = 4,
	ATTACH_KIND_SCHED_PROCESS_EXEC = 5,
	/* signal:signal_generate, for the signals kill/tkill/tgkill/
	 * rt_(tg)sigqueueinfo send (not those the kernel generates)
	 * (records: agent/syscall/events.c) */
	ATTACH_KIND_SIGNAL_GENERATE = 6,
};

enum attach_flags {
	ATTACH_F_RETPROBE = 1,        /* ATTACH_KIND_UPROBE: a uretprobe */
	/* ATTACH_KIND_UPROBE: a hybrid loader's uprobe (libbpf_shim/hybrid.c):
	 * the kernel's uprobe on the same site serves the processes without
	 * the agent. An agent takes the site over from the kernel's breakpoint
	 * (agent/uprobe.c). */
	ATTACH_F_KERNEL_TWIN = 2,
	/* ATTACH_KIND_SYS_ENTER/EXIT: raw_syscalls:*, every syscall, its record
	 * (`syscall_nr` unused) */
	ATTACH_F_RAW_SYSCALLS = 4,
};

struct attach_slot {
	uint32_t state;            /* enum attach_state */
	uint32_t prog_id;
	uint64_t seq;              /* changes whenever the slot is (re)used */
	uint64_t dev;              /* the probed file: st_dev, st_ino */
	uint64_t ino;
	uint64_t offset;           /* uprobes: file offset of the probed instruction */
	uint64_t ref_ctr_offset;   /* USDT semaphore, 0 if none */
	uint64_t cookie;           /* bpf_get_attach_cookie() */
	int32_t pid;               /* only this process, or -1 */
	uint32_t kind;             /* enum attach_kind */
	uint32_t flags;            /* enum attach_flags */
	uint32_t event_id;         /* the perf event (or link) behind it */
	uint32_t tp_type;          /* tracepoints: the tracefs event id (common_type) */
	int32_t syscall_nr;        /* ATTACH_KIND_SYS_ENTER/EXIT */
	uint32_t _pad;
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
