/* SPDX-License-Identifier: MIT */
/*
 * Programs in this process. A program fd is a memfd holding the image the
 * server published (struct shim_prog_image); mapping it and resolving its
 * map ids to this process's map handles gives a runnable bpf_prog_rt.
 * Cached by program id for the life of the process (images are immutable).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/mman.h>
#include "shim.h"
#include "bpf_rt.h"
#include "start.h"

struct prog_cache_ent {
	uint32_t id;
	struct bpf_prog_rt *rt;
	int fd;                    /* the shim's own fd of the program, or -1 */
	void *image;
	size_t image_size;
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct prog_cache_ent *cache;
static size_t cache_len, cache_cap;

/* The built programs again, for probes (a tail call's target): read without
 * a lock, written under cache_lock; a released program's id is cleared. A
 * probe never builds a program nor asks the server for one: the follower
 * did it before the program could run here (shim_prog_prepare). */
#define LIVE_MAX 1024
static struct { uint32_t id; const struct bpf_prog_rt *rt; } live[LIVE_MAX];
static unsigned n_live;

static void live_add(uint32_t id, const struct bpf_prog_rt *rt)
{
	for (unsigned i = 0; i < n_live; i++)
		if (!__atomic_load_n(&live[i].id, __ATOMIC_RELAXED)) {
			__atomic_store_n(&live[i].rt, rt, __ATOMIC_RELEASE);
			__atomic_store_n(&live[i].id, id, __ATOMIC_RELEASE);
			return;
		}
	if (n_live < LIVE_MAX) {
		live[n_live].rt = rt;
		live[n_live].id = id;
		__atomic_store_n(&n_live, n_live + 1, __ATOMIC_RELEASE);
	}
}

static void live_drop(uint32_t id)
{
	for (unsigned i = 0; i < n_live; i++)
		if (live[i].id == id)
			__atomic_store_n(&live[i].id, 0, __ATOMIC_RELEASE);
}

static const struct bpf_prog_rt *live_find(uint32_t id)
{
	unsigned n = __atomic_load_n(&n_live, __ATOMIC_ACQUIRE);

	for (unsigned i = 0; i < n; i++)
		if (__atomic_load_n(&live[i].id, __ATOMIC_ACQUIRE) == id) {
			const struct bpf_prog_rt *rt = __atomic_load_n(&live[i].rt, __ATOMIC_ACQUIRE);
			/* not released and reused meanwhile */
			if (__atomic_load_n(&live[i].id, __ATOMIC_ACQUIRE) == id)
				return rt;
		}
	return NULL;
}

/* Move an fd the shim opened for its own use above the app's range. */
int shim_fd_internal(int fd)
{
	int hi = real.fcntl(fd, F_DUPFD_CLOEXEC, SHIM_FD_MIN);

	if (hi < 0)
		return fd;
	shim_fd_dup(fd, hi);
	shim_fd_forget(fd);
	real.close(fd);
	return hi;
}

/* The map with this id, as a handle in this process. The shim opens its own
 * fd for it (kept out of the app's reach), so the handle outlives whatever
 * fds the app closes. */
static struct { uint32_t id; struct shm_map *m; int fd; uint32_t refs; } *map_ids;
static size_t map_ids_len, map_ids_cap;
static pthread_mutex_t map_ids_lock = PTHREAD_MUTEX_INITIALIZER;  /* taken inside cache_lock */

struct shm_map *shim_map_by_id(uint32_t id)
{
	union bpf_attr a;
	struct shim_fd *e;
	struct shm_map *m = NULL;
	long fd;

	pthread_mutex_lock(&map_ids_lock);
	for (size_t i = 0; i < map_ids_len; i++)
		if (map_ids[i].id == id) {
			m = map_ids[i].m;
			map_ids[i].refs++;
			break;
		}
	pthread_mutex_unlock(&map_ids_lock);
	if (m)
		return m;
	memset(&a, 0, sizeof(a));
	a.map_id = id;
	fd = shim_user_bpf(BPF_MAP_GET_FD_BY_ID, (uint64_t)(uintptr_t)&a, sizeof(a));
	if (fd < 0)
		return NULL;
	fd = shim_fd_internal((int)fd);
	e = shim_fd_peek((int)fd);
	if (!e)
		return NULL;
	e->internal = 1;
	/* a hybrid twin's array: the kernel's memory (hybrid.c), or no program here */
	if (e->map.hdr->attr.map_type == BPF_MAP_TYPE_ARRAY && (e->map.hdr->attr.map_flags & BPF_F_MMAPABLE) &&
	    shim_hybrid_map_bind(&e->map)) {
		shim_fd_close_internal((int)fd);
		return NULL;
	}
	pthread_mutex_lock(&map_ids_lock);
	if (map_ids_len == map_ids_cap) {
		size_t nc = map_ids_cap ? 2 * map_ids_cap : 16;
		void *n = realloc(map_ids, nc * sizeof(*map_ids));
		if (n) {
			map_ids = n;
			map_ids_cap = nc;
		}
	}
	if (map_ids_len < map_ids_cap) {
		map_ids[map_ids_len].id = id;
		map_ids[map_ids_len].fd = (int)fd;
		map_ids[map_ids_len].refs = 1;
		map_ids[map_ids_len++].m = &e->map;
	}
	pthread_mutex_unlock(&map_ids_lock);
	/* a program's ringbuf: ask for its wake-up eventfd now, not in a probe hit */
	if (e->map.hdr->attr.map_type == BPF_MAP_TYPE_RINGBUF)
		shim_ringbuf_wake_fd(id);
	return &e->map;
}

/* BPFSHIM_NO_JIT, read at load: programs are built in the follower thread,
 * which never reads the environment the application may be changing. */
static int no_jit;
void no_jit_env(void)
{
	no_jit = getenv("BPFSHIM_NO_JIT") != NULL;
}

static struct bpf_prog_rt *build(int fd, const struct shim_fd *e, int *err)
{
	struct stat_like { off_t size; } st;
	struct shim_prog_image hdr;
	struct bpf_prog_rt *rt;
	void *img;

	if (pread(fd, &hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) || hdr.magic != SHIM_PROG_MAGIC) {
		*err = -EINVAL;
		return NULL;
	}
	st.size = (off_t)(hdr.jited_off + hdr.jited_len);
	img = real.mmap(NULL, (size_t)st.size, PROT_READ, MAP_SHARED, fd, 0);
	if (img == MAP_FAILED) {
		*err = -errno;
		return NULL;
	}
	rt = calloc(1, sizeof(*rt));
	if (!rt) {
		munmap(img, (size_t)st.size);
		*err = -ENOMEM;
		return NULL;
	}
	rt->id = e->id;
	rt->prog_type = hdr.prog_type;
	rt->insn_cnt = hdr.insn_cnt;
	rt->insns = (const struct bpf_insn *)((char *)img + hdr.insns_off);
	rt->nr_maps = hdr.nr_maps;
	rt->maps = calloc(hdr.nr_maps + 1, sizeof(void *));
	rt->map_values = calloc(hdr.nr_maps + 1, sizeof(void *));
	const uint32_t *ids = (const uint32_t *)((char *)img + hdr.maps_off);
	for (uint32_t i = 0; i < hdr.nr_maps; i++) {
		struct shm_map *m = shim_map_by_id(ids[i]);
		if (!m) {
			*err = -ENOENT;
			return NULL;   /* leaks a little on a race with map removal */
		}
		rt->maps[i] = m;
		if (m->ops->facts.percpu)
			rt->percpu = 1;
		if (m->hdr->attr.map_type == BPF_MAP_TYPE_ARRAY)
			rt->map_values[i] = shm_map_data(m);
	}
	/* the counts every process shares (bpfshim status reads them) */
	if (hdr.stats_off) {
		void *c = real.mmap(NULL, sizeof(struct bpf_prog_counts), PROT_READ | PROT_WRITE, MAP_SHARED, fd,
				    (off_t)hdr.stats_off);
		if (c != MAP_FAILED)
			rt->shared_counts = c;
	}
	rt->env.helpers = bpf_helpers;
	rt->env.maps = (void *const *)rt->maps;
	rt->env.map_values = (void *const *)rt->map_values;
	rt->env.prog = rt;
	if (hdr.jited_len && !no_jit)
		rt->jited = (bpf_jit_fn)bpf_jit_load((const char *)img + hdr.jited_off, hdr.jited_len);
	/* decoded here, not in the first run (a probe hit) */
	if (!rt->jited && bpf_interp_prepare(rt)) {
		*err = -ENOMEM;
		return NULL;   /* leaks a little, as above */
	}
	return rt;
}

const struct bpf_prog_rt *shim_prog_get(int fd, int *err)
{
	struct shim_fd *e = shim_fd_get(fd);
	struct bpf_prog_rt *rt = NULL;

	if (!e) {
		*err = real.fcntl(fd, F_GETFD) < 0 ? -EBADF : -EINVAL;
		return NULL;
	}
	if (e->kind != SHIM_OBJ_PROG) {
		*err = -EINVAL;
		return NULL;
	}
	pthread_mutex_lock(&cache_lock);
	for (size_t i = 0; i < cache_len; i++)
		if (cache[i].id == e->id) {
			rt = cache[i].rt;
			break;
		}
	if (!rt) {
		rt = build(fd, e, err);
		if (rt) {
			if (cache_len == cache_cap) {
				size_t nc = cache_cap ? cache_cap * 2 : 16;
				struct prog_cache_ent *n = realloc(cache, nc * sizeof(*n));
				if (n) {
					cache = n;
					cache_cap = nc;
				}
			}
			if (cache_len < cache_cap) {
				cache[cache_len++] = (struct prog_cache_ent){ e->id, rt, fd, (void *)rt->insns, 0 };
				live_add(e->id, rt);
			}
		}
	}
	pthread_mutex_unlock(&cache_lock);
	return rt;
}

/* A program by id (prog_array slots hold ids): opened on first use. */
const struct bpf_prog_rt *shim_prog_by_id(uint32_t id)
{
	union bpf_attr a;
	int err;
	long fd;

	pthread_mutex_lock(&cache_lock);
	for (size_t i = 0; i < cache_len; i++)
		if (cache[i].id == id) {
			struct bpf_prog_rt *rt = cache[i].rt;
			pthread_mutex_unlock(&cache_lock);
			return rt;
		}
	pthread_mutex_unlock(&cache_lock);
	memset(&a, 0, sizeof(a));
	a.prog_id = id;
	fd = shim_user_bpf(BPF_PROG_GET_FD_BY_ID, (uint64_t)(uintptr_t)&a, sizeof(a));
	if (fd < 0)
		return NULL;
	fd = shim_fd_internal((int)fd);
	struct shim_fd *e = shim_fd_peek((int)fd);
	if (e)
		e->internal = 1;
	return shim_prog_get((int)fd, &err);
}

/* Close one of the shim's own fds and tell the server, as close() does
 * (a perf event's or link's release waits for the agents, attach_sync.c). */
void shim_fd_close_internal(int fd)
{
	struct shim_fd *e = shim_fd_peek(fd);
	uint32_t kind = e ? e->kind : 0, id = e ? e->id : 0;

	shim_fd_forget(fd);
	real.close(fd);
	if (kind && !shim_fd_other_ref(kind, id, fd))
		shim_release(kind, id);
}

static void map_put(struct shm_map *m)
{
	int fd = -1;

	pthread_mutex_lock(&map_ids_lock);
	for (size_t i = 0; i < map_ids_len; i++)
		if (map_ids[i].m == m) {
			if (--map_ids[i].refs == 0) {
				fd = map_ids[i].fd;
				map_ids[i] = map_ids[--map_ids_len];
			}
			break;
		}
	pthread_mutex_unlock(&map_ids_lock);
	if (fd >= 0)
		shim_fd_close_internal(fd);
}

/*
 * A program this process no longer runs (its last probe here was detached,
 * and hook_detach() waited for running hits): drop the shim's handles on it
 * and its maps, so that they go away when their loader is gone, as on the
 * kernel. Programs the loader side opened itself (PROG_TEST_RUN) stay.
 */
void shim_prog_release(uint32_t id)
{
	struct prog_cache_ent ent = { 0 };
	int found = 0;

	pthread_mutex_lock(&cache_lock);
	for (size_t i = 0; i < cache_len; i++)
		if (cache[i].id == id) {
			struct shim_fd *f = shim_fd_peek(cache[i].fd);
			if (!f || !f->internal)
				break;          /* the app's own fd: not ours to drop */
			ent = cache[i];
			cache[i] = cache[--cache_len];
			live_drop(id);
			found = 1;
			break;
		}
	pthread_mutex_unlock(&cache_lock);
	if (!found)
		return;
	for (uint32_t i = 0; i < ent.rt->nr_maps; i++)
		map_put(ent.rt->maps[i]);
	shim_fd_close_internal(ent.fd);
	/* the image mapping and the JIT code stay: a returning uretprobe frame
	 * may still be on its way out through them */
}

/* bpf_tail_call's slot lookup (agent/bpf_rt.h): prog_array slots hold ids.
 * In a probe: a target not built here yet (the follower builds it when
 * poked, shim_prog_prepare) is a missing entry, as an empty slot. */
static const struct bpf_prog_rt *prog_array_get(void *map, uint32_t index)
{
	uint32_t id = shm_fd_array_get((const struct shm_map *)map, index);

	return id ? live_find(id) : NULL;
}

/*
 * Everything the program needs to run in this process, obtained now, by the
 * follower thread before the program can run here (agent/uprobe.c), and
 * again whenever the loader changes a slot of a map it uses (rt_followers_poke):
 * its maps are open (shim_prog_get), the perf rings its PERF_EVENT_ARRAY
 * slots name, the programs its PROG_ARRAY slots name (and theirs). A probe
 * then finds them without a lock, a request or an allocation.
 */
static void prepare(const struct bpf_prog_rt *rt, uint32_t *seen, unsigned *n_seen)
{
	for (unsigned k = 0; k < *n_seen; k++)
		if (seen[k] == rt->id)
			return;
	if (*n_seen < 64)
		seen[(*n_seen)++] = rt->id;
	for (uint32_t i = 0; i < rt->nr_maps; i++) {
		const struct shm_map *m = rt->maps[i];
		uint32_t fdv = m->ops->facts.fd_value, max = m->hdr->attr.max_entries;
		if (fdv != SHM_FD_PERF_EVENT && fdv != SHM_FD_PROG)
			continue;
		for (uint32_t k = 0; k < max; k++) {
			uint32_t id = shm_fd_array_get(m, k);
			if (!id)
				continue;
			if (fdv == SHM_FD_PERF_EVENT) {
				shim_perf_ring_prepare(id);
			} else {
				const struct bpf_prog_rt *next = shim_prog_by_id(id);
				if (next)
					prepare(next, seen, n_seen);
			}
		}
	}
}

void shim_prog_prepare(const struct bpf_prog_rt *rt)
{
	uint32_t seen[64];
	unsigned n = 0;

	prepare(rt, seen, &n);
}

/* At start, before uprobe_init, which may run programs (start/preload.c) */
void prog_array_init(void)
{
	bpf_rt_prog_array_get = prog_array_get;
}
