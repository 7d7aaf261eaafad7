/* SPDX-License-Identifier: MIT */
/* The runtime layer's registry and per-thread state: see rt.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include "rt.h"
#include "attach_table.h"
#include "rawsys.h"

__thread char sud_selector;
__thread int in_probe;

static const struct rt_loader *loader;

void rt_register_loader(const struct rt_loader *l)
{
	__atomic_store_n(&loader, l, __ATOMIC_RELEASE);
}

static const struct rt_loader *L(void)
{
	return __atomic_load_n(&loader, __ATOMIC_ACQUIRE);
}

int rt_runtime_dir(char *out, size_t n)
{
	const struct rt_loader *l = L();

	return l ? l->runtime_dir(out, n) : -ENOSYS;
}

int rt_set_runtime_dir(const char *dir)
{
	const struct rt_loader *l = L();

	return l ? l->set_runtime_dir(dir) : -ENOSYS;
}

int rt_interposing(void)
{
	const struct rt_loader *l = L();

	return l && l->interposing();
}

void rt_connect_early(void)
{
	const struct rt_loader *l = L();

	if (l)
		l->connect_early();
}

const struct bpf_prog_rt *rt_prog_by_id(uint32_t id)
{
	const struct rt_loader *l = L();

	return l ? l->prog_by_id(id) : NULL;
}

void rt_prog_release(uint32_t id)
{
	const struct rt_loader *l = L();

	if (l)
		l->prog_release(id);
}

void rt_prog_prepare(const struct bpf_prog_rt *prog)
{
	const struct rt_loader *l = L();

	if (l)
		l->prog_prepare(prog);
}

static const struct rt_agent *agent;

void rt_register_agent(const struct rt_agent *a)
{
	__atomic_store_n(&agent, a, __ATOMIC_RELEASE);
}

int rt_at_func_entry(void)
{
	const struct rt_agent *a = __atomic_load_n(&agent, __ATOMIC_ACQUIRE);

	return a && a->at_func_entry();
}

size_t rt_ret_addrs(uint64_t sp, uint64_t *tramp, uint64_t *out, size_t max)
{
	const struct rt_agent *a = __atomic_load_n(&agent, __ATOMIC_ACQUIRE);

	return a ? a->ret_addrs(sp, tramp, out, max) : 0;
}

/* ---- follower wake-ups ---- */

static const uint32_t *follow_word;       /* the agent's table, when it has one */
static const struct attach_table *poke_table;   /* a loader's own mapping */

void rt_follow_word_set(const uint32_t *gen)
{
	__atomic_store_n(&follow_word, gen, __ATOMIC_RELEASE);
}

void rt_followers_kick(void)
{
	const uint32_t *w = __atomic_load_n(&follow_word, __ATOMIC_ACQUIRE);

	if (w)
		BPF_RT_SYS(SYS_futex, w, FUTEX_WAKE, INT_MAX, 0, 0, 0);
}

/* The table's generation word: the agent's, else a mapping of this
 * process's own (a loader that follows no table); NULL without a table. */
const uint32_t *rt_attach_gen(void)
{
	char dir[512], path[600];
	const uint32_t *w = __atomic_load_n(&follow_word, __ATOMIC_ACQUIRE);
	const struct attach_table *t;
	long fd;

	if (w)
		return w;
	t = __atomic_load_n(&poke_table, __ATOMIC_ACQUIRE);
	if (!t && !rt_runtime_dir(dir, sizeof(dir)) && !bpf_rt_path_join(path, sizeof(path), dir, "attach.tbl") &&
	    (fd = BPF_RT_SYS(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC)) >= 0) {
		void *m = bpf_rt_mmap(sizeof(struct attach_table), PROT_READ, MAP_SHARED, (int)fd, 0);
		const struct attach_table *none = NULL;
		BPF_RT_SYS(SYS_close, fd);
		if (m && !__atomic_compare_exchange_n(&poke_table, &none, m, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			BPF_RT_SYS(SYS_munmap, m, sizeof(struct attach_table));
		t = __atomic_load_n(&poke_table, __ATOMIC_ACQUIRE);
	}
	return t ? &t->gen : NULL;
}

void rt_followers_poke(void)
{
	const uint32_t *w = rt_attach_gen();

	if (w)
		BPF_RT_SYS(SYS_futex, w, FUTEX_WAKE, INT_MAX, 0, 0, 0);
}
