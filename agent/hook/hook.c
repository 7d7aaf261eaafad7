/* SPDX-License-Identifier: MIT */
/*
 * The function-hooking engine (see hook.h for the model).
 *
 * Per probed address there is one `struct hook_site`, created on the first
 * attach and kept for the life of the process (with its trampoline: a thread
 * may be inside it at any time). Its hooks are an immutable array swapped
 * under `lock`; readers (the dispatchers) take a per-site two-counter SRCU
 * read lock, so the hot path is two atomic adds and no lock, and a detach
 * waits for the readers of the old array only.
 *
 * This file: the sites, attach and detach, the calls for other code
 * rewriters, the lock and start-up (internal.h lists the other parts).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/membarrier.h>
#include <sys/mman.h>
#include "internal.h"
#include "start.h"

pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int inited;
struct bpf_rt_kept mem = BPF_RT_KEPT_INIT;   /* /proc/self/mem, when mprotect is refused */
/* /proc/self/maps for mapping_of and pool_new (under the lock): kept, so
 * that a patch made while the application runs opens nothing (an open then
 * takes the lowest free number, one the application's next open misses) */
static struct bpf_rt_kept self_maps = BPF_RT_KEPT_INIT;

#define SITE_HASH 1024
static struct hook_site *site_hash[SITE_HASH];

static unsigned site_bucket(uint64_t addr)
{
	return (unsigned)((addr * 0x9e3779b97f4a7c15ull) >> 54) & (SITE_HASH - 1);
}

struct hook_site *site_find(uint64_t addr)
{
	struct hook_site *s = __atomic_load_n(&site_hash[site_bucket(addr)], __ATOMIC_ACQUIRE);

	for (; s; s = s->hnext)
		if (s->addr == addr)
			return s;
	return NULL;
}

void hook_get_stats(struct hook_stats *st)
{
	st->ret_dropped = __atomic_load_n(&ret_dropped, __ATOMIC_RELAXED);
	st->int3_hits = __atomic_load_n(&int3_hits, __ATOMIC_RELAXED);
	st->parked_moved = __atomic_load_n(&parked_moved, __ATOMIC_RELAXED);
	st->merged_traps = __atomic_load_n(&merged_traps, __ATOMIC_RELAXED);
}

static void atfork_prepare(void) { pthread_mutex_lock(&lock); }
static void atfork_parent(void) { pthread_mutex_unlock(&lock); }
/* Only this thread lives on in the child: the others' reader slots must
 * not hold up its grace periods. */
static void atfork_child(void)
{
	pthread_mutex_init(&lock, NULL);
	for (struct rcu_chunk *c = &rcu_first; c; c = c->next)
		for (int i = 0; i < RCU_CHUNK; i++)
			if (&c->s[i] != tls_slot) {
				c->s[i].cnt = 0;
				c->s[i].in_entry = c->s[i].override = 0;
				c->s[i].owner = 0;
			}
	qreq.active = 0;
	if (memfd >= 0)     /* it names the parent's memory */
		bpf_rt_kept_open(&mem, "/proc/self/mem", O_RDWR);
	if (bpf_rt_kept_fd(&self_maps) >= 0)   /* and the parent's mappings */
		bpf_rt_kept_open(&self_maps, "/proc/self/maps", O_RDONLY);
}

/* Created before the application's keys (rawsys.h bpf_rt_setspecific); at start,
 * before uprobe_init, which may attach (start/preload.c). */
static int keys_ok;
void hook_keys(void)
{
	keys_ok = !pthread_key_create(&shadow_key, shadow_free) && !pthread_key_create(&rcu_key, rcu_release);
	/* Here, not at the first hook: a fork child's handlers run in the order
	 * they were registered, and this one (the lock, the readers, /proc/self/mem)
	 * must run before the follower's starts the thread that patches. */
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

int init_locked(void)
{
	struct sigaction sa;

	if (inited)
		return 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_trap;
	/* NODEFER: a handler may itself run into an int3 site */
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGTRAP, &sa, &prev_trap))
		return -errno;
	if (!keys_ok)
		return -EAGAIN;
	if (rsys(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0, 0, 0, 0) == 0)
		have_sync_core = 1;
	if (rsys(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0, 0, 0, 0) == 0)
		rcu_fast = 1;
	if (memfd < 0)
		bpf_rt_kept_open(&mem, "/proc/self/mem", O_RDWR);
	inited = 1;
	return 0;
}

/* --------------------------------------------------------- attach/detach */

struct mapping_find {
	uint64_t addr, next;       /* next: the end of addr's mapping, once found */
	int prot;
	size_t avail;
};

static int mapping_vma(const struct bpf_rt_vma *v, void *arg)
{
	struct mapping_find *m = arg;

	if (m->next) {
		/* an instruction may continue into the next mapping */
		if (v->lo == m->next && v->perms[0] == 'r' && v->perms[2] == 'x')
			m->avail += v->hi - v->lo;
		return 1;
	}
	if (m->addr < v->lo || m->addr >= v->hi)
		return 0;
	m->prot = bpf_rt_vma_prot(v->perms);
	m->avail = v->hi - m->addr;
	m->next = v->hi;
	return m->avail >= 16;
}

void hook_premap(void)
{
	if (memfd < 0)
		bpf_rt_kept_open(&mem, "/proc/self/mem", O_RDWR);
	if (bpf_rt_kept_fd(&self_maps) < 0)
		bpf_rt_kept_open(&self_maps, "/proc/self/maps", O_RDONLY);
}

long self_maps_fd(void)
{
	long fd = bpf_rt_kept_fd(&self_maps);

	if (fd < 0 && !bpf_rt_kept_open(&self_maps, "/proc/self/maps", O_RDONLY))
		fd = bpf_rt_kept_fd(&self_maps);
	return fd < 0 ? -EBADF : fd;
}

/* Protection of the mapping holding addr and how many bytes of it follow. */
int mapping_of(uint64_t addr, int *prot, size_t *avail)
{
	struct mapping_find m = { addr, 0, 0, 0 };
	char buf[4096];
	long fd = self_maps_fd();

	if (fd < 0)
		return (int)fd;
	int r = bpf_rt_maps_each(fd, buf, sizeof(buf), mapping_vma, &m);
	if (r < 0)
		return r;
	int found = m.next != 0;
	*prot = m.prot;
	*avail = m.avail;
	if (!found || !(*prot & PROT_EXEC))
		return -EFAULT;
	if (*avail > 16)
		*avail = 16;
	return 0;
}

struct hook_site *all_sites;

/* A site at addr reporting ip (addr, or the entry whose endbr64 it
 * follows). */
static struct hook_site *site_create(uint64_t addr, uint64_t ip, uint64_t func, size_t func_size, int *err)
{
	struct hook_site *s;
	size_t avail = 0;
	int prot = 0;

	*err = mapping_of(addr, &prot, &avail);
	if (*err)
		return NULL;
	if (posix_memalign((void **)&s, 64, sizeof(*s))) {
		*err = -ENOMEM;
		return NULL;
	}
	memset(s, 0, sizeof(*s));
	s->addr = addr;
	s->ip = ip;
	s->prot = prot;
	/* At a function entry xmm8-15 hold nothing (SysV: caller-saved, no
	 * arguments); inside one they may be live. */
	Dl_info di;
	s->xmm_all = !(dladdr((void *)ip, &di) && di.dli_saddr == (void *)ip);
	memcpy(s->orig, (void *)addr, avail);
	s->avail = avail;
	/* Other sites near: their patches are not the code, and neither may
	 * hide the other's address inside displaced bytes. */
	unpatch_copy(s->orig, addr, avail);
	for (struct hook_site *o = all_sites; o; o = o->anext) {
		if (addr > o->addr && addr < o->addr + o->disp_len && o->mode == HOOK_MODE_JMP) {
			*err = site_to_int3(o);
			if (*err) {
				free(s);
				return NULL;
			}
		}
	}
	*err = getenv("BPFSHIM_HOOK_INT3") ? -EINVAL : build_tramp(s, avail);
	for (struct hook_site *o = all_sites; !*err && o; o = o->anext)
		if (o->addr > addr && o->addr < addr + s->disp_len)
			*err = -EINVAL;         /* its trampoline stays unused */
	if (!*err && func_size != (size_t)-1 && addr != func && branch_into(addr, s->disp_len, func, func_size))
		*err = -EINVAL;                 /* inside a function: see hook_attach_in() */
	/* after the entry's first instruction: a branch to addr is no call of the function,
	 * and an int3 there would not tell one from the other */
	if (ip != addr && (*err || branch_into(addr - 1, s->disp_len + 1u, func, func_size)))
		*err = -EAGAIN;
	else if (*err)
		*err = build_ool(s, avail);
	if (*err) {
		free(s);
		return NULL;
	}
	unsigned b = site_bucket(addr);
	s->hnext = site_hash[b];
	__atomic_store_n(&site_hash[b], s, __ATOMIC_RELEASE);
	s->anext = all_sites;
	all_sites = s;
	return s;
}

/* Swap in a list with `add` added or `del` removed; the old one goes once
 * its readers are done. */
static int list_update(struct hook_site *s, struct hook *add, struct hook *del)
{
	struct hook_list *old = s->list, *l;
	unsigned n = old ? old->n : 0, k = 0;

	l = malloc(sizeof(*l) + (n + 1) * sizeof(l->h[0]));
	if (!l)
		return -ENOMEM;
	l->nret = 0;
	l->gen = 0;
	for (unsigned i = 0; i < n; i++)
		if (old->h[i] != del)
			l->h[k++] = old->h[i];
	if (add)
		l->h[k++] = add;
	l->n = k;
	for (unsigned i = 0; i < k; i++) {
		l->nret += l->h[i]->ret != NULL;
		if (l->h[i]->gen > l->gen)
			l->gen = l->h[i]->gen;
	}
	if (!k) {
		free(l);
		l = NULL;
	}
	__atomic_store_n(&s->list, l, __ATOMIC_SEQ_CST);
	rcu_sync();
	free(old);
	return 0;
}

int hook_file_byte(uint64_t addr)
{
	char path[PATH_MAX], buf[4096];
	struct bpf_rt_file_at f = { .path = path, .path_size = sizeof(path) };
	struct stat st;
	uint8_t b;
	long fd = rsys(SYS_openat, AT_FDCWD, (long)"/proc/self/maps", O_RDONLY | O_CLOEXEC, 0, 0, 0);

	if (fd < 0)
		return -1;
	int r = bpf_rt_file_of(fd, buf, sizeof(buf), addr, &f);
	rsys(SYS_close, fd, 0, 0, 0, 0, 0);
	if (r != 1 || (fd = rsys(SYS_openat, AT_FDCWD, (long)path, O_RDONLY | O_CLOEXEC, 0, 0, 0)) < 0)
		return -1;
	/* the file the mapping has, not another one at that path now */
	r = !rsys(SYS_fstat, fd, (long)&st, 0, 0, 0, 0) && st.st_dev == f.dev && st.st_ino == f.ino &&
	    rsys(SYS_pread64, fd, (long)&b, 1, (long)f.off, 0, 0) == 1;
	rsys(SYS_close, fd, 0, 0, 0, 0, 0);
	return r ? b : -1;
}

/*
 * The instruction at addr a site keeps as the file has it, its jump after
 * it: its length, 0 for none. At a function entry: endbr64, or push of a
 * register but %rsp (`push %rbp`, `push %rbx`, `push %r15`...: what -O2
 * prologues start with), whose 8 bytes the site adds back to the sp
 * handlers see (an override pops them: the register is unchanged); inside a
 * function: a USDT site's nop (and endbr64). Under a kernel uprobe's int3
 * its byte 0 is read from the file (the other bytes are there).
 */
int hook_kept_insn(uint64_t addr, int entry, uint8_t *op, uint64_t *sp_adj)
{
	static const uint8_t endbr64[4] = { 0xf3, 0x0f, 0x1e, 0xfa };
	const uint8_t *p = (const uint8_t *)addr;
	int b;

	*sp_adj = 0;
	*op = endbr64[0];
	if ((p[0] == endbr64[0] || p[0] == 0xcc) && !memcmp(p + 1, endbr64 + 1, 3))
		return 4;
	b = p[0] == 0xcc ? hook_file_byte(addr) : p[0];
	*op = (uint8_t)b;
	if (!entry)
		return b == 0x90;
	*sp_adj = 8;
	if (b >= 0x50 && b <= 0x57 && b != 0x54)
		return 1;
	if (b == 0x41 && p[1] >= 0x50 && p[1] <= 0x57)
		return 2;       /* push %r8..%r15 */
	*sp_adj = 0;
	return 0;
}

/*
 * A function entry (or a USDT nop) is patched after its first instruction
 * when hook_kept_insn() keeps it: the instruction stays as the file has it,
 * and the kernel's uprobe at the same address (another tool's, or a hybrid
 * loader's) writes only byte 0, an int3 when it is registered and the
 * file's byte when it goes, so it never lands inside bpfshim's jump (at the
 * entry, the kernel's restore of byte 0 in front of the jump's displacement
 * killed the process), and bpfshim's site works under an int3 the kernel
 * put there first. The kernel single-steps or emulates the instruction and
 * resumes at the jump: both tools see the hit. The handlers see the
 * registers as at addr (ip addr, sp before a push). Only where the
 * function's code is known (a branch to the jump skips the instruction);
 * NULL: patch at addr.
 */
static struct hook_site *site_after_first(uint64_t addr, uint64_t func, size_t size)
{
	struct hook_site *s;
	size_t avail;
	uint64_t sp_adj;
	uint8_t op;
	int prot, err, skip;

	if (!func || addr < func || addr >= func + size || size == (size_t)-1 || func + size - addr < 9 ||
	    getenv("BPFSHIM_HOOK_INT3") || mapping_of(addr, &prot, &avail) || avail < 9 ||
	    !(skip = hook_kept_insn(addr, func == addr, &op, &sp_adj)))
		return NULL;
	s = site_find(addr + (unsigned)skip);
	if (s)
		return s->ip == addr ? s : NULL;        /* else a probe there was first */
	/* a 1-byte push after a nop: a thread stopped after it could not be told
	 * from one that trapped on the int3 in front of it (trapped_here) */
	if (func != addr && ((const uint8_t *)addr)[skip] >= 0x50 && ((const uint8_t *)addr)[skip] <= 0x57)
		return NULL;
	s = site_create(addr + (unsigned)skip, addr, func, size, &err);
	if (!s || s->mode != HOOK_MODE_JMP)
		return NULL;
	s->sp_adj = sp_adj;                     /* before hook_attach_in patches it */
	s->kept_op = op;
	s->kept_reg = !sp_adj ? -1 : skip == 1 ? op - 0x50 : 8 + (((const uint8_t *)addr)[1] - 0x50);
	return s;
}

int hook_attach(void *addr, hook_fn entry, hook_fn ret, void *data, struct hook **out)
{
	return hook_attach_in(addr, NULL, (size_t)-1, entry, ret, data, out);
}

int hook_attach_in(void *addr, const void *func, size_t func_size, hook_fn entry, hook_fn ret, void *data,
		   struct hook **out)
{
	struct hook_site *s;
	struct hook *h;
	sigset_t trap, old;
	int err;

	if (!addr || !out)
		return -EINVAL;
	/* this thread must take the SIGTRAP of a site it is patching */
	sigemptyset(&trap);
	sigaddset(&trap, SIGTRAP);
	pthread_sigmask(SIG_UNBLOCK, &trap, &old);
	pthread_mutex_lock(&lock);
	err = init_locked();
	if (err)
		goto out;
	s = site_find((uint64_t)addr);
	if (s && s->ip != (uint64_t)addr) {
		err = -EBUSY;           /* the jump after its entry's first instruction is there */
		goto out;
	}
	if (!s)
		s = site_after_first((uint64_t)addr, (uint64_t)func, func_size);
	if (!s && !(s = site_create((uint64_t)addr, (uint64_t)addr, (uint64_t)func, func_size, &err)))
		goto out;
	h = calloc(1, sizeof(*h));
	if (!h) {
		err = -ENOMEM;
		goto out;
	}
	h->site = s;
	h->entry = entry;
	h->ret = ret;
	h->data = data;
	h->gen = ++s->gen_ctr;
	err = list_update(s, h, NULL);
	if (err) {
		free(h);
		goto out;
	}
	if (!s->patched) {
		err = site_write(s, 1);
		if (err) {
			list_update(s, NULL, h);
			free(h);
			goto out;
		}
		s->patched = 1;
	}
	*out = h;
out:
	pthread_mutex_unlock(&lock);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return err;
}

int hook_detach(struct hook *h)
{
	struct hook_site *s;
	sigset_t trap, old;
	int err;

	if (!h)
		return -EINVAL;
	s = h->site;
	sigemptyset(&trap);
	sigaddset(&trap, SIGTRAP);
	pthread_sigmask(SIG_UNBLOCK, &trap, &old);
	pthread_mutex_lock(&lock);
	if (s->list && s->list->n == 1 && s->list->h[0] == h && s->patched) {
		/* last hook: put the code back first, the trampoline stays */
		site_write(s, 0);
		s->patched = 0;
	}
	err = list_update(s, NULL, h);
	pthread_mutex_unlock(&lock);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!err)
		free(h);
	return err;
}

/* ------------------------------------------------- other code rewriters */

int hook_branch_into(uint64_t addr, unsigned len, uint64_t func, size_t size, const uint8_t *copy)
{
	pthread_mutex_lock(&lock);
	int hit = branch_into_copy(addr, len, func, size, copy);
	pthread_mutex_unlock(&lock);
	return hit;
}

uint8_t *hook_code_near(uint64_t addr, size_t n)
{
	pthread_mutex_lock(&lock);
	uint8_t *p = init_locked() ? NULL : near_alloc(addr, n);
	pthread_mutex_unlock(&lock);
	return p;
}

int hook_code_put(uint8_t *dst, const uint8_t *src, size_t n)
{
	pthread_mutex_lock(&lock);
	int err = code_write(dst, src, n);
	pthread_mutex_unlock(&lock);
	return err;
}

int hook_emit_jmp(uint8_t *b, uint64_t at, uint64_t target)
{
	return emit_jmp(b, at, target);
}

int hook_kept(const struct hook *h)
{
	return h && h->site->ip != h->site->addr && h->site->mode == HOOK_MODE_JMP;
}

int hook_mode(const struct hook *h)
{
	return h ? h->site->mode : -EINVAL;
}
