/* SPDX-License-Identifier: MIT */
/*
 * Attaching is synchronous, as on the kernel: when a loader's attach or
 * detach returns, every process that follows the attach table has applied
 * it. The kernel writes the breakpoint into every mapping before
 * perf_event_open / PERF_EVENT_IOC_ENABLE / BPF_LINK_CREATE return (and
 * removes it before close returns); bpfshim's agents apply the table in
 * their follower threads, so each says how far it got and the loader waits.
 *
 * $RUNTIME_DIR/agents: one entry per agent process of the user, mapped
 * shared and writable by every agent (the attach table stays the server's
 * alone to write). A process claims an entry when it looks for the table (a fork
 * child claims its own in its fork handler, in the mapping it inherited: it
 * may have changed user since), and its follower stores the table
 * generation it has fully applied after each complete pass (futex-woken).
 * Entries of dead processes are reclaimed by whoever finds them.
 */
#ifndef BPFSHIM_ATTACH_ACK_H
#define BPFSHIM_ATTACH_ACK_H

#include <stdint.h>

enum {
	ATTACH_ACK_MAGIC = 0x4b434141,     /* "AACK" */
	ATTACH_ACK_VERSION = 1,
	ATTACH_ACK_ENTS = 4096,
	/* The longest a loader's request waits for the agents, in all. */
	ATTACH_ACK_WAIT_MS = 1000,
};

struct attach_ack_ent {
	int32_t pid;           /* the owner (tgid); 0 free; -1 being claimed or reclaimed */
	uint32_t applied;      /* futex word: the table generation it has fully applied */
	uint64_t start;        /* the owner's start time (/proc/PID/stat field 22) */
	uint32_t late;         /* a wait ran out on it: not waited for until it catches up */
	uint32_t _pad;
};

struct attach_ack_reg {
	uint32_t magic;
	uint32_t version;
	uint32_t nents;
	uint32_t _pad;
	struct attach_ack_ent ents[ATTACH_ACK_ENTS];
};

/* The agent. At a point where it may open files (the constructor, before
 * main): this process's start time. */
void attach_ack_init(void);
/* The registry in the runtime directory `dir` and an entry for this process
 * (applied 0: nothing yet), also before the server made the table: a
 * loader then waits for this process too, and wakes its follower, which
 * looks for the table again. */
void attach_ack_join(const char *dir);
/* The follower until the table exists: sleep at most ms or until a loader
 * wakes it; -1 without an entry. attach_ack_kick() wakes it (to stop). */
int attach_ack_sleep(int ms);
void attach_ack_kick(void);
/* A fork child's handler, before its follower starts: an entry of its own,
 * starting where its parent's stood (it has the parent's patches). */
void attach_ack_forked(void);
/* Following another server from now on (`bpfshim attach`). */
void attach_ack_leave(void);
/* The follower after a complete pass over the table at `gen`; `now` is the
 * table's generation word (caught up when it still says gen). */
void attach_ack_applied(uint32_t gen, const uint32_t *now);

/* The loader: until every live agent that is not stopped has applied `gen`
 * or ATTACH_ACK_WAIT_MS have passed. */
void attach_ack_wait(uint32_t gen);

#endif
