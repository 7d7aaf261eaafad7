/* SPDX-License-Identifier: MIT */
/*
 * mmap() of bpfshim fds, interposed: map values (BPF_F_MMAPABLE arrays),
 * ringbufs in the kernel's layout, perf event rings (perf_event.c).
 */
#include <errno.h>
#include <sys/mman.h>
#include "interpose.h"

/* ringbuf_map_mmap_kern(): the consumer page may be mapped writable (one
 * page at offset 0); the producer page and the data, which the kernel maps
 * twice back to back, read-only from offset 4096. */
static void *ringbuf_mmap(struct shim_fd *e, void *addr, size_t len, int prot, int flags, off_t off)
{
	const struct shm_map_hdr *h = e->map.hdr;
	uint64_t data = h->attr.max_entries, pg = 4096, meta = SHM_RINGBUF_META_PAGES * pg;
	uint64_t total = meta + 2 * data;       /* what the kernel's vma may cover */
	char *base;

	if (!(flags & MAP_SHARED) || off % pg) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	if ((prot & PROT_WRITE) && (off != 0 || len != pg)) {
		errno = EPERM;
		return MAP_FAILED;
	}
	if ((uint64_t)off + len > total) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	/* file layout: consumer page, producer page, data once */
	uint64_t file_end = meta + data;
	if ((uint64_t)off + len <= file_end)
		return real.mmap(addr, len, prot, flags, e->map.fd, off + (off_t)h->data_off);
	base = real.mmap(addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | (flags & MAP_FIXED), -1, 0);
	if (base == MAP_FAILED)
		return MAP_FAILED;
	uint64_t first = file_end - (uint64_t)off;
	if (real.mmap(base, first, prot, MAP_SHARED | MAP_FIXED, e->map.fd, off + (off_t)h->data_off) == MAP_FAILED ||
	    real.mmap(base + first, len - first, prot, MAP_SHARED | MAP_FIXED, e->map.fd,
		      (off_t)(h->data_off + meta)) == MAP_FAILED) {
		int er = errno;
		munmap(base, len);
		errno = er;
		return MAP_FAILED;
	}
	return base;
}

/* bpf_map_mmap(): only BPF_F_MMAPABLE arrays (ringbufs: see ringbuf
 * support); the file offset the loader passes is relative to the values. */
static void *mmap_(void *addr, size_t len, int prot, int flags, int fd, off_t off);
BPFSHIM_API void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	KEEP_ERRNO(void *, mmap_(addr, len, prot, flags, fd, off), r_ != MAP_FAILED);
}

static void *mmap_(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	struct shim_fd *e;

	ENSURE();
	if (shim_hybrid && fd >= 0 && !(flags & MAP_ANONYMOUS) && shim_hybrid_mmap_refused(fd))
		return MAP_FAILED;
	/* an fd the table does not know (inherited over exec) may be a map */
	if (fd < 0 || (flags & MAP_ANONYMOUS) || shim_internal || !(e = shim_fd_get(fd)))
		return real.mmap(addr, len, prot, flags, fd, off);
	if (e->kind == SHIM_OBJ_PERF_EVENT)
		return shim_perf_mmap(e, addr, len, prot, flags, off);
	if (e->kind != SHIM_OBJ_MAP) {
		errno = ENODEV;
		return MAP_FAILED;
	}
	const struct shm_map_hdr *h = e->map.hdr;
	if (h->attr.spin_lock_off >= 0) {
		errno = SHM_ENOTSUPP;
		return MAP_FAILED;
	}
	if (e->map.ops->facts.mmap == SHM_MMAP_RINGBUF)
		return ringbuf_mmap(e, addr, len, prot, flags, off);
	if (e->map.ops->facts.mmap != SHM_MMAP_VALUES) {
		errno = SHM_ENOTSUPP;   /* no map_mmap for this type */
		return MAP_FAILED;
	}
	if (!(h->attr.map_flags & BPF_F_MMAPABLE) || !(flags & MAP_SHARED)) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	if (e->f_flags & BPF_F_RDONLY) {
		/* an fd opened read-only: the mmap core refuses a writable shared
		 * mapping, and bpf_map_mmap() any other (measured on 6.18) */
		errno = (prot & PROT_WRITE) ? EACCES : EINVAL;
		return MAP_FAILED;
	}
	if (prot & PROT_WRITE) {
		if (h->frozen) {
			errno = EPERM;
			return MAP_FAILED;
		}
		if (h->attr.map_flags & BPF_F_RDONLY_PROG) {
			errno = EACCES;
			return MAP_FAILED;
		}
	}
	uint64_t area = BPFSHIM_ROUND_UP((uint64_t)e->map.value_stride * h->attr.max_entries, 4096);
	if ((uint64_t)off + len > area) {
		errno = EINVAL;
		return MAP_FAILED;
	}
	return real.mmap(addr, len, prot, flags, fd, off + (off_t)h->data_off);
}
BPFSHIM_API void *mmap64(void *, size_t, int, int, int, off_t) __attribute__((alias("mmap")));
