/* SPDX-License-Identifier: MIT */
/* The threads of this process (see tasks.c). */
#ifndef BPFSHIM_TASKS_H
#define BPFSHIM_TASKS_H

/* Open the task directory: at start and in a fork child, while the
 * application cannot be opening files. */
void rt_tasks_reopen(void);

/* fn(tid, arg) for each thread of this process, this one included (walks
 * do not nest: fn must not walk); 0 or -errno. Not for a probe. */
int rt_tasks_walk(void (*fn)(int tid, void *arg), void *arg);

#endif
