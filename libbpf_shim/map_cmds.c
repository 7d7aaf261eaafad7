/* SPDX-License-Identifier: MIT */
/*
 * Map element commands, done in the loader on the shared segment — the
 * server is not on this path. Each function follows the kernel's function of
 * the same name in kernel/bpf/syscall.c, check for check, so the errno is the
 * kernel's for every bad input.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "shim.h"

#define FMODE_CAN_READ 1
#define FMODE_CAN_WRITE 2

/* bpf_map_value_size() */
static size_t sys_value_size(const struct shm_map *m)
{
	const struct shm_map_attr *a = &m->attr;

	if (m->ops->facts.percpu)
		return BPFSHIM_ROUND_UP((size_t)a->value_size, 8) * a->nr_cpus;
	if (m->ops->facts.fd_value)
		return sizeof(uint32_t);
	return a->value_size;
}

/* map_get_sys_perms() */
static int sys_perms(const struct shim_fd *e)
{
	int mode = FMODE_CAN_READ | FMODE_CAN_WRITE;

	if (e->f_flags & BPF_F_RDONLY)
		mode &= ~FMODE_CAN_WRITE;
	if (e->f_flags & BPF_F_WRONLY)
		mode &= ~FMODE_CAN_READ;
	if (__atomic_load_n(&e->map.hdr->frozen, __ATOMIC_ACQUIRE))
		mode &= ~FMODE_CAN_WRITE;
	return mode;
}

/* __bpf_map_get(): EBADF for a closed fd, EINVAL for an fd that is not a map. */
static int map_get(int fd, struct shim_fd **out)
{
	struct shim_fd *e = shim_fd_peek(fd);

	if (!e)
		e = shim_fd_get(fd);
	if (!e) {
		extern int fcntl(int, int, ...);
		return real.fcntl(fd, 1 /* F_GETFD */) < 0 ? -EBADF : -EINVAL;
	}
	if (e->kind != SHIM_OBJ_MAP)
		return -EINVAL;
	/* the segment is writable by whoever holds the fd: sizes here are the
	 * attrs as opened (m->attr), and each type checks the header before it
	 * follows what it says (map.h shm_map_geometry_ok) */
	*out = e;
	return 0;
}

static int has_spin_lock(const struct shm_map *m)
{
	return m->attr.spin_lock_off >= 0;
}

/* A scratch buffer: on the stack for small sizes, else malloc. A fault in
 * a copy of a single-element command ends the command at its guard
 * (bpf.c map_elem_cmd), past kbuf_put: the thread's heap buffers are kept
 * where shim_map_cmd_abort() finds them. */
struct kbuf {
	void *p;
	int heap;
	unsigned char small[512];
};

static __thread void *heap_bufs[4];

static void *kbuf_get(struct kbuf *b, size_t n)
{
	b->heap = n > sizeof(b->small);
	b->p = b->heap ? malloc(n ? n : 1) : b->small;
	for (size_t i = 0; b->heap && b->p && i < BPFSHIM_ARRAY_SIZE(heap_bufs); i++)
		if (!heap_bufs[i]) {
			heap_bufs[i] = b->p;
			break;
		}
	return b->p;
}

static void kbuf_put(struct kbuf *b)
{
	if (!b->heap)
		return;
	for (size_t i = 0; i < BPFSHIM_ARRAY_SIZE(heap_bufs); i++)
		if (heap_bufs[i] == b->p)
			heap_bufs[i] = NULL;
	free(b->p);
}

void shim_map_cmd_abort(void)
{
	for (size_t i = 0; i < BPFSHIM_ARRAY_SIZE(heap_bufs); i++) {
		free(heap_bufs[i]);
		heap_bufs[i] = NULL;
	}
}

/* __bpf_copy_key() */
static int copy_key(void *dst, uint64_t ukey, uint32_t key_size)
{
	if (key_size)
		return shim_copy_from_user(dst, ukey, key_size);
	return ukey ? -EINVAL : 0;
}

/* The map of a single-element command, for `access` (FMODE_CAN_*) as
 * map_get_sys_perms() grants it, and BPF_F_LOCK only on a map with a spin
 * lock: the kernel's checks in the order of its map_*_elem(). */
static inline long map_elem_get(const union bpf_attr *attr, int access, uint64_t flags,
				struct shm_map **out)
{
	struct shim_fd *e;
	long err;

	if ((err = map_get((int)attr->map_fd, &e)))
		return err;
	if ((sys_perms(e) & access) != access)
		return -EPERM;
	if ((flags & BPF_F_LOCK) && !has_spin_lock(&e->map))
		return -EINVAL;
	*out = &e->map;
	return 0;
}

/* The key of a command in a scratch buffer (__bpf_copy_key() as the
 * kernel's map_*_elem() call it): NULL with *err set, the buffer put. */
static inline void *key_in(struct kbuf *kb, uint64_t ukey, uint32_t key_size, long *err)
{
	void *key = kbuf_get(kb, key_size);

	if (!key) {
		*err = -ENOMEM;
		return NULL;
	}
	*err = copy_key(key, ukey, key_size);
	if (*err) {
		kbuf_put(kb);
		return NULL;
	}
	return key;
}

/* Syscall values of fd maps are fds; the map stores object ids. */
static int fd_value_to_id(const struct shm_map *m, const void *value, uint32_t *id)
{
	int32_t fd;
	struct shim_fd *e;
	uint32_t want;

	memcpy(&fd, value, sizeof(fd));
	switch (m->ops->facts.fd_value) {
	case SHM_FD_PROG: want = SHIM_OBJ_PROG; break;
	case SHM_FD_PERF_EVENT:
		/* perf_event_get(): EBADF for any file that is no perf event */
		e = shim_fd_get(fd);
		if (!e || e->kind != SHIM_OBJ_PERF_EVENT)
			return -EBADF;
		*id = e->id;
		return 0;
	case SHM_FD_MAP: want = SHIM_OBJ_MAP; break;
	default:
		return -EOPNOTSUPP;
	}
	e = shim_fd_get(fd);
	if (!e)
		return real.fcntl(fd, 1 /* F_GETFD */) < 0 ? -EBADF : -EINVAL;
	if (e->kind != want)
		return -EINVAL;
	if (want == SHIM_OBJ_MAP) {
		/* bpf_map_meta_equal(): the inner map must match the template. */
		const struct shm_map_attr *t = &m->attr, *in = &e->map.attr;
		if (in->map_type != t->inner_map_type || in->key_size != t->inner_key_size ||
		    in->value_size != t->inner_value_size ||
		    (t->inner_map_flags & ~BPF_F_INNER_MAP) != (in->map_flags & ~BPF_F_INNER_MAP) ||
		    (!(t->inner_map_flags & BPF_F_INNER_MAP) && in->max_entries != t->inner_max_entries))
			return -EINVAL;
	}
	*id = e->id;
	return 0;
}

/* bpf_map_update_value() */
static int update_value(struct shm_map *m, const void *key, const void *value, uint64_t flags)
{
	const struct shm_map_facts *f = &m->ops->facts;

	if (f->fd_value) {
		uint32_t id;
		int err;
		if (f->fd_value == SHM_FD_CGROUP) {
			static const char m[] = "bpfshim: BPF_MAP_UPDATE_ELEM: cgroup fds in "
						"BPF_MAP_TYPE_CGROUP_ARRAY are not supported\n";
			(void)!write(2, m, sizeof(m) - 1);
			return -EOPNOTSUPP;
		}
		/* bpf_fd_array_map_update_elem(): flags and index before the fd */
		if (!f->hashed) {
			if (flags != BPF_ANY)
				return -EINVAL;
			if (*(const uint32_t *)key >= m->attr.max_entries)
				return -E2BIG;
		}
		err = fd_value_to_id(m, value, &id);
		if (err)
			return err;
		if (!m->ops->sys_update)
			return -EOPNOTSUPP;
		err = m->ops->sys_update(m, key, &id, flags);
		/* every process's follower gets the ring or program it names (and
		 * prepares its programs again) before the update returns: the next
		 * event finds it, as on the kernel (libbpf-tools fill their perf
		 * event arrays after attaching, then the first event comes) */
		if (!err && (f->fd_value == SHM_FD_PERF_EVENT || f->fd_value == SHM_FD_PROG))
			shim_table_touch();
		return err;
	}
	if (f->keyless) {
		if (!m->ops->push)
			return -EOPNOTSUPP;
		return m->ops->push(m, value, flags);
	}
	if (!m->ops->sys_update)
		return -EOPNOTSUPP;
	return m->ops->sys_update(m, key, value, flags);
}

static long map_lookup_elem(union bpf_attr *attr)
{
	struct kbuf kb, vb;
	struct shm_map *m;
	size_t vs;
	long err;

	if (attr->flags & ~BPF_F_LOCK)
		return -EINVAL;
	if ((err = map_elem_get(attr, FMODE_CAN_READ, attr->flags, &m)))
		return err;
	void *key = key_in(&kb, attr->key, m->attr.key_size, &err);
	if (!key)
		return err;
	vs = sys_value_size(m);
	void *value = kbuf_get(&vb, vs);
	err = -ENOMEM;
	if (!value)
		goto out_key;
	memset(value, 0, vs);
	uint32_t keyless = m->ops->facts.keyless;
	if (keyless == SHM_KEYLESS_BLOOM) {
		err = shim_copy_from_user(value, attr->value, vs);
		if (!err)
			err = m->ops->peek ? m->ops->peek(m, value) : -EOPNOTSUPP;
		goto out_val;
	}
	if (keyless == SHM_KEYLESS_QUEUE)
		err = m->ops->peek ? m->ops->peek(m, value) : -EOPNOTSUPP;
	else
		err = m->ops->sys_lookup ? m->ops->sys_lookup(m, key, value, attr->flags) : -EOPNOTSUPP;
	if (!err)
		err = shim_copy_to_user(attr->value, value, vs);
out_val:
	kbuf_put(&vb);
out_key:
	kbuf_put(&kb);
	return err;
}

static long map_update_elem(union bpf_attr *attr)
{
	struct kbuf kb, vb;
	struct shm_map *m;
	long err;

	if ((err = map_elem_get(attr, FMODE_CAN_WRITE, attr->flags, &m)))
		return err;
	void *key = key_in(&kb, attr->key, m->attr.key_size, &err);
	if (!key)
		return err;
	size_t vs = sys_value_size(m);
	void *value = kbuf_get(&vb, vs);
	err = -ENOMEM;
	if (!value)
		goto out_key;
	err = shim_copy_from_user(value, attr->value, vs);
	if (!err)
		err = update_value(m, key, value, attr->flags);
	kbuf_put(&vb);
out_key:
	kbuf_put(&kb);
	return err;
}

static long map_delete_elem(union bpf_attr *attr)
{
	struct kbuf kb;
	struct shm_map *m;
	long err;

	if ((err = map_elem_get(attr, FMODE_CAN_WRITE, 0, &m)))
		return err;
	void *key = key_in(&kb, attr->key, m->attr.key_size, &err);
	if (!key)
		return err;
	err = m->ops->sys_delete ? m->ops->sys_delete(m, key) : -EINVAL;
	kbuf_put(&kb);
	return err;
}

static long map_get_next_key(union bpf_attr *attr)
{
	struct kbuf kb, nb;
	struct shm_map *m;
	long err;

	if ((err = map_elem_get(attr, FMODE_CAN_READ, 0, &m)))
		return err;
	uint32_t ks = m->attr.key_size;
	void *key = NULL;
	if (attr->key) {
		key = key_in(&kb, attr->key, ks, &err);
		if (!key)
			return err;
		if (!ks)
			key = NULL;
	} else {
		kb.heap = 0;
	}
	void *next = kbuf_get(&nb, ks);
	err = -ENOMEM;
	if (!next)
		goto out_key;
	err = m->ops->get_next_key ? m->ops->get_next_key(m, key, next) : -EINVAL;
	if (!err)
		err = shim_copy_to_user(attr->next_key, next, ks);
	kbuf_put(&nb);
out_key:
	kbuf_put(&kb);
	return err;
}

static long map_lookup_and_delete_elem(union bpf_attr *attr)
{
	struct kbuf kb, vb;
	struct shm_map *m;
	long err;

	if (attr->flags & ~BPF_F_LOCK)
		return -EINVAL;
	/* the kernel refuses flags on a queue or stack before BPF_F_LOCK on a
	 * map without a spin lock: EINVAL either way */
	if ((err = map_elem_get(attr, FMODE_CAN_READ | FMODE_CAN_WRITE, attr->flags, &m)))
		return err;
	const struct shm_map_facts *f = &m->ops->facts;
	if (attr->flags && f->keyless == SHM_KEYLESS_QUEUE)
		return -EINVAL;
	void *key = key_in(&kb, attr->key, m->attr.key_size, &err);
	if (!key)
		return err;
	size_t vs = sys_value_size(m);
	void *value = kbuf_get(&vb, vs);
	err = -ENOMEM;
	if (!value)
		goto out_key;
	memset(value, 0, vs);
	err = -SHM_ENOTSUPP;
	if (f->keyless == SHM_KEYLESS_QUEUE) {
		if (m->ops->pop)
			err = m->ops->pop(m, value);
	} else {   /* the types whose ops have it: the hash maps, stack traces */
		if (m->ops->sys_lookup_and_delete)
			err = m->ops->sys_lookup_and_delete(m, key, value, attr->flags);
	}
	if (!err)
		err = shim_copy_to_user(attr->value, value, vs);
	kbuf_put(&vb);
out_key:
	kbuf_put(&kb);
	return err;
}

/* ---- batch commands (kernel: generic_map_*_batch, htab_map_*_batch) ---- */

static int put_count(uint64_t uattr, uint32_t v)
{
	return shim_copy_to_user(uattr + offsetof(union bpf_attr, batch.count), &v, sizeof(v));
}

/*
 * Lookup (and delete) in batches. Arrays follow generic_map_lookup_batch
 * (the batch token is the last key). Hash maps follow htab's contract: the
 * token is an opaque u32 position, the end is -ENOENT with `count` set; we
 * walk in get_next_key order, so the position is the element index.
 */
static long map_lookup_batch(union bpf_attr *attr, uint64_t uattr, struct shm_map *m, int del)
{
	uint32_t hashed = m->ops->facts.hashed, ks = m->attr.key_size;
	uint64_t elem_flags = attr->batch.elem_flags;
	size_t vs = sys_value_size(m);
	uint32_t max_count = attr->batch.count, cp = 0, pos = 0, skipped = 0;
	struct kbuf pb, kb, vb;
	long err;

	if ((elem_flags & ~BPF_F_LOCK) || ((elem_flags & BPF_F_LOCK) && !has_spin_lock(m)))
		return -EINVAL;
	if (hashed && attr->batch.flags)
		return -EINVAL;
	if (!max_count)
		return 0;
	if (put_count(uattr, 0))
		return -EFAULT;
	void *prev = kbuf_get(&pb, ks), *key = kbuf_get(&kb, ks), *value = kbuf_get(&vb, vs);
	err = -ENOMEM;
	if (!prev || !key || !value)
		goto out;
	int have_prev = 0;
	if (hashed) {
		if (attr->batch.in_batch && shim_copy_from_user(&pos, attr->batch.in_batch, sizeof(pos))) {
			err = -EFAULT;
			goto out;
		}
		/* Skip to position `pos` (deleted elements are already gone);
		 * no map has a position past its size */
		if (pos > m->attr.max_entries) {
			err = -ENOENT;
			goto done;
		}
		if (!del) {
			for (uint32_t i = 0; i < pos; i++) {
				err = m->ops->get_next_key(m, have_prev ? prev : NULL, key);
				if (err) {
					err = -ENOENT;
					goto done;
				}
				memcpy(prev, key, ks);
				have_prev = 1;
			}
		}
	} else if (attr->batch.in_batch) {
		err = shim_copy_from_user(prev, attr->batch.in_batch, ks);
		if (err)
			goto out;
		have_prev = 1;
	}
	err = 0;
	while (cp < max_count) {
		err = m->ops->get_next_key(m, have_prev ? prev : NULL, key);
		if (err)
			break;
		memset(value, 0, vs);
		if (!m->ops->sys_lookup)
			err = -SHM_ENOTSUPP;
		else if (del && m->ops->sys_lookup_and_delete)
			err = m->ops->sys_lookup_and_delete(m, key, value, elem_flags);
		else {
			/* fd maps (hash of maps) copy the id out, then delete */
			err = m->ops->sys_lookup(m, key, value, elem_flags);
			if (!err && del)
				err = m->ops->sys_delete ? m->ops->sys_delete(m, key) : -SHM_ENOTSUPP;
		}
		if (err == -ENOENT) {
			/* an empty slot (fd arrays) or an element deleted since
			 * get_next_key: step over it, as generic_map_lookup_batch's
			 * next_key does. With delete the walk restarts from the
			 * first key, which has gone. More skips than the map has
			 * entries is a corrupted map (a cycle): EINVAL. */
			if (++skipped > m->attr.max_entries) {
				err = -EINVAL;
				goto out;
			}
			if (!del) {
				memcpy(prev, key, ks);
				have_prev = 1;
			}
			continue;
		}
		if (err)
			goto out;
		if (shim_copy_to_user(attr->batch.keys + (uint64_t)cp * ks, key, ks) ||
		    shim_copy_to_user(attr->batch.values + (uint64_t)cp * vs, value, vs)) {
			err = -EFAULT;
			goto out;
		}
		if (!del) {
			memcpy(prev, key, ks);
			have_prev = 1;
		}
		cp++;
	}
done:
	if (hashed) {
		/* End of the map: -ENOENT, with what was copied counted. */
		if (err == -ENOENT || cp < max_count)
			err = -ENOENT;
		else
			err = 0;
		uint32_t next = pos + (del ? 0 : cp);
		if (shim_copy_to_user(attr->batch.out_batch, &next, sizeof(next)) || put_count(uattr, cp))
			err = -EFAULT;
	} else {
		if (put_count(uattr, cp) || (cp && shim_copy_to_user(attr->batch.out_batch, prev, ks)))
			err = -EFAULT;
	}
out:
	kbuf_put(&pb);
	kbuf_put(&kb);
	kbuf_put(&vb);
	return err;
}

static long map_update_batch(union bpf_attr *attr, uint64_t uattr, struct shm_map *m)
{
	uint32_t ks = m->attr.key_size, cp;
	size_t vs = sys_value_size(m);
	struct kbuf kb, vb;
	long err = 0;

	/* generic_map_update_batch() */
	if ((attr->batch.elem_flags & ~BPF_F_LOCK) ||
	    ((attr->batch.elem_flags & BPF_F_LOCK) && !has_spin_lock(m)))
		return -EINVAL;
	if (!attr->batch.count)
		return 0;
	if (put_count(uattr, 0))
		return -EFAULT;
	void *key = kbuf_get(&kb, ks), *value = kbuf_get(&vb, vs);
	if (!key || !value) {
		err = -ENOMEM;
		goto out;
	}
	for (cp = 0; cp < attr->batch.count; cp++) {
		err = -EFAULT;
		if (shim_copy_from_user(key, attr->batch.keys + (uint64_t)cp * ks, ks) ||
		    shim_copy_from_user(value, attr->batch.values + (uint64_t)cp * vs, vs))
			break;
		err = update_value(m, key, value, attr->batch.elem_flags);
		if (err)
			break;
	}
	if (put_count(uattr, cp))
		err = -EFAULT;
out:
	kbuf_put(&kb);
	kbuf_put(&vb);
	return err;
}

static long map_delete_batch(union bpf_attr *attr, uint64_t uattr, struct shm_map *m)
{
	uint32_t ks = m->attr.key_size, cp;
	struct kbuf kb;
	long err = 0;

	/* generic_map_delete_batch() */
	if ((attr->batch.elem_flags & ~BPF_F_LOCK) ||
	    ((attr->batch.elem_flags & BPF_F_LOCK) && !has_spin_lock(m)))
		return -EINVAL;
	if (!attr->batch.count)
		return 0;
	if (put_count(uattr, 0))
		return -EFAULT;
	void *key = kbuf_get(&kb, ks);
	if (!key)
		return -ENOMEM;
	for (cp = 0; cp < attr->batch.count; cp++) {
		err = -EFAULT;
		if (shim_copy_from_user(key, attr->batch.keys + (uint64_t)cp * ks, ks))
			break;
		err = m->ops->sys_delete ? m->ops->sys_delete(m, key) : -EINVAL;
		if (err)
			break;
	}
	if (put_count(uattr, cp))
		err = -EFAULT;
	kbuf_put(&kb);
	return err;
}

/* bpf_map_do_batch() */
static long map_do_batch(int cmd, union bpf_attr *attr, uint64_t uattr)
{
	int has_read = cmd == BPF_MAP_LOOKUP_BATCH || cmd == BPF_MAP_LOOKUP_AND_DELETE_BATCH;
	int has_write = cmd != BPF_MAP_LOOKUP_BATCH;
	struct shim_fd *e;
	long err;

	if ((err = map_get((int)attr->batch.map_fd, &e)))
		return err;
	int perms = sys_perms(e);
	if (has_read && !(perms & FMODE_CAN_READ))
		return -EPERM;
	if (has_write && !(perms & FMODE_CAN_WRITE))
		return -EPERM;
	/* the batch callbacks the type's ops have (htab BATCH_OPS, the generic
	 * ones for arrays and the LPM trie); none: ENOTSUPP */
	unsigned batch = e->map.ops->facts.batch;
	switch (cmd) {
	case BPF_MAP_LOOKUP_BATCH:
		if (!(batch & SHM_BATCH_LOOKUP))
			return -SHM_ENOTSUPP;
		return map_lookup_batch(attr, uattr, &e->map, 0);
	case BPF_MAP_LOOKUP_AND_DELETE_BATCH:
		if (!(batch & SHM_BATCH_LOOKUP_AND_DELETE))
			return -SHM_ENOTSUPP;
		return map_lookup_batch(attr, uattr, &e->map, 1);
	case BPF_MAP_UPDATE_BATCH:
		if (!(batch & SHM_BATCH_UPDATE))
			return -SHM_ENOTSUPP;
		return map_update_batch(attr, uattr, &e->map);
	default:
		if (!(batch & SHM_BATCH_DELETE))
			return -SHM_ENOTSUPP;
		return map_delete_batch(attr, uattr, &e->map);
	}
}

/* CHECK_ATTR was applied by the caller (bpf.c, from the command table). */
long shim_map_cmd(int cmd, union bpf_attr *attr, uint64_t uattr)
{
	switch (cmd) {
	case BPF_MAP_LOOKUP_ELEM: return map_lookup_elem(attr);
	case BPF_MAP_UPDATE_ELEM: return map_update_elem(attr);
	case BPF_MAP_DELETE_ELEM: return map_delete_elem(attr);
	case BPF_MAP_GET_NEXT_KEY: return map_get_next_key(attr);
	case BPF_MAP_LOOKUP_AND_DELETE_ELEM: return map_lookup_and_delete_elem(attr);
	default: return map_do_batch(cmd, attr, uattr);
	}
}
