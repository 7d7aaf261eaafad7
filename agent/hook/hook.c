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
 * Jump-mode trampoline of a site (allocated within +-2 GiB of it):
 *
 *     lea  -128(%rsp),%rsp          skip the red zone
 *     push %rax
 *     movabs $site,%rax
 *     call *entry_common(%rip)      saves pt_regs, runs the handlers
 *     pop  %rax                     (entry_common returns here, or to the
 *     lea  128(%rsp),%rsp            caller of the function on override)
 *     <relocated displaced instructions>
 *     jmp  addr+len
 *     .quad hook_entry_common
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <ucontext.h>
#include <linux/membarrier.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include "hook.h"
#include "rawsys.h"
#include "tasks.h"
#include "start.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define HIDDEN __attribute__((visibility("hidden")))

/* ---------------------------------------------------------------- types */

struct hook_list {
	unsigned n, nret;
	uint64_t gen;                   /* newest hook's gen */
	struct hook *h[];
};

struct hook_site {
	uint64_t addr;                  /* offset 0: read by hook_entry_common */
	struct hook_list *list;         /* NULL when no hook */
	int xmm_all;                    /* offset 16: save xmm8-15 too (not a known function entry) */
	int mode;                       /* HOOK_MODE_* */
	int patched;
	int prot;                       /* of the page(s) at addr */
	uint64_t ip;                    /* offset 32: the probed address handlers see (addr, or the
	                                 * entry whose first instruction the site follows) */
	uint64_t sp_adj;                /* offset 40: what that instruction took from sp (push %rbp: 8) */
	uint8_t orig[16];
	uint8_t patch_len;              /* 5 (jmp) or 1 (int3) */
	uint8_t disp_len;               /* displaced bytes (jmp mode) */
	uint8_t bmap[8];                /* original offset -> relocated offset, 0xff = no boundary */
	uint8_t *tramp;                 /* jmp mode: trampoline entry */
	uint8_t *reloc;                 /* relocated code (jmp: in tramp; int3: the out-of-line slot) */
	uint64_t gen_ctr;
	size_t avail;                   /* readable bytes at addr (<= 16) */
	struct hook_site *hnext;        /* hash chain (insert only) */
	struct hook_site *anext;        /* all sites */
} __attribute__((aligned(64)));

_Static_assert(offsetof(struct hook_site, xmm_all) == 16, "read by hook_entry_common");
_Static_assert(offsetof(struct hook_site, ip) == 32, "read by hook_entry_common");
_Static_assert(offsetof(struct hook_site, sp_adj) == 40, "read by hook_entry_common");

struct hook {
	struct hook_site *site;
	hook_fn entry, ret;
	void *data;
	uint64_t gen;
};

/* One frame whose return address was swapped for hook_ret_tramp. */
struct shadow_ent {
	uint64_t ret;                   /* original return address (hook_ret_tramp if chained) */
	uint64_t sp;                    /* where it was */
	struct hook_site *site;
	uint64_t gen;                   /* only hooks with gen <= this get the return */
};

#define SHADOW_MAX 65536u
#define TRAMP_SIZE 256
#define OOL_SIZE 64
#define RELOC_OFF 31
#define BPFSHIM_HOOK_CHAIN_MAX 8

/* ------------------------------------------------------------ the stubs */

void hook_entry_common(void) HIDDEN;
void hook_ret_tramp(void) HIDDEN;
uint64_t hook_dispatch_entry(struct hook_site *s, struct hook_pt_regs *regs) HIDDEN __attribute__((used));
uint64_t hook_dispatch_return(struct hook_pt_regs *regs) HIDDEN __attribute__((used));

#define SAVE_GPRS_NO_AX \
	"mov %r15, 0(%rsp)\n mov %r14, 8(%rsp)\n mov %r13, 16(%rsp)\n mov %r12, 24(%rsp)\n" \
	"mov %rbp, 32(%rsp)\n mov %rbx, 40(%rsp)\n mov %r11, 48(%rsp)\n mov %r10, 56(%rsp)\n" \
	"mov %r9, 64(%rsp)\n mov %r8, 72(%rsp)\n mov %rcx, 88(%rsp)\n mov %rdx, 96(%rsp)\n" \
	"mov %rsi, 104(%rsp)\n mov %rdi, 112(%rsp)\n"
#define RESTORE_GPRS_NO_AX \
	"mov 0(%rsp), %r15\n mov 8(%rsp), %r14\n mov 16(%rsp), %r13\n mov 24(%rsp), %r12\n" \
	"mov 32(%rsp), %rbp\n mov 40(%rsp), %rbx\n mov 56(%rsp), %r10\n" \
	"mov 64(%rsp), %r9\n mov 72(%rsp), %r8\n mov 88(%rsp), %rcx\n mov 96(%rsp), %rdx\n" \
	"mov 104(%rsp), %rsi\n mov 112(%rsp), %rdi\n mov 48(%rsp), %r11\n"
#define SAVE_XMM_LOW \
	"lea -256(%rsp), %rsp\n" \
	"movups %xmm0, 0(%rsp)\n movups %xmm1, 16(%rsp)\n movups %xmm2, 32(%rsp)\n movups %xmm3, 48(%rsp)\n" \
	"movups %xmm4, 64(%rsp)\n movups %xmm5, 80(%rsp)\n movups %xmm6, 96(%rsp)\n movups %xmm7, 112(%rsp)\n"
#define SAVE_XMM_HIGH \
	"movups %xmm8, 128(%rsp)\n movups %xmm9, 144(%rsp)\n movups %xmm10, 160(%rsp)\n movups %xmm11, 176(%rsp)\n" \
	"movups %xmm12, 192(%rsp)\n movups %xmm13, 208(%rsp)\n movups %xmm14, 224(%rsp)\n movups %xmm15, 240(%rsp)\n"
#define RESTORE_XMM_LOW \
	"movups 0(%rsp), %xmm0\n movups 16(%rsp), %xmm1\n movups 32(%rsp), %xmm2\n movups 48(%rsp), %xmm3\n" \
	"movups 64(%rsp), %xmm4\n movups 80(%rsp), %xmm5\n movups 96(%rsp), %xmm6\n movups 112(%rsp), %xmm7\n"
#define RESTORE_XMM_HIGH \
	"movups 128(%rsp), %xmm8\n movups 144(%rsp), %xmm9\n movups 160(%rsp), %xmm10\n movups 176(%rsp), %xmm11\n" \
	"movups 192(%rsp), %xmm12\n movups 208(%rsp), %xmm13\n movups 224(%rsp), %xmm14\n movups 240(%rsp), %xmm15\n"

/*
 * Entered from a site trampoline with rax = site and the stack
 *   [ret into trampoline][saved rax][128 red zone][probe sp ...]
 * Frame: pt_regs at 0, pushed flags at 168, ret 176, rax 184, probe sp = 320.
 * The handlers are C: xmm0-7 are saved (the argument registers; xmm8-15
 * too where the site is not a known function entry), the stack is aligned,
 * DF cleared. The way back restores the flags with sahf and an add for OF
 * (popfq costs more than the rest of the path); rax is free for that as the
 * trampoline pops it after.
 */
__asm__(
	".text\n"
	".globl hook_entry_common\n .hidden hook_entry_common\n"
	".type hook_entry_common, @function\n"
	"hook_entry_common:\n"
	"pushfq\n"
	"lea -168(%rsp), %rsp\n"
	SAVE_GPRS_NO_AX
	"mov 184(%rsp), %r11\n mov %r11, 80(%rsp)\n"
	"movq $-1, 120(%rsp)\n"
	"mov 32(%rax), %r11\n mov %r11, 128(%rsp)\n"
	"movq $0x33, 136(%rsp)\n"
	"mov 168(%rsp), %r11\n mov %r11, 144(%rsp)\n"
	"lea 320(%rsp), %r11\n add 40(%rax), %r11\n mov %r11, 152(%rsp)\n"
	"movq $0x2b, 160(%rsp)\n"
	"cld\n"
	SAVE_XMM_LOW
	"mov %rax, %r12\n"
	"cmpl $0, 16(%rax)\n"
	"je 2f\n"
	SAVE_XMM_HIGH
	"2:\n"
	"mov %rax, %rdi\n"
	"lea 256(%rsp), %rsi\n"
	"mov %rsp, %rbx\n"
	"and $-16, %rsp\n"
	"call hook_dispatch_entry\n"
	"mov %rbx, %rsp\n"
	RESTORE_XMM_LOW
	"cmpl $0, 16(%r12)\n"
	"je 2f\n"
	RESTORE_XMM_HIGH
	"2:\n"
	"lea 256(%rsp), %rsp\n"
	"test %eax, %eax\n"
	"jnz 1f\n"
	"mov 80(%rsp), %r11\n mov %r11, 184(%rsp)\n"    /* rax for the trampoline's pop */
	RESTORE_GPRS_NO_AX
	"mov 168(%rsp), %r11\n"                         /* the flags: DF, then OF, then sahf */
	"bt $10, %r11\n"
	"jnc 3f\n"
	"std\n"
	"3:\n"
	"movzbl %r11b, %eax\n"
	"shl $8, %eax\n"
	"bt $11, %r11\n"
	"setc %al\n"
	"add $0x7f, %al\n"
	"sahf\n"
	"mov 48(%rsp), %r11\n"
	"lea 176(%rsp), %rsp\n"
	"ret\n"
	"1:\n"                                           /* override: return to the caller */
	"mov 40(%r12), %r11\n mov %r11, 176(%rsp)\n"     /* sp_adj: the site's push, to skip */
	RESTORE_GPRS_NO_AX
	"mov 80(%rsp), %rax\n"
	"cmpq $0, 176(%rsp)\n"
	"lea 168(%rsp), %rsp\n"
	"jne 4f\n"
	"popfq\n"
	"lea 144(%rsp), %rsp\n"                          /* ret, rax, red zone */
	"ret\n"
	"4:\n"
	"popfq\n"
	"lea 152(%rsp), %rsp\n"                          /* and the pushed rbp (unchanged) */
	"ret\n"
	".size hook_entry_common, .-hook_entry_common\n"

/*
 * A hooked function returns here. rsp = the probe sp + 8; the slot below it
 * (the probe sp) gets the original return address, for the final jump.
 * Frame: pt_regs at 0, flags 168, slot 176. At a return only rax, rdx,
 * xmm0, xmm1 carry values and the flags are dead (the ABI's), so the rest
 * is not saved, the flags are not restored, and the way out is an indirect
 * jmp the branch predictor learns, not a ret it always mispredicts here.
 */
	".globl hook_ret_tramp\n .hidden hook_ret_tramp\n"
	".type hook_ret_tramp, @function\n"
	"hook_ret_tramp:\n"
	"lea -8(%rsp), %rsp\n"
	"pushfq\n"
	"lea -168(%rsp), %rsp\n"
	SAVE_GPRS_NO_AX
	"mov %rax, 80(%rsp)\n"
	"movq $-1, 120(%rsp)\n"
	"movq $0, 128(%rsp)\n"
	"movq $0x33, 136(%rsp)\n"
	"mov 168(%rsp), %r11\n mov %r11, 144(%rsp)\n"
	"lea 184(%rsp), %r11\n mov %r11, 152(%rsp)\n"
	"movq $0x2b, 160(%rsp)\n"
	"cld\n"
	"lea -32(%rsp), %rsp\n"
	"movups %xmm0, 0(%rsp)\n movups %xmm1, 16(%rsp)\n"
	"lea 32(%rsp), %rdi\n"
	"mov %rsp, %rbx\n"
	"and $-16, %rsp\n"
	"call hook_dispatch_return\n"
	"mov %rbx, %rsp\n"
	"mov %rax, 208(%rsp)\n"                          /* 32 + 176: the slot */
	"movups 0(%rsp), %xmm0\n movups 16(%rsp), %xmm1\n"
	"lea 32(%rsp), %rsp\n"
	RESTORE_GPRS_NO_AX
	"mov 80(%rsp), %rax\n"
	"lea 184(%rsp), %rsp\n"
	"jmp *-8(%rsp)\n"                               /* below sp, above the red zone signals skip */
	".size hook_ret_tramp, .-hook_ret_tramp\n"
);

/* -------------------------------------------------------------- globals */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int inited;
static int have_sync_core;
static struct bpf_rt_kept mem = BPF_RT_KEPT_INIT;   /* /proc/self/mem, when mprotect is refused */
#define memfd bpf_rt_kept_fd(&mem)
static struct sigaction prev_trap;
static pthread_key_t shadow_key;
static uint64_t ret_dropped;

#define SITE_HASH 1024
static struct hook_site *site_hash[SITE_HASH];

static __thread struct shadow_ent *ss_base;
static __thread uint32_t ss_n;
static __thread const struct hook_site *entry_site;   /* entry handlers of this site run */

/* Raw system calls (rawsys.h): used while a site is half patched, when
 * calling into libc could hit the very code being patched. */
#define rsys bpf_rt_sys

static unsigned site_bucket(uint64_t addr)
{
	return (unsigned)((addr * 0x9e3779b97f4a7c15ull) >> 54) & (SITE_HASH - 1);
}

static struct hook_site *site_find(uint64_t addr)
{
	struct hook_site *s = __atomic_load_n(&site_hash[site_bucket(addr)], __ATOMIC_ACQUIRE);

	for (; s; s = s->hnext)
		if (s->addr == addr)
			return s;
	return NULL;
}

/* ------------------------------------------------------------------- RCU */

/*
 * Readers (the dispatchers) count themselves in a per-thread slot with a
 * plain add: no lock prefix on the hot path. A writer swaps the list, runs
 * membarrier(PRIVATE_EXPEDITED) (a full barrier on every running thread of
 * the process, as liburcu's membarrier flavour), then waits until each
 * other thread was seen outside any dispatcher once. A signal handler
 * nesting in a reader leaves the count as it found it, so a non-atomic
 * add interrupted by one is still right. Without membarrier the counts
 * are updated with seq_cst atomics instead.
 */
struct rcu_slot {
	long cnt;
	int owner;
	int in_entry;                   /* entry handlers running (hook_override) */
	int override;                   /* hook_override() was called */
} __attribute__((aligned(64)));

#define RCU_CHUNK 256
struct rcu_chunk {
	struct rcu_slot s[RCU_CHUNK];
	struct rcu_chunk *next;
};
static struct rcu_chunk rcu_first;
static __thread struct rcu_slot *tls_slot;
static int rcu_fast;                    /* membarrier available */
static pthread_key_t rcu_key;

static void rcu_release(void *p)
{
	struct rcu_slot *sl = p;

	sl->in_entry = sl->override = 0;
	__atomic_store_n(&sl->cnt, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&sl->owner, 0, __ATOMIC_RELEASE);
}

static struct rcu_slot *rcu_register(void)
{
	for (struct rcu_chunk *c = &rcu_first;; c = __atomic_load_n(&c->next, __ATOMIC_ACQUIRE)) {
		for (int i = 0; i < RCU_CHUNK; i++) {
			int zero = 0;
			if (!__atomic_load_n(&c->s[i].owner, __ATOMIC_RELAXED) &&
			    __atomic_compare_exchange_n(&c->s[i].owner, &zero, 1, 0, __ATOMIC_SEQ_CST,
							__ATOMIC_RELAXED)) {
				tls_slot = &c->s[i];
				bpf_rt_setspecific(rcu_key, tls_slot);
				return tls_slot;
			}
		}
		if (!__atomic_load_n(&c->next, __ATOMIC_ACQUIRE)) {
			/* mmap, not malloc: this may run in a signal handler */
			struct rcu_chunk *n = (void *)rsys(SYS_mmap, 0, sizeof(*n), PROT_READ | PROT_WRITE,
							   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			struct rcu_chunk *expect = NULL;
			if ((unsigned long)n > -4096ul)
				abort();
			if (!__atomic_compare_exchange_n(&c->next, &expect, n, 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
				rsys(SYS_munmap, (long)n, sizeof(*n), 0, 0, 0, 0);
		}
	}
}

static inline struct rcu_slot *rcu_lock(void)
{
	struct rcu_slot *sl = tls_slot;

	if (__builtin_expect(!sl, 0))
		sl = rcu_register();
	if (__builtin_expect(rcu_fast, 1)) {
		sl->cnt++;
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
	} else {
		__atomic_fetch_add(&sl->cnt, 1, __ATOMIC_SEQ_CST);
	}
	return sl;
}

static inline void rcu_unlock(struct rcu_slot *sl)
{
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (__builtin_expect(rcu_fast, 1))
		sl->cnt--;
	else
		__atomic_fetch_sub(&sl->cnt, 1, __ATOMIC_SEQ_CST);
}

static void pause_short(long ns)
{
	struct timespec ts = { 0, ns };

	rsys(SYS_nanosleep, (long)&ts, 0, 0, 0, 0, 0);
}

/* After a list was swapped: no thread still runs with the old one. */
static void rcu_sync(void)
{
	if (rcu_fast)
		rsys(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0, 0, 0, 0);
	else
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
	for (struct rcu_chunk *c = &rcu_first; c; c = __atomic_load_n(&c->next, __ATOMIC_ACQUIRE)) {
		for (int i = 0; i < RCU_CHUNK; i++) {
			struct rcu_slot *sl = &c->s[i];
			if (sl == tls_slot || !__atomic_load_n(&sl->owner, __ATOMIC_ACQUIRE))
				continue;
			for (int spins = 0; __atomic_load_n(&sl->cnt, __ATOMIC_ACQUIRE); spins++) {
				if (spins < 200)
					__builtin_ia32_pause();
				else
					pause_short(spins < 1000 ? 1000 : 50000);
			}
		}
	}
}

/* ---------------------------------------------------------- shadow stack */

static void shadow_free(void *p)
{
	if (p)
		munmap(p, SHADOW_MAX * sizeof(struct shadow_ent));
}

static struct shadow_ent *shadow_base(void)
{
	if (ss_base)
		return ss_base;
	/* reserved once per thread, committed as it is used */
	void *p = (void *)rsys(SYS_mmap, 0, SHADOW_MAX * sizeof(struct shadow_ent), PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if ((unsigned long)p > -4096ul)
		return NULL;
	ss_base = p;
	bpf_rt_setspecific(shadow_key, p);
	return ss_base;
}

static void shadow_push(struct hook_site *s, struct hook_pt_regs *regs, uint64_t gen)
{
	struct shadow_ent *b = shadow_base();
	uint64_t *slot = (uint64_t *)regs->sp;
	uint32_t n = ss_n;

	if (!b)
		goto drop;
	if (n >= SHADOW_MAX) {
		/* full: drop the frames below this sp, as the kernel does on
		 * every entry (they were skipped by longjmp) */
		while (n && b[n - 1].sp < regs->sp)
			n--;
		ss_n = n;
		if (n >= SHADOW_MAX)
			goto drop;
	}
	/* reserve first: a signal handler here pushes above us */
	ss_n = n + 1;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	b[n].ret = *slot;
	b[n].sp = regs->sp;
	b[n].site = s;
	b[n].gen = gen;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	*slot = (uint64_t)hook_ret_tramp;
	return;
drop:
	__atomic_add_fetch(&ret_dropped, 1, __ATOMIC_RELAXED);
}

/* ----------------------------------------------------------- dispatchers */

uint64_t hook_dispatch_entry(struct hook_site *s, struct hook_pt_regs *regs)
{
	struct rcu_slot *sl = rcu_lock();
	struct hook_list *l = __atomic_load_n(&s->list, __ATOMIC_ACQUIRE);
	uint64_t ov = 0;

	if (l) {
		int saved = sl->override;

		const struct hook_site *prev_site = entry_site;

		sl->override = 0;
		sl->in_entry++;
		entry_site = s;
		for (unsigned i = 0; i < l->n; i++) {
			struct hook *h = l->h[i];
			if (h->entry)
				h->entry(regs, h->data);
		}
		entry_site = prev_site;
		sl->in_entry--;
		ov = (uint64_t)sl->override;
		sl->override = saved;
		if (l->nret)
			shadow_push(s, regs, l->gen);
	}
	rcu_unlock(sl);
	return ov;
}

int hook_override(struct hook_pt_regs *regs, uint64_t rc)
{
	struct rcu_slot *sl = tls_slot;

	if (!sl || !sl->in_entry || !regs)
		return -EINVAL;
	regs->ax = rc;
	sl->override = 1;
	return 0;
}

static void ret_handlers(const struct shadow_ent *e, struct hook_pt_regs *regs)
{
	struct rcu_slot *sl = rcu_lock();
	struct hook_list *l = __atomic_load_n(&e->site->list, __ATOMIC_ACQUIRE);

	if (l) {
		for (unsigned i = 0; i < l->n; i++) {
			struct hook *h = l->h[i];
			if (h->ret && h->gen <= e->gen)
				h->ret(regs, h->data);
		}
	}
	rcu_unlock(sl);
}

static void __attribute__((noreturn)) shadow_corrupt(void)
{
	static const char m[] = "bpfshim: uretprobe return with no shadow-stack frame (stack switched?)\n";
	(void)!write(2, m, sizeof(m) - 1);
	abort();
}

uint64_t hook_dispatch_return(struct hook_pt_regs *regs)
{
	struct shadow_ent *b = ss_base, chain[8];
	uint64_t sp = regs->sp - 8;
	uint32_t i = ss_n, j, k;

	/* The newest frame at this sp; the ones above it were skipped by a
	 * longjmp or an exception and are dropped. */
	while (i && b[i - 1].sp != sp)
		i--;
	if (!i)
		shadow_corrupt();
	i--;
	/* a tail call from one hooked function to another: same sp, chained */
	j = i;
	while (b[j].ret == (uint64_t)hook_ret_tramp) {
		if (!j || b[j - 1].sp != sp)
			shadow_corrupt();
		j--;
	}
	uint64_t ret = b[j].ret;
	unsigned nchain = 0;
	for (k = i + 1; k-- > j && nchain < BPFSHIM_HOOK_CHAIN_MAX;)
		chain[nchain++] = b[k];
	ss_n = j;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	regs->ip = ret;
	for (k = 0; k < nchain; k++)
		ret_handlers(&chain[k], regs);
	return ret;
}

int hook_at_func_entry(void)
{
	const struct hook_site *s = entry_site;

	return s && (s->ip == s->addr ? s->orig[0] == 0x55 : s->sp_adj != 0);   /* after its push %rbp */
}

size_t hook_ret_addrs(uint64_t sp, uint64_t *tramp, uint64_t *out, size_t max)
{
	const struct shadow_ent *b = ss_base;
	size_t n = 0;

	*tramp = (uint64_t)hook_ret_tramp;
	for (uint32_t i = ss_n; i-- > 0 && n < max;)
		if (b[i].sp >= sp && b[i].ret != (uint64_t)hook_ret_tramp)
			out[n++] = b[i].ret;
	return n;
}

static uint64_t int3_hits, parked_moved, merged_traps;

void hook_get_stats(struct hook_stats *st)
{
	st->ret_dropped = __atomic_load_n(&ret_dropped, __ATOMIC_RELAXED);
	st->int3_hits = __atomic_load_n(&int3_hits, __ATOMIC_RELAXED);
	st->parked_moved = __atomic_load_n(&parked_moved, __ATOMIC_RELAXED);
	st->merged_traps = __atomic_load_n(&merged_traps, __ATOMIC_RELAXED);
}

/* ------------------------------------------------ code memory near a site */

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
	long fd = rsys(SYS_openat, AT_FDCWD, (long)"/proc/self/maps", O_RDONLY | O_CLOEXEC, 0, 0, 0);

	if (fd < 0)
		return NULL;
	int r = bpf_rt_maps_each(fd, buf, sizeof(buf), gap_vma, &g);
	rsys(SYS_close, fd, 0, 0, 0, 0, 0);
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

static uint8_t *near_alloc(uint64_t addr, size_t n)
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
static int code_write(uint8_t *dst, const uint8_t *src, size_t n)
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

/* ------------------------------------------------------------ relocation */

static int fits32(int64_t v)
{
	return v >= INT32_MIN && v <= INT32_MAX;
}

static void put32(uint8_t *p, int64_t v)
{
	int32_t x = (int32_t)v;
	memcpy(p, &x, 4);
}

static int32_t get32(const uint8_t *p)
{
	int32_t x;
	memcpy(&x, p, 4);
	return x;
}

static int emit_jmp(uint8_t *b, uint64_t at, uint64_t target)
{
	int64_t rel = (int64_t)(target - (at + 5));

	if (fits32(rel)) {
		b[0] = 0xe9;
		put32(b + 1, rel);
		return 5;
	}
	b[0] = 0xff;                    /* jmp *0(%rip); .quad target */
	b[1] = 0x25;
	put32(b + 2, 0);
	memcpy(b + 6, &target, 8);
	return 14;
}

enum { BR_NONE, BR_JMP, BR_JCC, BR_CALL, BR_BAD };

/* Relative branches: kind, and target. */
static int branch_of(const struct x86_insn *d, const uint8_t *src, uint64_t next, uint64_t *target)
{
	if (d->vex)
		return BR_NONE;
	if (d->map == 0) {
		if (d->op == 0xeb || (d->op >= 0x70 && d->op <= 0x7f)) {
			*target = next + (int64_t)(int8_t)src[d->imm_off];
			return d->op == 0xeb ? BR_JMP : BR_JCC;
		}
		if (d->op == 0xe8 || d->op == 0xe9) {
			if (d->imm_size != 4)
				return BR_BAD;  /* 66-prefixed: 16-bit ip */
			*target = next + (int64_t)get32(src + d->imm_off);
			return d->op == 0xe8 ? BR_CALL : BR_JMP;
		}
		if (d->op >= 0xe0 && d->op <= 0xe3)
			return BR_BAD;          /* loop*, jrcxz: rel8 only */
		if (d->op == 0xc7 && d->modrm == 0xf8)
			return BR_BAD;          /* xbegin */
	} else if (d->map == 1 && d->op >= 0x80 && d->op <= 0x8f) {
		if (d->imm_size != 4)
			return BR_BAD;
		*target = next + (int64_t)get32(src + d->imm_off);
		return BR_JCC;
	}
	return BR_NONE;
}

/* Control never falls through to the next instruction. */
static int ends_flow(const struct x86_insn *d)
{
	if (d->vex)
		return 0;
	if (d->map == 0) {
		switch (d->op) {
		case 0xc2: case 0xc3: case 0xca: case 0xcb: case 0xcf: case 0xe9: case 0xeb: case 0xcc:
		case 0xf4:
			return 1;
		case 0xff:
			return ((d->modrm >> 3) & 7) == 4 || ((d->modrm >> 3) & 7) == 5;
		}
	}
	return d->map == 1 && d->op == 0x0b;    /* ud2 */
}

/* Write the relocated form of one instruction (at src_addr) into b, which
 * will execute at `at`. Returns its length or -EINVAL. */
static int reloc_insn(const struct x86_insn *d, const uint8_t *src, uint64_t src_addr, uint8_t *b, uint64_t at)
{
	uint64_t next = src_addr + d->len, target = 0;
	int n;

	switch (branch_of(d, src, next, &target)) {
	case BR_BAD:
		return -EINVAL;
	case BR_JMP:
		return emit_jmp(b, at, target);
	case BR_JCC: {
		unsigned cc = (d->map == 0 ? d->op : d->op) & 0xf;
		int64_t rel = (int64_t)(target - (at + 6));
		if (fits32(rel)) {
			b[0] = 0x0f;
			b[1] = (uint8_t)(0x80 | cc);
			put32(b + 2, rel);
			return 6;
		}
		b[0] = (uint8_t)(0x70 | (cc ^ 1));     /* j!cc over an absolute jmp */
		b[1] = 14;
		emit_jmp(b + 2, at + 2, target);
		return 16;
	}
	case BR_CALL: {
		/* push the original return address, then jmp */
		uint32_t lo = (uint32_t)next, hi = (uint32_t)(next >> 32);
		b[0] = 0x68;
		memcpy(b + 1, &lo, 4);
		b[5] = 0xc7; b[6] = 0x44; b[7] = 0x24; b[8] = 0x04;     /* movl $hi, 4(%rsp) */
		memcpy(b + 9, &hi, 4);
		n = emit_jmp(b + 13, at + 13, target);
		return 13 + n;
	}
	}
	memcpy(b, src, d->len);
	if (d->rip_rel) {
		int64_t t = (int64_t)next + get32(src + d->disp_off);
		int64_t nd = t - (int64_t)(at + d->len);
		if (!fits32(nd))
			return -EINVAL;
		put32(b + d->disp_off, nd);
	}
	return d->len;
}

static int first_insn_ok(uint8_t b);

/* The jump-mode trampoline of s, or -EINVAL if the code does not allow it.
 * `avail` bytes are readable at s->addr. */
static int build_tramp(struct hook_site *s, size_t avail)
{
	uint8_t buf[TRAMP_SIZE];
	uint8_t *t = near_alloc(s->addr, TRAMP_SIZE);
	uint64_t at;
	unsigned covered = 0, off = RELOC_OFF;

	if (!t)
		return -ENOMEM;
	at = (uint64_t)t;
	memset(s->bmap, 0xff, sizeof(s->bmap));
	while (covered < 5) {
		struct x86_insn d;
		uint64_t target;
		int n = hook_x86_decode(s->orig + covered, avail - covered, &d);
		if (n < 0)
			return -EINVAL;
		int br = branch_of(&d, s->orig + covered, s->addr + covered + n, &target);
		if (covered + n < 5 && (ends_flow(&d) || br == BR_CALL))
			return -EINVAL;         /* would patch past the function / return into the patch */
		if ((br == BR_JMP || br == BR_JCC || br == BR_CALL) && target > s->addr && target < s->addr + 5)
			return -EINVAL;         /* branch into the bytes the jmp overwrites */
		if (s->orig[covered] == 0xcc)
			return -EINVAL;
		if (covered == 0 && n == 1 && !first_insn_ok(s->orig[0]))
			return -EINVAL;         /* see trapped_here() */
		s->bmap[covered] = (uint8_t)off;
		n = reloc_insn(&d, s->orig + covered, s->addr + covered, buf + off, at + off);
		if (n < 0)
			return n;
		off += (unsigned)n;
		covered += d.len;
	}
	off += (unsigned)emit_jmp(buf + off, at + off, s->addr + covered);
	off = (off + 7) & ~7u;
	uint64_t common = (uint64_t)hook_entry_common, site = (uint64_t)s;
	memcpy(buf + off, &common, 8);
	/* the fixed head */
	static const uint8_t head1[] = { 0x48, 0x8d, 0x64, 0x24, 0x80, 0x50, 0x48, 0xb8 };
	memcpy(buf, head1, sizeof(head1));
	memcpy(buf + 8, &site, 8);
	buf[16] = 0xff;
	buf[17] = 0x15;
	put32(buf + 18, (int64_t)off - 22);
	static const uint8_t head2[] = { 0x58, 0x48, 0x8d, 0xa4, 0x24, 0x80, 0x00, 0x00, 0x00 };
	memcpy(buf + 22, head2, sizeof(head2));
	off += 8;
	if (off > TRAMP_SIZE)
		return -EINVAL;
	int err = code_write(t, buf, off);
	if (err)
		return err;
	s->tramp = t;
	s->reloc = t + RELOC_OFF;
	s->disp_len = (uint8_t)covered;
	s->patch_len = 5;
	s->mode = HOOK_MODE_JMP;
	return 0;
}

/* int3 mode: an out-of-line copy of the first instruction and a jmp back
 * (into *slot; the site's mode is the caller's business). */
static int build_ool_slot(struct hook_site *s, size_t avail, uint8_t **slot, uint8_t *len)
{
	uint8_t buf[OOL_SIZE];
	struct x86_insn d;
	int n = hook_x86_decode(s->orig, avail, &d);

	if (n < 0 || s->orig[0] == 0xcc)
		return -EINVAL;
	uint8_t *t = near_alloc(s->addr, OOL_SIZE);
	if (!t)
		return -ENOMEM;
	n = reloc_insn(&d, s->orig, s->addr, buf, (uint64_t)t);
	if (n < 0)
		return n;
	n += emit_jmp(buf + n, (uint64_t)t + (unsigned)n, s->addr + d.len);
	int err = code_write(t, buf, (size_t)n);
	if (err)
		return err;
	*slot = t;
	*len = d.len;
	return 0;
}

static int build_ool(struct hook_site *s, size_t avail)
{
	uint8_t *t, len;
	int err = build_ool_slot(s, avail, &t, &len);

	if (err)
		return err;
	s->reloc = t;
	s->tramp = NULL;
	s->patch_len = 1;
	s->disp_len = len;
	s->mode = HOOK_MODE_INT3;
	return 0;
}

/* ------------------------------------------------------ patching the code */

static void sync_cores(void)
{
	if (have_sync_core &&
	    rsys(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0, 0, 0, 0) == 0)
		return;
	pause_short(1000000);           /* let every core retire what it fetched */
}

/*
 * Threads stopped between the instructions the jmp overwrites (say, right
 * after a 1-byte `push %rbp`) would resume in the middle of the jmp. Once
 * byte 0 is int3 no thread can newly get there, so each thread that may be
 * there (running, or blocked in a syscall whose return is there) gets a
 * SIGTRAP queued with this request: its handler moves it to the same point
 * of the relocated copy.
 */
#define QUIESCE_MAX 4096
static struct {
	int active;
	int n;
	int tids[QUIESCE_MAX];
	int acked[QUIESCE_MAX];
} qreq;

/* `queued`: the thread is stopped where its instructions left it (not on
 * a trap); if that is inside a jump-mode site's displaced bytes it goes to
 * the same point of the relocated copy. Whichever site it is (the one being
 * patched, or one whose quiesce() gave up waiting for this thread on a
 * loaded machine), and whatever the state of its patch: the bytes ahead
 * are the jump's or soon may be, and the copy runs the same instructions. */
static void quiesce_fix(greg_t *g, int queued)
{
	uint64_t ip = (uint64_t)g[REG_RIP];

	for (int k = 1; queued && k < 5; k++) {
		struct hook_site *s = site_find(ip - k);
		if (s && s->mode == HOOK_MODE_JMP && s->bmap[k] != 0xff) {
			g[REG_RIP] = (greg_t)(s->tramp + s->bmap[k]);
			__atomic_add_fetch(&parked_moved, 1, __ATOMIC_RELAXED);
			break;
		}
	}
	if (!__atomic_load_n(&qreq.active, __ATOMIC_ACQUIRE))
		return;
	int tid = (int)rsys(SYS_gettid, 0, 0, 0, 0, 0, 0);
	for (int i = 0; i < qreq.n; i++)
		if (qreq.tids[i] == tid)
			__atomic_store_n(&qreq.acked[i], 1, __ATOMIC_RELEASE);
}

/* 1-byte first instructions a jump-mode site accepts: push r (but rsp),
 * and ones that may run twice. */
static int first_insn_ok(uint8_t b)
{
	return (b >= 0x50 && b <= 0x57 && b != 0x54) || b == 0x90 || b == 0xfc || b == 0xfd || b == 0xf8 ||
	       b == 0xf9 || b == 0x98 || b == 0x99;
}

/* A thread at site+1 with a quiesce signal: did it trap on the int3 (1),
 * or run the original 1-byte first instruction and stop after it (0)?
 * Told from what the thread's own state shows, never from the site's
 * bytes now: the handler may run long after the trap or the stop (a thread
 * not scheduled before quiesce() stopped waiting, a site unpatched since),
 * when byte 0 is the jump or the original again. After `push r`, [rsp]
 * holds r; after a trap at a function entry [rsp] is the return address.
 * Jump mode's other accepted 1-byte instructions may simply run again; of
 * an int3-mode site's, only an int3 there now can say. */
static int trapped_here(struct hook_site *s, greg_t *g)
{
	static const int reg[8] = { REG_RAX, REG_RCX, REG_RDX, REG_RBX, -1, REG_RBP, REG_RSI, REG_RDI };
	uint8_t b = s->orig[0];
	int jmp = s->mode == HOOK_MODE_JMP;

	if (jmp ? s->bmap[1] == 0xff : s->disp_len != 1)
		return 1;               /* no instruction ends at site+1 */
	if (b >= 0x50 && b <= 0x57 && b != 0x54)
		return *(uint64_t *)g[REG_RSP] != (uint64_t)g[reg[b - 0x50]];
	return jmp || __atomic_load_n((uint8_t *)s->addr, __ATOMIC_RELAXED) == 0xcc;
}

/* May thread `tid` be stopped at user ip in (addr, addr+5)? */
static int may_be_inside(int tid, uint64_t addr)
{
	char path[64], buf[256];
	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
	int fd = (int)rsys(SYS_open, (long)path, O_RDONLY | O_CLOEXEC, 0, 0, 0, 0);
	if (fd < 0)
		return 1;
	long n = rsys(SYS_read, fd, (long)buf, sizeof(buf) - 1, 0, 0, 0);
	rsys(SYS_close, fd, 0, 0, 0, 0, 0);
	if (n <= 0)
		return 1;
	buf[n] = 0;
	if (!strncmp(buf, "running", 7))
		return 1;
	/* "nr args... sp pc": blocked; pc is the user ip it returns to */
	char *last = strrchr(buf, ' ');
	if (!last)
		return 1;
	uint64_t pc = strtoull(last + 1, NULL, 16);
	return pc > addr && pc < addr + 5;
}

struct quiesce_walk {
	struct hook_site *s;
	int self;
};

static void quiesce_pick(int tid, void *arg)
{
	struct quiesce_walk *w = arg;

	if (tid == w->self || qreq.n >= QUIESCE_MAX || !may_be_inside(tid, w->s->addr))
		return;
	qreq.tids[qreq.n] = tid;
	qreq.acked[qreq.n] = 0;
	qreq.n++;
}

static void quiesce(struct hook_site *s)
{
	struct quiesce_walk w = { .s = s, .self = (int)rsys(SYS_gettid, 0, 0, 0, 0, 0, 0) };
	int pid = (int)rsys(SYS_getpid, 0, 0, 0, 0, 0, 0);

	qreq.n = 0;
	if (rt_tasks_walk(quiesce_pick, &w))
		return;
	if (!qreq.n)
		return;
	__atomic_store_n(&qreq.active, 1, __ATOMIC_RELEASE);
	/* a queued SIGTRAP merges with one already pending (a trap): resend
	 * until each thread answered, for at most ~200 ms */
	for (int round = 0; round < 200; round++) {
		int left = 0;
		for (int i = 0; i < qreq.n; i++) {
			if (__atomic_load_n(&qreq.acked[i], __ATOMIC_ACQUIRE))
				continue;
			if (round % 20 == 0) {
				siginfo_t si;
				memset(&si, 0, sizeof(si));
				si.si_signo = SIGTRAP;
				si.si_code = SI_QUEUE;
				si.si_pid = pid;
				si.si_uid = getuid();
				si.si_value.sival_ptr = &qreq;
				if (rsys(SYS_rt_tgsigqueueinfo, pid, qreq.tids[i], SIGTRAP, (long)&si, 0, 0) == -ESRCH) {
					qreq.acked[i] = 1;
					continue;
				}
			}
			left++;
		}
		if (!left)
			break;
		pause_short(round < 10 ? 100000 : 1000000);
	}
	__atomic_store_n(&qreq.active, 0, __ATOMIC_RELEASE);
}

static void poke_byte(uint8_t *p, uint8_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* text_poke_bp: int3 at byte 0, the tail, then byte 0. `patch` selects the
 * new bytes (jmp or int3) or the original ones. */
static int site_write(struct hook_site *s, int patch)
{
	uint8_t *p = (uint8_t *)s->addr, want[5];
	uint64_t lo = s->addr & ~4095ull, hi = (s->addr + s->patch_len + 4095) & ~4095ull;
	int direct = rsys(SYS_mprotect, (long)lo, (long)(hi - lo), s->prot | PROT_WRITE | PROT_EXEC, 0, 0, 0) == 0;

	if (!direct && memfd < 0)
		return -EPERM;
	if (patch && s->mode == HOOK_MODE_JMP) {
		want[0] = 0xe9;
		put32(want + 1, (int64_t)((uint64_t)s->tramp - (s->addr + 5)));
	} else if (patch) {
		want[0] = 0xcc;
	} else {
		memcpy(want, s->orig, 5);
	}
#define PUT(off, src, len)                                                                              \
	do {                                                                                            \
		if (direct) {                                                                           \
			if ((len) == 1)                                                                 \
				poke_byte(p + (off), *(src));                                           \
			else                                                                            \
				memcpy(p + (off), (src), (len));                                        \
		} else {                                                                                \
			rsys(SYS_pwrite64, memfd, (long)(src), (len), (long)(s->addr + (off)), 0, 0);   \
		}                                                                                       \
	} while (0)
	if (s->patch_len == 1) {
		PUT(0, want, 1);
		sync_cores();
	} else {
		static const uint8_t int3 = 0xcc;
		PUT(0, &int3, 1);
		sync_cores();
		if (patch)
			quiesce(s);
		PUT(1, want + 1, 4);
		sync_cores();
		PUT(0, want, 1);
		sync_cores();
	}
#undef PUT
	if (direct)
		rsys(SYS_mprotect, (long)lo, (long)(hi - lo), s->prot, 0, 0, 0);
	return 0;
}

/* ------------------------------------------------------------ the traps */

static void chain_trap(int sig, siginfo_t *si, void *uc)
{
	if ((prev_trap.sa_flags & SA_SIGINFO) && prev_trap.sa_sigaction) {
		prev_trap.sa_sigaction(sig, si, uc);
	} else if (!(prev_trap.sa_flags & SA_SIGINFO) && prev_trap.sa_handler != SIG_DFL &&
		   prev_trap.sa_handler != SIG_IGN) {
		prev_trap.sa_handler(sig);
	} else {
		/* not ours, no handler: die of it as without us */
		signal(SIGTRAP, SIG_DFL);
		if (si->si_code == SI_KERNEL)
			raise(SIGTRAP);
	}
}

static void int3_hit(struct hook_site *s, greg_t *g)
{
	struct hook_pt_regs r = {
		.r15 = (uint64_t)g[REG_R15], .r14 = (uint64_t)g[REG_R14], .r13 = (uint64_t)g[REG_R13],
		.r12 = (uint64_t)g[REG_R12], .bp = (uint64_t)g[REG_RBP], .bx = (uint64_t)g[REG_RBX],
		.r11 = (uint64_t)g[REG_R11], .r10 = (uint64_t)g[REG_R10], .r9 = (uint64_t)g[REG_R9],
		.r8 = (uint64_t)g[REG_R8], .ax = (uint64_t)g[REG_RAX], .cx = (uint64_t)g[REG_RCX],
		.dx = (uint64_t)g[REG_RDX], .si = (uint64_t)g[REG_RSI], .di = (uint64_t)g[REG_RDI],
		.orig_ax = ~0ull, .ip = s->ip, .cs = 0x33, .flags = (uint64_t)g[REG_EFL],
		.sp = (uint64_t)g[REG_RSP], .ss = 0x2b,
	};
	uint64_t ov = hook_dispatch_entry(s, &r);

	g[REG_R15] = (greg_t)r.r15; g[REG_R14] = (greg_t)r.r14; g[REG_R13] = (greg_t)r.r13;
	g[REG_R12] = (greg_t)r.r12; g[REG_RBP] = (greg_t)r.bp; g[REG_RBX] = (greg_t)r.bx;
	g[REG_R11] = (greg_t)r.r11; g[REG_R10] = (greg_t)r.r10; g[REG_R9] = (greg_t)r.r9;
	g[REG_R8] = (greg_t)r.r8; g[REG_RAX] = (greg_t)r.ax; g[REG_RCX] = (greg_t)r.cx;
	g[REG_RDX] = (greg_t)r.dx; g[REG_RSI] = (greg_t)r.si; g[REG_RDI] = (greg_t)r.di;
	if (ov) {
		g[REG_RIP] = (greg_t) * (uint64_t *)r.sp;
		g[REG_RSP] = (greg_t)(r.sp + 8);
	} else {
		g[REG_RIP] = (greg_t)s->reloc;
	}
}

static void on_trap(int sig, siginfo_t *si, void *ucv)
{
	ucontext_t *uc = ucv;
	greg_t *g = uc->uc_mcontext.gregs;
	int saved_errno = errno;

	if (si->si_code == SI_QUEUE && si->si_value.sival_ptr == &qreq) {
		/* A trap on one of our int3s while this signal was pending
		 * was merged into it (one SIGTRAP at a time): tell it apart
		 * from a thread stopped after the site's first instruction. */
		struct hook_site *s = site_find((uint64_t)g[REG_RIP] - 1);
		if (s && trapped_here(s, g)) {
			__atomic_add_fetch(&merged_traps, 1, __ATOMIC_RELAXED);
			__atomic_add_fetch(&int3_hits, 1, __ATOMIC_RELAXED);
			quiesce_fix(g, 0);
			if (s->mode == HOOK_MODE_JMP)
				g[REG_RIP] = (greg_t)s->tramp;
			else
				int3_hit(s, g);
		} else {
			quiesce_fix(g, 1);
		}
		goto out;
	}
	if (si->si_code == SI_KERNEL) {
		struct hook_site *s = site_find((uint64_t)g[REG_RIP] - 1);
		if (s) {
			__atomic_add_fetch(&int3_hits, 1, __ATOMIC_RELAXED);
			quiesce_fix(g, 0);      /* a queued request merged into this trap */
			if (s->mode == HOOK_MODE_JMP)
				g[REG_RIP] = (greg_t)s->tramp;  /* a site being (un)patched */
			else
				int3_hit(s, g);
			goto out;
		}
	}
	chain_trap(sig, si, ucv);
out:
	errno = saved_errno;
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

static int init_locked(void)
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

static int prot_of(const char *perms)
{
	return (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) | (perms[2] == 'x' ? PROT_EXEC : 0);
}

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
	m->prot = prot_of(v->perms);
	m->avail = v->hi - m->addr;
	m->next = v->hi;
	return m->avail >= 16;
}

/* Protection of the mapping holding addr and how many bytes of it follow. */
static int mapping_of(uint64_t addr, int *prot, size_t *avail)
{
	struct mapping_find m = { addr, 0, 0, 0 };
	char buf[4096];
	long fd = rsys(SYS_openat, AT_FDCWD, (long)"/proc/self/maps", O_RDONLY | O_CLOEXEC, 0, 0, 0);

	if (fd < 0)
		return (int)fd;
	int r = bpf_rt_maps_each(fd, buf, sizeof(buf), mapping_vma, &m);
	rsys(SYS_close, fd, 0, 0, 0, 0, 0);
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

static struct hook_site *all_sites;

/* A jump-mode site turns into an int3 one because a probe was asked for
 * inside the bytes it displaces (threads through its trampoline would never
 * run that address). No hit is lost: byte 0 goes int3 (threads still
 * reaching it go to the trampoline), the mode flips, then the jmp's tail
 * is put back. */
static int site_to_int3(struct hook_site *s)
{
	uint8_t *slot, len;
	int err = build_ool_slot(s, s->avail, &slot, &len);

	if (err)
		return err;
	uint64_t lo = s->addr & ~4095ull, hi = (s->addr + 5 + 4095) & ~4095ull;
	int direct = 0;
	if (s->patched) {
		direct = rsys(SYS_mprotect, (long)lo, (long)(hi - lo), s->prot | PROT_WRITE | PROT_EXEC, 0, 0, 0) == 0;
		if (!direct && memfd < 0)
			return -EPERM;
		static const uint8_t int3 = 0xcc;
		if (direct)
			__atomic_store_n((uint8_t *)s->addr, int3, __ATOMIC_RELEASE);
		else
			rsys(SYS_pwrite64, memfd, (long)&int3, 1, (long)s->addr, 0, 0);
		sync_cores();
	}
	s->reloc = slot;
	s->disp_len = len;
	s->patch_len = 1;
	__atomic_store_n(&s->mode, HOOK_MODE_INT3, __ATOMIC_RELEASE);
	if (s->patched) {
		if (direct)
			memcpy((uint8_t *)s->addr + 1, s->orig + 1, 4);
		else
			rsys(SYS_pwrite64, memfd, (long)(s->orig + 1), 4, (long)s->addr + 1, 0, 0);
		sync_cores();
		if (direct)
			rsys(SYS_mprotect, (long)lo, (long)(hi - lo), s->prot, 0, 0, 0);
	}
	return 0;
}

/* buf holds the code at [at, at + len): put back the original bytes where
 * sites patched it (their jmp or int3 is not the code). */
static void unpatch_copy(uint8_t *buf, uint64_t at, size_t len)
{
	for (struct hook_site *o = all_sites; o; o = o->anext)
		for (size_t i = 0; i < len; i++)
			if (at + i >= o->addr && at + i < o->addr + 5)
				buf[i] = o->orig[at + i - o->addr];
}

/* See hook_attach_in(): whether a branch elsewhere in [func, func + size)
 * may land in (addr, addr + len). Decoded from a copy with the original
 * bytes of the sites already patched. */
static int branch_into_copy(uint64_t addr, unsigned len, uint64_t func, size_t size, const uint8_t *copy)
{
	uint8_t *code;
	size_t avail;
	int prot, hit = 0;

	/* both ends mapped executable (mapping_of caps avail at an insn), unless
	 * the caller read them */
	if (!func || addr < func || addr >= func + size ||
	    (!copy && (mapping_of(func, &prot, &avail) || mapping_of(func + size - 1, &prot, &avail))) ||
	    !(code = malloc(size)))
		return 1;
	memcpy(code, copy ? copy : (const uint8_t *)func, size);
	unpatch_copy(code, func, size);
	for (size_t pc = 0; pc < size && !hit;) {
		struct x86_insn d;
		uint64_t target = 0;
		int n = hook_x86_decode(code + pc, size - pc, &d);
		if (n <= 0)
			break;          /* padding or data past the code: what came before counts */
		int br = branch_of(&d, code + pc, func + pc + (unsigned)n, &target);
		int indirect = !d.vex && d.map == 0 && d.op == 0xff && ((d.modrm >> 3) & 7) == 4;
		hit = indirect || br == BR_BAD ||
		      ((br == BR_JMP || br == BR_JCC || br == BR_CALL) && target > addr && target < addr + len);
		pc += (unsigned)n;
	}
	free(code);
	return hit;
}

static int branch_into(uint64_t addr, unsigned len, uint64_t func, size_t size)
{
	return branch_into_copy(addr, len, func, size, NULL);
}

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

/*
 * A function entry on endbr64 is patched after it, the jump at entry + 4
 * (and one on push %rbp at entry + 1, the site adding 8 to the sp handlers
 * see and popping it on an override): the instruction stays as the file has it, and the kernel's uprobe at the same
 * entry (another tool's, or a hybrid loader's) writes only byte 0, an int3
 * when it is registered and the file's byte when it goes, so it never lands
 * inside bpfshim's jump (at the entry, the kernel's restore of byte 0 in
 * front of the jump's displacement killed the process), and bpfshim's site
 * works under an int3 the kernel put there first (endbr64: its other bytes
 * say what it is). The kernel single-steps the instruction and resumes at
 * the jump: both tools see the hit. The handlers see the entry's registers
 * (ip the entry's, sp before the push). Only where the function's code is
 * known (a branch to the jump is not a call); NULL: patch at the entry.
 */
struct file_of_addr {
	uint64_t addr, off, dev, ino;
	char path[PATH_MAX];
};

static int addr_file(const struct bpf_rt_vma *v, void *arg)
{
	struct file_of_addr *f = arg;
	size_t n = strlen(v->path);

	if (f->addr < v->lo || f->addr >= v->hi)
		return 0;
	if (!v->ino || v->path[0] != '/' || n >= sizeof(f->path))
		return -ENOENT;
	f->off = f->addr - v->lo + v->off;
	f->dev = v->dev;
	f->ino = v->ino;
	memcpy(f->path, v->path, n + 1);
	return 1;
}

int hook_file_byte(uint64_t addr)
{
	struct file_of_addr f = { .addr = addr };
	char buf[4096];
	struct stat st;
	uint8_t b;
	long fd = rsys(SYS_openat, AT_FDCWD, (long)"/proc/self/maps", O_RDONLY | O_CLOEXEC, 0, 0, 0);

	if (fd < 0)
		return -1;
	int r = bpf_rt_maps_each(fd, buf, sizeof(buf), addr_file, &f);
	rsys(SYS_close, fd, 0, 0, 0, 0, 0);
	if (r != 1 || (fd = rsys(SYS_openat, AT_FDCWD, (long)f.path, O_RDONLY | O_CLOEXEC, 0, 0, 0)) < 0)
		return -1;
	/* the file the mapping has, not another one at that path now */
	r = !rsys(SYS_fstat, fd, (long)&st, 0, 0, 0, 0) && st.st_dev == f.dev && st.st_ino == f.ino &&
	    rsys(SYS_pread64, fd, (long)&b, 1, (long)f.off, 0, 0) == 1;
	rsys(SYS_close, fd, 0, 0, 0, 0, 0);
	return r ? b : -1;
}

static struct hook_site *site_after_first(uint64_t addr, uint64_t func, size_t size)
{
	static const uint8_t endbr64[4] = { 0xf3, 0x0f, 0x1e, 0xfa };
	const uint8_t *p = (const uint8_t *)addr;
	struct hook_site *s;
	size_t avail;
	unsigned skip;
	int prot, err;

	if (!func || func != addr || size == (size_t)-1 || size < 9 || getenv("BPFSHIM_HOOK_INT3") ||
	    mapping_of(addr, &prot, &avail) || avail < 9)
		return NULL;
	if ((p[0] == endbr64[0] || p[0] == 0xcc) && !memcmp(p + 1, endbr64 + 1, 3))
		skip = 4;
	else if (p[0] == 0x55 || (p[0] == 0xcc && hook_file_byte(addr) == 0x55))
		skip = 1;       /* push %rbp, or a kernel uprobe's int3 over it */
	else
		return NULL;
	s = site_find(addr + skip);
	if (s)
		return s->ip == addr ? s : NULL;        /* else a probe there was first */
	s = site_create(addr + skip, addr, func, size, &err);
	if (!s || s->mode != HOOK_MODE_JMP)
		return NULL;
	s->sp_adj = skip == 1 ? 8 : 0;          /* before hook_attach_in patches it */
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

/* A 2-byte `jmp .` parks threads reaching addr while the rest is written
 * (text_poke_bp's steps with a spin for the int3: no trap handler needs to
 * know the site); one aligned 8-byte compare-and-swap when the bytes fit
 * in one. */
int hook_text_replace(uint64_t addr, const uint8_t *old, const uint8_t *new, size_t n, int prot)
{
	uint64_t lo = addr & ~4095ull, hi = (addr + n + 4095) & ~4095ull;
	size_t avail = n;
	int err = 0;

	if (n < 2 || n > 8 || (addr & 63) == 63)
		return -EINVAL;
	pthread_mutex_lock(&lock);
	if ((err = init_locked()) || (prot < 0 && (err = mapping_of(addr, &prot, &avail))) ||
	    (err = avail < n ? -EFAULT : 0))
		goto out;
	if (memcmp((void *)addr, old, n)) {
		err = -EAGAIN;
		goto out;
	}
	if (rsys(SYS_mprotect, (long)lo, (long)(hi - lo), prot | PROT_WRITE | PROT_EXEC, 0, 0, 0)) {
		err = -EPERM;
		goto out;
	}
	if ((addr & 7) + n <= 8) {
		uint64_t *w = (uint64_t *)(addr & ~7ull), cur = __atomic_load_n(w, __ATOMIC_ACQUIRE), next = cur;
		memcpy((uint8_t *)&next + (addr & 7), new, n);
		if (!__atomic_compare_exchange_n(w, &cur, next, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			err = -EAGAIN;
	} else {
		uint16_t spin = 0xfeeb, head;
		memcpy(&head, new, 2);
		__atomic_store_n((uint16_t *)addr, spin, __ATOMIC_RELEASE);
		sync_cores();
		memcpy((uint8_t *)addr + 2, new + 2, n - 2);
		sync_cores();
		__atomic_store_n((uint16_t *)addr, head, __ATOMIC_RELEASE);
	}
	rsys(SYS_mprotect, (long)lo, (long)(hi - lo), prot, 0, 0, 0);
out:
	pthread_mutex_unlock(&lock);
	return err;
}

int hook_mode(const struct hook *h)
{
	return h ? h->site->mode : -EINVAL;
}
