/* SPDX-License-Identifier: MIT */
/* Futex on a word in shared memory (the attach table's generation). */
#include <limits.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include "common.h"

BPFSHIM_API void shm_futex_wake(uint32_t *addr)
{
	syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Wait while *addr == val, at most timeout_ms. */
void shm_futex_wait(uint32_t *addr, uint32_t val, int timeout_ms)
{
	struct timespec ts = { timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L };
	syscall(SYS_futex, addr, FUTEX_WAIT, val, &ts, NULL, 0);
}
