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
 *
 * The word is the owner's tid in its low SHM_LOCK_TID_BITS (tids are below
 * PID_MAX_LIMIT, 2^22); the bits above are free for the holder to say what
 * it is in the middle of (a journaled value copy, agent/maps/map.c), which
 * a taker reads from shm_lock_takeover().
 */
#ifndef BPFSHIM_SHM_LOCK_H
#define BPFSHIM_SHM_LOCK_H

#include <stdint.h>

typedef uint32_t shm_lock_t;

#define SHM_LOCK_TID_BITS 22
#define SHM_LOCK_TID_MASK ((1u << SHM_LOCK_TID_BITS) - 1)

void shm_lock(shm_lock_t *l);
/* shm_lock, returning the word a dead owner left when the lock was taken
 * over from it (0 when it was acquired from a free state). The lock word
 * keeps the dead owner's upper bits until the taker stores its own tid. */
uint32_t shm_lock_takeover(shm_lock_t *l);
void shm_unlock(shm_lock_t *l);
/* Whether the thread a lock word (or any word with a tid in its low
 * SHM_LOCK_TID_BITS) names is gone; errno is kept. */
int shm_lock_owner_dead(uint32_t word);
/* This thread's tid, cached. */
uint32_t shm_self_tid(void);

#endif
