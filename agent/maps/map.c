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

static uint64_t hdr_area(const struct shm_map_ops *ops)
{
	uint64_t h = BPFSHIM_ROUND_UP(sizeof(struct shm_map_hdr), 64);
	return ops->page_aligned_area ? BPFSHIM_ROUND_UP(h, PAGE_SIZE_) : h;
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
	return BPFSHIM_ROUND_UP(hdr_area(ops) + ops->area_size(attr), PAGE_SIZE_);
}

static void init_handle(struct shm_map *m, struct shm_map_hdr *h, uint64_t size, int fd)
{
	m->hdr = h;
	m->ops = shm_map_ops_get(h->attr.map_type);
	m->size = size;
	m->fd = fd;
	m->value_stride = (uint32_t)BPFSHIM_ROUND_UP(h->attr.value_size, 8);
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
	if (h.attr.map_type != BPF_MAP_TYPE_RINGBUF) {
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

BPFSHIM_API uint32_t shm_nr_possible_cpus(void)
{
	static uint32_t n;
	FILE *f;
	unsigned lo, hi;

	if (n)
		return n;
	f = fopen("/sys/devices/system/cpu/possible", "r");
	if (f) {
		char buf[256], *p;
		uint32_t max = 0;
		if (fgets(buf, sizeof(buf), f)) {
			/* "0-1" or "0,2-5": the highest cpu + 1, as num_possible_cpus() */
			for (p = strtok(buf, ","); p; p = strtok(NULL, ",")) {
				int k = sscanf(p, "%u-%u", &lo, &hi);
				if (k == 2 && hi + 1 > max)
					max = hi + 1;
				else if (k == 1 && lo + 1 > max)
					max = lo + 1;
			}
		}
		fclose(f);
		n = max;
	}
	if (!n) {
		long c = sysconf(_SC_NPROCESSORS_CONF);
		n = c > 0 ? (uint32_t)c : 1;
	}
	return n;
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

void shm_copy_value_locked(const struct shm_map *m, void *dst, const void *src, int lock_src)
{
	shm_lock_t *l = (shm_lock_t *)((char *)(lock_src ? src : dst) + m->hdr->attr.spin_lock_off);

	shm_lock(l);
	shm_copy_value(m, dst, src);
	shm_unlock(l);
}

/* check_and_init_map_value(): what user space reads has the lock zeroed. */
void shm_clear_special(const struct shm_map *m, void *value)
{
	if (m->hdr->attr.spin_lock_off >= 0)
		memset((char *)value + m->hdr->attr.spin_lock_off, 0, 4);
}
