/* SPDX-License-Identifier: MIT */
/*
 * A 4-byte lock for shared memory that a dead process cannot leave held.
 *
 * The lock word holds the owner's thread id (0 = free). A waiter that has spun
 * for a while checks whether the owner still exists (kill(tid, 0) reaches the
 * owner's process on Linux) and takes the lock over with a CAS if it does not.
 * So a writer killed with SIGKILL inside a critical section stalls the others
 * for at most one liveness check. Data written under the lock is published
 * last (see the map types), so a half-done update is never visible.
 */
#ifndef BPFSHIM_SHM_LOCK_H
#define BPFSHIM_SHM_LOCK_H

#include <stdint.h>

typedef uint32_t shm_lock_t;

void shm_lock(shm_lock_t *l);
void shm_unlock(shm_lock_t *l);
/* This thread's tid, cached. */
uint32_t shm_self_tid(void);

#endif
