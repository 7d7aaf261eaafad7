/* SPDX-License-Identifier: MIT */
/* What every map type shares: the type table, the segment header, the
 * checks of map_create() that depend only on the attrs, and the CPU slot. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include "map.h"
#include "rawsys.h"

#define PAGE_SIZE_ 4096u

#define SHM_MAP_TYPE(type, ops) extern const struct shm_map_ops ops;
#include "map_types.h"
#undef SHM_MAP_TYPE

const struct shm_map_ops *const shm_map_ops_table[] = {
#define SHM_MAP_TYPE(type, ops) [type] = &ops,
#include "map_types.h"
#undef SHM_MAP_TYPE
};
const unsigned shm_map_ops_table_len = BPFSHIM_ARRAY_SIZE(shm_map_ops_table);

BPFSHIM_API const struct shm_map_facts *shm_map_facts(uint32_t map_type)
{
	const struct shm_map_ops *ops = shm_map_ops_get(map_type);

	return ops ? &ops->facts : NULL;
}

static uint64_t hdr_area(const struct shm_map_ops *ops)
{
	uint64_t h = BPFSHIM_ROUND_UP(sizeof(struct shm_map_hdr), 64);
	return ops->page_aligned_area ? BPFSHIM_ROUND_UP(h, PAGE_SIZE_) : h;
}

/* The journal of locked value copies (see shm_copy_value_locked) follows the
 * type's area, in maps whose values hold a struct bpf_spin_lock. */
#define SHM_JOURNAL_SLOTS 16u

struct shm_journal_slot {
	uint32_t owner;        /* tid of the writer holding the slot, 0 = free */
	uint32_t _pad;
	uint64_t dst_off;      /* the value being written, from the segment start */
	unsigned char data[];  /* the whole new value */
};

static uint64_t journal_off(const struct shm_map_ops *ops, const struct shm_map_attr *attr)
{
	return BPFSHIM_ROUND_UP(hdr_area(ops) + ops->area_size(attr), 64);
}

static uint64_t journal_slot_size(const struct shm_map_attr *attr)
{
	return BPFSHIM_ROUND_UP(sizeof(struct shm_journal_slot) + attr->value_size, 64);
}

static uint64_t journal_size(const struct shm_map_attr *attr)
{
	return attr->spin_lock_off >= 0 ? SHM_JOURNAL_SLOTS * journal_slot_size(attr) : 0;
}

BPFSHIM_API int shm_map_check_attr(const struct shm_map_attr *attr)
{
	const struct shm_map_ops *ops = shm_map_ops_get(attr->map_type);

	if (!ops)
		return -EINVAL;
	return ops->alloc_check ? ops->alloc_check(attr) : 0;
}

BPFSHIM_API uint64_t shm_map_seg_size(const struct shm_map_attr *attr)
{
	const struct shm_map_ops *ops = shm_map_ops_get(attr->map_type);

	if (!ops)
		return 0;
	return BPFSHIM_ROUND_UP(journal_off(ops, attr) + journal_size(attr), PAGE_SIZE_);
}

static void init_handle(struct shm_map *m, struct shm_map_hdr *h, uint64_t size, int fd)
{
	m->hdr = h;
	m->ops = shm_map_ops_get(h->attr.map_type);
	m->size = size;
	m->fd = fd;
	m->value_stride = (uint32_t)BPFSHIM_ROUND_UP(h->attr.value_size, 8);
	m->attr = h->attr;
	m->data = (char *)h + h->data_off;
	m->geo[0] = m->geo[1] = 0;
	if (m->ops->geometry)
		m->ops->geometry(m);
}

BPFSHIM_API int shm_map_format(void *base, uint64_t size, const struct shm_map_attr *attr,
			       uint32_t id, const char *name)
{
	struct shm_map_hdr *h = base;
	struct shm_map m;

	if (!shm_map_ops_get(attr->map_type) || size < shm_map_seg_size(attr))
		return -EINVAL;
	memset(h, 0, sizeof(*h));
	h->attr = *attr;
	h->id = id;
	h->seg_size = size;
	h->data_off = hdr_area(shm_map_ops_get(attr->map_type));
	if (name)
		strncpy(h->name, name, sizeof(h->name) - 1);
	init_handle(&m, h, size, -1);
	if (m.ops->init) {
		int err = m.ops->init(&m);
		if (err)
			return err;
	}
	h->version = SHM_MAP_VERSION;
	__atomic_store_n(&h->magic, SHM_MAP_MAGIC, __ATOMIC_RELEASE);
	return 0;
}

BPFSHIM_API int shm_map_open(struct shm_map *m, void *base, uint64_t size, int fd)
{
	struct shm_map_hdr *h = base;

	if (size < sizeof(*h) || h->magic != SHM_MAP_MAGIC || h->version != SHM_MAP_VERSION ||
	    h->seg_size > size || !shm_map_ops_get(h->attr.map_type))
		return -EINVAL;
	/* the geometry every later access trusts (see shm_map_geometry_ok); the
	 * type's attr checks bound the sizes, so the area's size cannot wrap */
	const struct shm_map_ops *ops = shm_map_ops_get(h->attr.map_type);
	if (h->data_off != hdr_area(ops) || shm_map_check_attr(&h->attr) || shm_map_seg_size(&h->attr) > size ||
	    (h->attr.spin_lock_off >= 0 && (uint64_t)h->attr.spin_lock_off + 4 > h->attr.value_size))
		return -EINVAL;
	init_handle(m, h, size, fd);
	return 0;
}

/* See map.h: the whole segment, and a ringbuf's data area twice. */
BPFSHIM_API void *shm_map_mmap(int fd, uint64_t seg_size, uint64_t *mapped)
{
	struct shm_map_hdr h;
	char *base;

	if (pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || h.magic != SHM_MAP_MAGIC ||
	    h.seg_size > seg_size) {
		errno = EINVAL;
		return NULL;
	}
	const struct shm_map_facts *f = shm_map_facts(h.attr.map_type);
	if (!f || f->mmap != SHM_MMAP_RINGBUF) {
		base = mmap(NULL, seg_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (base == MAP_FAILED)
			return NULL;
		*mapped = seg_size;
		return base;
	}
	uint64_t data = h.attr.max_entries, total = h.seg_size + data;
	base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED)
		return NULL;
	if (mmap(base, h.seg_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED ||
	    mmap(base + h.seg_size, data, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
		 (off_t)(h.seg_size - data)) == MAP_FAILED) {
		int e = errno;
		munmap(base, total);
		errno = e;
		return NULL;
	}
	*mapped = total;
	return base;
}

/* num_possible_cpus(): the highest cpu of /sys/devices/system/cpu/possible
 * ("0-1", "0,2-5") + 1. Read with plain syscalls and parsed by hand: the
 * first call may be a probe's, inside fork() or malloc (no stdio). */
BPFSHIM_API uint32_t shm_nr_possible_cpus(void)
{
	static uint32_t n;
	char buf[256];
	uint32_t max = 0, cur = 0;
	int have = 0;
	long len;

	if (__atomic_load_n(&n, __ATOMIC_RELAXED))
		return n;
	len = bpf_rt_read_file("/sys/devices/system/cpu/possible", buf, sizeof(buf));
	for (long i = 0; i <= len; i++) {
		char c = i < len ? buf[i] : 0;
		if (c >= '0' && c <= '9') {
			cur = cur * 10 + (uint32_t)(c - '0');
			have = 1;
			continue;
		}
		if (have && cur + 1 > max)
			max = cur + 1;
		cur = 0;
		have = 0;
	}
	if (!max) {
		/* no sysfs: the highest CPU we may run on (sysconf would opendir) */
		cpu_set_t set;
		max = 1;
		if (!sched_getaffinity(0, sizeof(set), &set))
			for (uint32_t c = 0; c < CPU_SETSIZE; c++)
				if (CPU_ISSET(c, &set))
					max = c + 1;
	}
	__atomic_store_n(&n, max, __ATOMIC_RELAXED);
	return max;
}

__thread int shm_run_cpu = -1;

uint32_t shm_cur_cpu(const struct shm_map *m)
{
	int c = shm_run_cpu >= 0 ? shm_run_cpu : sched_getcpu();
	uint32_t n = m->hdr->attr.nr_cpus ? m->hdr->attr.nr_cpus : 1;

	return c < 0 ? 0 : (uint32_t)c % n;
}

/* ---- value copies that respect a struct bpf_spin_lock in the value ---- */

void shm_copy_value(const struct shm_map *m, void *dst, const void *src)
{
	int32_t off = m->hdr->attr.spin_lock_off;
	uint32_t vs = m->hdr->attr.value_size;

	if (off < 0) {
		memcpy(dst, src, vs);
		return;
	}
	/* copy_map_value(): the lock word itself is never copied */
	memcpy(dst, src, (size_t)off);
	memcpy((char *)dst + off + 4, (const char *)src + off + 4, vs - (uint32_t)off - 4);
}

/*
 * BPF_F_LOCK copies that a killed writer cannot leave half done. The kernel
 * copies a locked value with preemption off, so nobody ever sees half of an
 * update; here a writer can be SIGKILLed in the middle of its memcpy and
 * shm_lock hands the lock on. So a writer first puts the whole new value in
 * a journal slot and names the slot in the lock word (above the tid bits);
 * whoever takes the lock over from a dead owner whose word names a slot
 * finishes that copy from the slot first (a redo log). A dead writer's value
 * is then either untouched or entirely written, as on the kernel.
 */
static struct shm_journal_slot *journal_slot(const struct shm_map *m, uint32_t i)
{
	const struct shm_map_attr *a = &m->hdr->attr;

	return (struct shm_journal_slot *)((char *)m->hdr + journal_off(m->ops, a) + i * journal_slot_size(a));
}

static shm_lock_t *value_lock(const struct shm_map *m, void *value)
{
	return (shm_lock_t *)((char *)value + m->hdr->attr.spin_lock_off);
}

void shm_value_lock_recover(const struct shm_map *m, void *value, uint32_t dead_word)
{
	uint32_t i = dead_word >> SHM_LOCK_TID_BITS;

	if (i && i <= SHM_JOURNAL_SLOTS && m->hdr->attr.spin_lock_off >= 0) {
		struct shm_journal_slot *s = journal_slot(m, i - 1);

		if (__atomic_load_n(&s->owner, __ATOMIC_ACQUIRE) == (dead_word & SHM_LOCK_TID_MASK)) {
			if ((char *)m->hdr + s->dst_off == (char *)value)
				shm_copy_value(m, value, s->data);
			__atomic_store_n(&s->owner, 0, __ATOMIC_RELEASE);
		}
	}
	__atomic_store_n(value_lock(m, value), shm_self_tid(), __ATOMIC_RELEASE);
}

/* Whether a slot's owner is gone and no lock word names the slot (it died
 * before naming it, or after its copy): then nobody will redo it. */
static int journal_slot_abandoned(const struct shm_map *m, struct shm_journal_slot *s, uint32_t i, uint32_t owner)
{
	if (s->dst_off + m->hdr->attr.value_size <= m->size &&
	    __atomic_load_n(value_lock(m, (char *)m->hdr + s->dst_off), __ATOMIC_ACQUIRE) >> SHM_LOCK_TID_BITS == i + 1)
		return 0;
	return shm_lock_owner_dead(owner);
}

/* A free slot or an abandoned one. NULL when every slot is busy: the copy
 * then goes unjournaled. */
static struct shm_journal_slot *journal_get(const struct shm_map *m, uint32_t *idx)
{
	uint32_t me = shm_self_tid();

	for (uint32_t i = 0; i < SHM_JOURNAL_SLOTS; i++) {
		struct shm_journal_slot *s = journal_slot(m, i);
		uint32_t cur = __atomic_load_n(&s->owner, __ATOMIC_RELAXED);

		if (cur && !journal_slot_abandoned(m, s, i, cur))
			continue;
		if (__atomic_compare_exchange_n(&s->owner, &cur, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
			*idx = i;
			return s;
		}
	}
	return NULL;
}

/* Takes the lock of a map value, finishing a dead holder's journaled copy. */
static shm_lock_t *value_lock_take(const struct shm_map *m, void *value)
{
	shm_lock_t *l = value_lock(m, value);
	uint32_t dead = shm_lock_takeover(l);

	if (dead)
		shm_value_lock_recover(m, value, dead);
	return l;
}

void shm_copy_value_locked(const struct shm_map *m, void *dst, const void *src, int lock_src)
{
	shm_lock_t *l;
	struct shm_journal_slot *s;
	uint32_t i, me = shm_self_tid();

	if (lock_src) {   /* a copy out: a reader killed half way harms nothing */
		l = value_lock_take(m, (void *)src);
		shm_copy_value(m, dst, src);
		shm_unlock(l);
		return;
	}
	l = value_lock_take(m, dst);
	s = journal_get(m, &i);
	if (s) {
		memcpy(s->data, src, m->hdr->attr.value_size);
		s->dst_off = (uint64_t)((char *)dst - (char *)m->hdr);
		__atomic_store_n(l, me | (i + 1) << SHM_LOCK_TID_BITS, __ATOMIC_RELEASE);
	}
	shm_copy_value(m, dst, src);
	if (s) {
		__atomic_store_n(l, me, __ATOMIC_RELEASE);
		__atomic_store_n(&s->owner, 0, __ATOMIC_RELEASE);
	}
	shm_unlock(l);
}

/* check_and_init_map_value(): what user space reads has the lock zeroed. */
void shm_clear_special(const struct shm_map *m, void *value)
{
	if (m->hdr->attr.spin_lock_off >= 0)
		memset((char *)value + m->hdr->attr.spin_lock_off, 0, 4);
}
