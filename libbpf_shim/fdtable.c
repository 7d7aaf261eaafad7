/* SPDX-License-Identifier: MIT */
/*
 * fd number -> bpfshim object, for this process.
 *
 * Every object fd is a real descriptor the server created (a memfd for maps,
 * programs, links and BTF; an eventfd for perf events), so dup, fork, close,
 * poll and SCM_RIGHTS behave natively. This table only remembers what each
 * fd number is; the interposed close/dup/fcntl keep it in step, fork copies
 * it, and an fd the table does not know (inherited over exec, received over a
 * socket) is identified by asking the server once.
 *
 * Two-level array so lookups are two loads and growth never moves entries.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include "shim.h"

#define CHUNK_SHIFT 10
#define CHUNK_SIZE (1u << CHUNK_SHIFT)
#define NR_CHUNKS 1024u                  /* fds up to 1M */

static struct shim_fd *chunks[NR_CHUNKS];
static pthread_mutex_t grow_lock = PTHREAD_MUTEX_INITIALIZER;

struct shim_fd *shim_fd_peek(int fd)
{
	struct shim_fd *c;
	unsigned u = (unsigned)fd;

	if (u >= NR_CHUNKS * CHUNK_SIZE)
		return NULL;
	c = __atomic_load_n(&chunks[u >> CHUNK_SHIFT], __ATOMIC_ACQUIRE);
	if (!c || !c[u & (CHUNK_SIZE - 1)].kind)
		return NULL;
	return &c[u & (CHUNK_SIZE - 1)];
}

static struct shim_fd *slot(int fd)
{
	unsigned u = (unsigned)fd;
	struct shim_fd *c;

	if (fd < 0 || u >= NR_CHUNKS * CHUNK_SIZE)
		return NULL;
	c = __atomic_load_n(&chunks[u >> CHUNK_SHIFT], __ATOMIC_ACQUIRE);
	if (!c) {
		pthread_mutex_lock(&grow_lock);
		c = chunks[u >> CHUNK_SHIFT];
		if (!c) {
			c = calloc(CHUNK_SIZE, sizeof(*c));
			if (c)
				__atomic_store_n(&chunks[u >> CHUNK_SHIFT], c, __ATOMIC_RELEASE);
		}
		pthread_mutex_unlock(&grow_lock);
		if (!c)
			return NULL;
	}
	return &c[u & (CHUNK_SIZE - 1)];
}

static void unmap_entry(struct shim_fd *e)
{
	if (e->kind == SHIM_OBJ_MAP && e->map.hdr)
		munmap(e->map.hdr, e->map.size);
	if (e->ring_meta)
		munmap(e->ring_meta, 4096);
	if (e->ring_fd > 0)
		real.close(e->ring_fd);
	memset(e, 0, sizeof(*e));
}

int shim_fd_install(int fd, const struct shim_fd_meta *meta)
{
	struct shim_fd *e = slot(fd);
	struct shim_fd n;

	if (!e)
		return -EMFILE;
	memset(&n, 0, sizeof(n));
	n.kind = meta->kind;
	n.id = meta->id;
	n.f_flags = meta->f_flags;
	if (meta->kind == SHIM_OBJ_MAP) {
		uint64_t mapped = 0;
		void *base;
		int err;

		shim_internal++;
		base = shm_map_mmap(fd, meta->seg_size, &mapped);
		shim_internal--;

		if (!base)
			return -errno;
		err = shm_map_open(&n.map, base, mapped, fd);
		if (err) {
			munmap(base, mapped);
			return err;
		}
	}
	unmap_entry(e);
	*e = n;
	return 0;
}

void shim_fd_forget(int fd)
{
	struct shim_fd *e = shim_fd_peek(fd);

	if (e)
		unmap_entry(e);
}

void shim_fd_dup(int oldfd, int newfd)
{
	struct shim_fd *o = shim_fd_get(oldfd), *n;
	struct shim_fd_meta meta;

	shim_fd_forget(newfd);
	if (!o || !(n = slot(newfd)))
		return;
	meta.kind = o->kind;
	meta.id = o->id;
	meta.f_flags = o->f_flags;
	meta.seg_size = o->map.size;
	if (shim_fd_install(newfd, &meta))
		return;
	if (o->ring_fd > 0) {
		/* a dup of a perf fd shares the event's ring */
		n = shim_fd_peek(newfd);
		n->ring_fd = real.fcntl(o->ring_fd, F_DUPFD_CLOEXEC, SHIM_FD_MIN);
		n->ring_meta = real.mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, n->ring_fd, 0);
		if (n->ring_meta == MAP_FAILED)
			n->ring_meta = NULL;
	}
}

int shim_fd_other_ref(uint32_t kind, uint32_t id, int except)
{
	for (unsigned c = 0; c < NR_CHUNKS; c++) {
		struct shim_fd *ch = chunks[c];
		if (!ch)
			continue;
		for (unsigned i = 0; i < CHUNK_SIZE; i++) {
			if (ch[i].kind == kind && ch[i].id == id && (int)(c * CHUNK_SIZE + i) != except)
				return 1;
		}
	}
	return 0;
}

size_t shim_fd_held(uint32_t *pairs, size_t max_pairs)
{
	size_t n = 0;

	for (unsigned c = 0; c < NR_CHUNKS; c++) {
		struct shim_fd *ch = chunks[c];
		if (!ch)
			continue;
		for (unsigned i = 0; i < CHUNK_SIZE && n < max_pairs; i++) {
			if (ch[i].kind) {
				pairs[2 * n] = ch[i].kind;
				pairs[2 * n + 1] = ch[i].id;
				n++;
			}
		}
	}
	return n;
}

/* An fd we have not seen: is it one of ours? Only descriptors that look like
 * our objects (memfd "bpf*", eventfd) cost a round trip to the server. */
__thread int shim_internal;

struct shim_fd *shim_fd_get(int fd)
{
	struct shim_fd *e = shim_fd_peek(fd);
	char path[64], link[128];
	ssize_t n;
	struct shim_reply rep;

	if (e)
		return e;
	/* a hybrid loader's fds are the kernel's */
	if (fd < 0 || shim_internal || shim_hybrid || real.fcntl(fd, F_GETFD) < 0)
		return NULL;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = real.readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return NULL;
	link[n] = 0;
	/* durable objects are files bpfshim-obj-* in the runtime directory
	 * (syscall_server/durable.py) */
	const char *base = strrchr(link, '/');
	if (strncmp(link, "/memfd:bpf", 10) && strncmp(link, "/memfd:btf", 10) &&
	    strcmp(link, "anon_inode:[eventfd]") && !(base && !strncmp(base + 1, "bpfshim-obj-", 12)))
		return NULL;
	/* The server answers with the fd's meta; shim_request installs it
	 * under the number it receives, so move it to `fd`. */
	if (shim_request(SHIM_OP_IDENTIFY, fd, 0, NULL, 0, fd, &rep, NULL, 0) || rep.ret < 0)
		return NULL;
	if ((int)rep.ret != fd) {
		shim_fd_dup((int)rep.ret, fd);
		shim_fd_forget((int)rep.ret);
		real.close((int)rep.ret);
	}
	return shim_fd_peek(fd);
}
