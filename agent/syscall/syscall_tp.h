/* SPDX-License-Identifier: MIT */
/*
 * Syscall tracepoints in user space (trace.c, dispatch.c): the interface the attach
 * table follower (uprobe.c) uses.
 */
#ifndef BPFSHIM_SYSCALL_TP_H
#define BPFSHIM_SYSCALL_TP_H

#include <stdint.h>
#include "attach_table.h"
#include "rt.h"         /* sud_selector, SUD_INTERNAL_*, in_probe */

/* The follower: slot i of the attach table is a syscall tracepoint that this
 * process wants (`want`) or not; after a pass over the table,
 * syscall_tp_commit() publishes the result and arms or disarms every thread. */
void syscall_tp_slot(unsigned i, const struct attach_slot *s, int want);
void syscall_tp_commit(void);
/* The follower, a few ms after a commit: ask threads made meanwhile; non-zero
 * while it wants to be called again. */
int syscall_tp_poll(void);
/* The constructor of a new image: the sys_exit of the execve that started it. */
void syscall_tp_exec_exit(void);

#endif
