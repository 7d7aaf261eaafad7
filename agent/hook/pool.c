/* SPDX-License-Identifier: MIT */
/*
 * Code memory near a site: pools of executable pages within rel32 reach of
 * the code they serve (trampolines, out-of-line copies, other rewriters'
 * stubs), never freed, and the writes into them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include "internal.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

struct pool {
	uint8_t *base;
	size_t size, used;
	struct pool *next;
};
static struct pool *pools;
#define POOL_SIZE (64 * 1024)
#define NEAR_MAX 0x7ff00000ll     /* keep rel32 in range with room to spare */

static int near(uint64_t a, uint64_t b)
{
	int64_t d = (int64_t)(a - b);
	return d > -NEAR_MAX && d < NEAR_MAX;
}

struct gap_find {
	uint64_t addr, prev_end, best, bestd;
};

/* The gap below mapping [lo, hi): the end of it nearest to addr. */
static void gap_before(struct gap_find *g, uint64_t lo, uint64_t hi)
{
	if (lo > g->prev_end && lo - g->prev_end >= POOL_SIZE) {
		uint64_t c = g->addr < g->prev_end ? g->prev_end : ((lo - POOL_SIZE) & ~0xffffull);
		if (c < g->prev_end)
			c = g->prev_end;
		uint64_t d = c > g->addr ? c - g->addr : g->addr - c;
		if (c + POOL_SIZE <= lo && near(c, g->addr) && near(c + POOL_SIZE, g->addr) && d < g->bestd) {
			g->best = c;
			g->bestd = d;
		}
	}
	if (hi > g->prev_end)
		g->prev_end = hi;
}

static int gap_vma(const struct bpf_rt_vma *v, void *arg)
{
	gap_before(arg, v->lo, v->hi);
	return 0;
}

/* A new pool in the free gap of the address space nearest to addr. */
static struct pool *pool_new(uint64_t addr)
{
	struct gap_find g = { addr, 0x100000, 0, ~0ull };
	char buf[4096];
	long fd = self_maps_fd();

	if (fd < 0)
		return NULL;
	int r = bpf_rt_maps_each(fd, buf, sizeof(buf), gap_vma, &g);
	if (r < 0)
		return NULL;
	gap_before(&g, 0x7ffffffff000ul, 0x7ffffffff000ul);   /* the gap below the top */
	uint64_t best = g.best;
	if (!best)
		return NULL;
	void *p = mmap((void *)best, POOL_SIZE, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		       -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if ((uint64_t)p != best) {      /* a kernel without MAP_FIXED_NOREPLACE took it as a hint */
		munmap(p, POOL_SIZE);
		return NULL;
	}
	struct pool *pl = calloc(1, sizeof(*pl));
	if (!pl) {
		munmap(p, POOL_SIZE);
		return NULL;
	}
	pl->base = p;
	pl->size = POOL_SIZE;
	pl->next = pools;
	pools = pl;
	return pl;
}

uint8_t *near_alloc(uint64_t addr, size_t n)
{
	struct pool *pl;

	for (pl = pools; pl; pl = pl->next)
		if (pl->used + n <= pl->size && near((uint64_t)pl->base, addr) &&
		    near((uint64_t)pl->base + pl->size, addr))
			break;
	if (!pl)
		pl = pool_new(addr);
	if (!pl)
		return NULL;
	uint8_t *p = pl->base + pl->used;
	pl->used += (n + 15) & ~(size_t)15;
	return p;
}

/* Copy code into a pool (pages stay executable for other threads). */
int code_write(uint8_t *dst, const uint8_t *src, size_t n)
{
	uint64_t lo = (uint64_t)dst & ~4095ull, hi = ((uint64_t)dst + n + 4095) & ~4095ull;

	if (mprotect((void *)lo, hi - lo, PROT_READ | PROT_WRITE | PROT_EXEC) == 0) {
		memcpy(dst, src, n);
		mprotect((void *)lo, hi - lo, PROT_READ | PROT_EXEC);
		return 0;
	}
	if (memfd >= 0 && pwrite(memfd, src, n, (off_t)(uint64_t)dst) == (ssize_t)n)
		return 0;
	return -EPERM;
}
