/* SPDX-License-Identifier: MIT */
/*
 * Map helpers (through the map type's program-side ops in map.h) and
 * bpf_tail_call.
 *
 * A type without the op: lookup gives NULL, the others -EOPNOTSUPP (the
 * kernel's verifier refuses such calls at load, so only programs loaded
 * around it can see this).
 */
#include <errno.h>
#include "helpers.h"
#include "map.h"

#define MAP(r) ((struct shm_map *)(uintptr_t)(r))
#define PTR(r) ((void *)(uintptr_t)(r))
/* m's op `op` on the rest, or -EOPNOTSUPP for a type without it (a macro:
 * the ops differ in their arguments) */
#define MAP_OP(m, op, ...) \
	((m)->ops->op ? (u64)(int64_t)(m)->ops->op((m), __VA_ARGS__) : bpf_rt_err(EOPNOTSUPP))

u64 bpf_map_lookup_elem(u64 map, u64 key, u64 r3, u64 r4, u64 r5)
{
	struct shm_map *m = MAP(map);

	if (!m->ops->lookup_ptr)
		return 0;
	return (u64)(uintptr_t)m->ops->lookup_ptr(m, PTR(key));
}

u64 bpf_map_update_elem(u64 map, u64 key, u64 value, u64 flags, u64 r5)
{
	return MAP_OP(MAP(map), prog_update, PTR(key), PTR(value), flags);
}

u64 bpf_map_delete_elem(u64 map, u64 key, u64 r3, u64 r4, u64 r5)
{
	return MAP_OP(MAP(map), prog_delete, PTR(key));
}

u64 bpf_map_push_elem(u64 map, u64 value, u64 flags, u64 r4, u64 r5)
{
	return MAP_OP(MAP(map), push, PTR(value), flags);
}

u64 bpf_map_pop_elem(u64 map, u64 value, u64 r3, u64 r4, u64 r5)
{
	return MAP_OP(MAP(map), pop, PTR(value));
}

u64 bpf_map_peek_elem(u64 map, u64 value, u64 r3, u64 r4, u64 r5)
{
	return MAP_OP(MAP(map), peek, PTR(value));
}

/*
 * bpf_current_task_under_cgroup(cgroup_array, index): the kernel's checks on
 * the index and the slot. bpfshim's cgroup arrays cannot be filled (the
 * update fails with EOPNOTSUPP), so a slot in range is always empty:
 * -EAGAIN, as the kernel answers for an empty slot.
 */
u64 bpf_current_task_under_cgroup(u64 map, u64 index, u64 r3, u64 r4, u64 r5)
{
	struct shm_map *m = MAP(map);

	if ((uint32_t)index >= m->hdr->attr.max_entries)
		return bpf_rt_err(E2BIG);
	return bpf_rt_err(EAGAIN);
}

/*
 * bpf_tail_call(ctx, prog_array, index): records the target in the run
 * context; the engine returns at once and bpf_prog_run() goes on with it.
 * Checks in the kernel's order (___bpf_prog_run JMP_TAIL_CALL): the index,
 * then the count (incremented before the slot is read, so a call to an
 * empty slot counts too), then the slot. On failure the program goes on
 * after the call (r0 is the negative value; the kernel leaves r0 unknown).
 */
u64 bpf_tail_call(u64 ctx, u64 map, u64 index, u64 r4, u64 r5)
{
	struct bpf_run_ctx *rc = bpf_cur_run_ctx;
	struct shm_map *m = MAP(map);
	const struct bpf_prog_rt *next;

	if (!rc || !m || m->hdr->attr.map_type != BPF_MAP_TYPE_PROG_ARRAY)
		return bpf_rt_err(EINVAL);
	if ((uint32_t)index >= m->hdr->attr.max_entries)
		return bpf_rt_err(ENOENT);
	if (rc->tail_call_cnt >= BPF_RT_MAX_TAIL_CALL_CNT)
		return bpf_rt_err(ENOENT);
	rc->tail_call_cnt++;
	next = bpf_rt_prog_array_get ? bpf_rt_prog_array_get(m, (uint32_t)index) : NULL;
	if (!next)
		return bpf_rt_err(ENOENT);
	rc->tail_call_next = next;
	return 0;
}

/* bpf_spin_lock / bpf_spin_unlock on the struct bpf_spin_lock of a map
 * value: the lock BPF_F_LOCK takes in the syscall commands (map.h
 * shm_copy_value_locked). */
u64 bpf_spin_lock(u64 lock, u64 r2, u64 r3, u64 r4, u64 r5)
{
	shm_lock_t *l = (shm_lock_t *)PTR(lock);
	uint32_t dead = shm_lock_takeover(l);
	struct bpf_run_ctx *rc = bpf_cur_run_ctx;

	if (rc)
		rc->spin_lock = l;
	if (!dead)
		return 0;
	/* taken over from a killed BPF_F_LOCK writer: finish its copy, found
	 * through the program's map that holds the value */
	for (uint32_t i = 0; rc && rc->prog && i < rc->prog->nr_maps; i++) {
		const struct shm_map *m = rc->prog->maps[i];
		int32_t off = m->hdr->attr.spin_lock_off;

		if (off >= 0 && (char *)l >= (char *)m->hdr + off && (char *)l < (char *)m->hdr + m->size) {
			shm_value_lock_recover(m, (char *)l - off, dead);
			return 0;
		}
	}
	__atomic_store_n(l, shm_self_tid(), __ATOMIC_RELEASE);
	return 0;
}

u64 bpf_spin_unlock(u64 lock, u64 r2, u64 r3, u64 r4, u64 r5)
{
	struct bpf_run_ctx *rc = bpf_cur_run_ctx;

	if (rc && rc->spin_lock == PTR(lock))
		rc->spin_lock = NULL;
	shm_unlock((shm_lock_t *)PTR(lock));
	return 0;
}
