/* SPDX-License-Identifier: MIT */
/*
 * What the files of interposed libc entry points share (interpose.c,
 * mmap.c, fs_views.c, bpffs.c, wakeup_calls.c, creds.c): the real
 * functions resolved before first use, and errno left as it was.
 */
#ifndef BPFSHIM_INTERPOSE_H
#define BPFSHIM_INTERPOSE_H

#include <errno.h>
#include <stdio.h>
#include "shim.h"

extern int real_resolved;   /* interpose.c: the real table is filled */

#define ENSURE() do { if (__builtin_expect(!real_resolved, 0)) shim_resolve_real(); } while (0)

/* Every entry point leaves errno as it found it when it succeeds, as the
 * kernel's syscalls and libc's wrappers do: the shim's own work (connecting,
 * spawning the server, notifying it) must not show (bpftool batch checks
 * errno after reading each line). */
#define KEEP_ERRNO(type, call, ok)                      \
	do {                                            \
		int e_ = errno;                         \
		type r_ = (call);                       \
		if (ok)                                 \
			errno = e_;                     \
		return r_;                              \
	} while (0)

/* bpffs.c: /proc/mounts with a bpffs at /sys/fs/bpf, or NULL (fopen() of fs_views.c) */
FILE *mounts_with_bpffs(const char *path);

#endif
