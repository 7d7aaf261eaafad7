/* SPDX-License-Identifier: MIT */
/*
 * Syscall sites rewritten into jumps to bpfshim's code (site.c):
 * what the dispatch handler (dispatch.c) and the follower use.
 */
#ifndef BPFSHIM_SYSCALL_SITE_H
#define BPFSHIM_SYSCALL_SITE_H

#include <stddef.h>
#include <stdint.h>
#include "attach_table.h"
#include "hook/hook.h"

/* sud_nr_tab[nr & 0xffff]: what a rewritten site does with syscall nr
 * (0: the syscall, nothing attached). */
#define SITE_NR_TAB 65536
enum { SITE_TRACED = 1, SITE_TRAP = 2 };

/* $RUNTIME_DIR/syscall_sites.PID: read by `bpfshim status` (syscall_server/cli.py) */
#define SITE_STATS_MAGIC 0x53595353u   /* "SSYS" */
struct syscall_site_stats {
	uint32_t magic, pid;
	uint64_t start_time;       /* /proc/PID/stat field 22: tells a reused pid */
	uint64_t rewritten;        /* sites rewritten */
	uint64_t trapping;         /* sites left on dispatch */
	uint64_t traps;            /* syscalls that trapped (dispatch SIGSYS) */
	uint64_t events;           /* traced syscalls through rewritten sites (in batches of 64 a thread) */
};

/* The dispatch handler: a syscall trapped, its instruction ends at ip. */
void syscall_site_trapped(uint64_t ip);
/* The follower: rewrite the sites noted since; non-zero to be called again soon. */
int syscall_site_work(void);
/* The constructor, after it applied the probes that exist at start. */
void syscall_site_premap(void);
/* The follower, at each commit: which numbers have programs (the bitmaps
 * of nr_max bits; all set: raw_syscalls, every number), `on` while
 * dispatch is on. */
void syscall_site_publish(const uint8_t *enter, const uint8_t *exit, unsigned nr_max, int on);

/* dispatch.c: the syscall of a rewritten site with its programs, as the
 * dispatch handler runs a trapped one; r->ax gets the result. Non-zero for
 * a syscall that needs the handler's signal frame (it must trap). */
int syscall_tp_site(struct hook_pt_regs *r);
/* elf_probe.c: the function around s->offset of the file s names (path, dev,
 * ino): its size and the offset's distance from its start; 0 if no symbol. */
size_t agent_func_at(const struct attach_slot *s, uint64_t *before);
/* uprobe.c: wake the follower. */
void agent_follower_kick(void);

#endif
