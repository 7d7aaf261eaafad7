/* SPDX-License-Identifier: MIT */
/*
 * Between the parts of the function-hooking engine (hook.h has its model):
 *   hook.c      the sites (one per probed address), attach and detach, the
 *               calls for other code rewriters; the lock and start-up;
 *   stubs.c     hook_entry_common and hook_ret_tramp, the code every
 *               trampoline runs;
 *   dispatch.c  the entry and return dispatchers the stubs call, and the
 *               per-thread shadow stack of swapped return addresses;
 *   rcu.c       the readers' lock of a site's hook list;
 *   pool.c      executable memory within rel32 reach of a site;
 *   relocate.c  a site's trampoline or out-of-line copy of the displaced
 *               instructions, and the branch scan of a function;
 *   patch.c     writing the code while other threads run it (text_poke_bp)
 *               and the quiesce of threads inside the displaced bytes;
 *   trap.c      the SIGTRAP handler: int3 sites, sites being patched,
 *               quiesce requests.
 * hook.c calls down into the others; they use of hook.c only the lock,
 * /proc/self/mem, the site table (site_find, all_sites), mapping_of and
 * init_locked.
 */
#ifndef BPFSHIM_HOOK_INTERNAL_H
#define BPFSHIM_HOOK_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <sys/syscall.h>
#include "hook.h"
#include "rawsys.h"

#define HIDDEN __attribute__((visibility("hidden")))

/* Shared only inside the library (direct references, no GOT), as the
 * statics they were. */
#pragma GCC visibility push(hidden)

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
	uint8_t kept_op;                /* ip != addr: byte 0 of the instruction kept at ip */
	int8_t kept_reg;                /* ... the register it pushes (0-15, x86 order), or -1 */
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

/* Raw system calls (rawsys.h): used while a site is half patched, when
 * calling into libc could hit the very code being patched. */
#define rsys bpf_rt_sys

static inline void put32(uint8_t *p, int64_t v)
{
	int32_t x = (int32_t)v;
	memcpy(p, &x, 4);
}

/* ---- hook.c ---- */

extern pthread_mutex_t lock;            /* sites, lists, pools, patching */
extern struct bpf_rt_kept mem;          /* /proc/self/mem, when mprotect is refused */
#define memfd bpf_rt_kept_fd(&mem)
extern struct hook_site *all_sites;
struct hook_site *site_find(uint64_t addr);
int init_locked(void);
int mapping_of(uint64_t addr, int *prot, size_t *avail);
/* The kept /proc/self/maps (mapping_of, pool_new; under the lock): -errno if none. */
long self_maps_fd(void);

/* ---- stubs.c ---- */

void hook_entry_common(void) HIDDEN;
void hook_ret_tramp(void) HIDDEN;

/* ---- rcu.c: the read side, inlined into the dispatchers ---- */

/* A thread's reader slot (rcu.c has the scheme). */
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
extern struct rcu_chunk rcu_first;
extern __thread struct rcu_slot *tls_slot;
extern int rcu_fast;                    /* membarrier available */
extern pthread_key_t rcu_key;
void rcu_release(void *p);
struct rcu_slot *rcu_register(void);
void rcu_sync(void);

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

static inline void pause_short(long ns)
{
	struct timespec ts = { 0, ns };

	rsys(SYS_nanosleep, (long)&ts, 0, 0, 0, 0, 0);
}

/* ---- dispatch.c ---- */

uint64_t hook_dispatch_entry(struct hook_site *s, struct hook_pt_regs *regs) HIDDEN __attribute__((used));
uint64_t hook_dispatch_return(struct hook_pt_regs *regs) HIDDEN __attribute__((used));
extern pthread_key_t shadow_key;
extern uint64_t ret_dropped;
void shadow_free(void *p);

/* ---- pool.c ---- */

uint8_t *near_alloc(uint64_t addr, size_t n);
int code_write(uint8_t *dst, const uint8_t *src, size_t n);

/* ---- relocate.c ---- */

int emit_jmp(uint8_t *b, uint64_t at, uint64_t target);
int build_tramp(struct hook_site *s, size_t avail);
int build_ool_slot(struct hook_site *s, size_t avail, uint8_t **slot, uint8_t *len);
int build_ool(struct hook_site *s, size_t avail);
void unpatch_copy(uint8_t *buf, uint64_t at, size_t len);
int branch_into_copy(uint64_t addr, unsigned len, uint64_t func, size_t size, const uint8_t *copy);
int branch_into(uint64_t addr, unsigned len, uint64_t func, size_t size);

/* ---- patch.c ---- */

/* A quiesce in progress (patch.c), answered from the trap handler. */
#define QUIESCE_MAX 4096
struct quiesce_req {
	int active;
	int n;
	int tids[QUIESCE_MAX];
	int acked[QUIESCE_MAX];
};
extern struct quiesce_req qreq;
extern int have_sync_core;
void sync_cores(void);
int site_write(struct hook_site *s, int patch);
int site_to_int3(struct hook_site *s);

/* ---- trap.c ---- */

extern struct sigaction prev_trap;
extern uint64_t int3_hits, parked_moved, merged_traps;
void on_trap(int sig, siginfo_t *si, void *ucv);
int first_insn_ok(uint8_t b);

#pragma GCC visibility pop

#endif
