/* SPDX-License-Identifier: MIT */
/*
 * SIGTRAP: a hit on an int3-mode site (the handlers run from the signal
 * frame, then the out-of-line copy), a thread that ran into a site being
 * patched (to its trampoline), a quiesce request (patch.c) moving a thread
 * out of the displaced bytes, and anyone else's traps (chained).
 */
#include <errno.h>
#include <signal.h>
#include <ucontext.h>
#include "internal.h"

struct sigaction prev_trap;
uint64_t int3_hits, parked_moved, merged_traps;

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
int first_insn_ok(uint8_t b)
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
 * holds r; after a trap at a function entry [rsp] is the return address
 * (after an entry's kept push of k, k and then the return address).
 * Jump mode's other accepted 1-byte instructions may simply run again; of
 * an int3-mode site's, only an int3 there now can say. */
static int trapped_here(struct hook_site *s, greg_t *g)
{
	static const int reg[16] = { REG_RAX, REG_RCX, REG_RDX, REG_RBX, -1, REG_RBP, REG_RSI, REG_RDI,
				     REG_R8, REG_R9, REG_R10, REG_R11, REG_R12, REG_R13, REG_R14, REG_R15 };
	uint8_t b = s->orig[0];
	int jmp = s->mode == HOOK_MODE_JMP;
	const uint64_t *sp = (const uint64_t *)g[REG_RSP];

	if (jmp ? s->bmap[1] == 0xff : s->disp_len != 1)
		return 1;               /* no instruction ends at site+1 */
	if (b >= 0x50 && b <= 0x57 && b != 0x54 && s->ip != s->addr && s->kept_reg >= 0) {
		/* after the entry's own push of k (hook_kept_insn): a trap leaves
		 * [sp] = k; the push of r run leaves [sp] = r, [sp + 8] = k (a
		 * trap would have the return address there) */
		uint64_t k = (uint64_t)g[reg[s->kept_reg]], r = (uint64_t)g[reg[b - 0x50]];
		return sp[0] == k && !(sp[0] == r && sp[1] == k);
	}
	if (b >= 0x50 && b <= 0x57 && b != 0x54)
		return sp[0] != (uint64_t)g[reg[b - 0x50]];
	return jmp || __atomic_load_n((uint8_t *)s->addr, __ATOMIC_RELAXED) == 0xcc;
}
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

void on_trap(int sig, siginfo_t *si, void *ucv)
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
