/* SPDX-License-Identifier: MIT */
/*
 * Syscall tracepoints in user space (syscall_tp.c): the interface the attach
 * table follower (uprobe.c) and the shim's entry points use.
 */
#ifndef BPFSHIM_SYSCALL_TP_H
#define BPFSHIM_SYSCALL_TP_H

#include <stdint.h>
#include "attach_table.h"

/* The Syscall User Dispatch selector of this thread (PR_SET_SYSCALL_USER_DISPATCH):
 * SYSCALL_DISPATCH_FILTER_BLOCK (1) while the thread's syscalls go to the
 * tracepoints, ALLOW (0) otherwise. */
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
 * probe or tracepoint fires then (uprobe.c). */
extern __thread int in_probe;

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
