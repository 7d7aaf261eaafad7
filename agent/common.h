/* SPDX-License-Identifier: MIT */
/* Small things every native file of bpfshim uses. */
#ifndef BPFSHIM_COMMON_H
#define BPFSHIM_COMMON_H

/* The libraries are built with -fvisibility=hidden: only what is marked
 * BPFSHIM_API (and the interposed libc symbols) is exported. */
#define BPFSHIM_API __attribute__((visibility("default")))

#define BPFSHIM_ROUND_UP(x, a) (((x) + (a) - 1) / (a) * (a))
#define BPFSHIM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
