/* SPDX-License-Identifier: MIT */
/*
 * The function-hooking engine: uprobes and uretprobes in user space, by
 * patching code.
 *
 * A probed address gets a 5-byte `jmp rel32` to a per-site trampoline near
 * it (within +-2 GiB) that saves the registers as the kernel's struct
 * pt_regs, calls the handlers, and continues through a relocated copy of the
 * displaced instructions. Where that is not possible (a function shorter
 * than 5 bytes, an instruction that cannot be relocated) the site gets an
 * int3 and a SIGTRAP handler does the same, resuming through an out-of-line
 * copy of the one displaced instruction.
 *
 * Return handlers swap the return address at [rsp] for a return trampoline
 * and keep the original on a per-thread shadow stack (as the kernel's
 * return_instance chain, with the same stack-pointer check for frames that
 * longjmp or exceptions skip).
 *
 * Patching and unpatching follow the kernel's text_poke_bp (int3 first,
 * then the tail, then the opcode), so they are safe while other threads run
 * the function. Before the tail is written, threads that may be stopped
 * between the displaced instructions (running, or blocked in a syscall that
 * returns there) get a queued SIGTRAP whose handler moves them to the same
 * point of the relocated copy. Trampolines are never freed: a thread may
 * still be inside.
 *
 * Handlers run with xmm0-7 saved (xmm0-15 where the address is not a known
 * function entry); the upper halves of ymm/zmm registers are not saved.
 * Known limits: a thread that blocks SIGTRAP and runs into an int3 (an
 * int3-mode site, or any site for the microseconds it is being patched) is
 * killed by the kernel; the patching signal can end an interruptible
 * syscall of a running thread early (EINTR, as any signal); a return
 * probe's frame found on another thread or stack aborts the process.
 */
#ifndef BPFSHIM_HOOK_H
#define BPFSHIM_HOOK_H

#include <stddef.h>
#include <stdint.h>
#include "rt.h"          /* struct hook_pt_regs */

/* struct hook_pt_regs: the kernel's x86-64 struct pt_regs (rt.h) */

typedef void (*hook_fn)(struct hook_pt_regs *regs, void *data);
struct hook;

/* Patch `addr` (a function entry, or an instruction boundary inside a
 * function) so that every thread executing it first calls entry(regs, data)
 * and, if ret != NULL, ret(regs, data) when that call returns (regs->ax =
 * return value, ip = the return address, sp = rsp after the return). Hooks
 * on one address chain in attach order. Either handler may be NULL.
 * Returns 0 or -errno: -EINVAL when the code at addr cannot be decoded at
 * all (anything else it cannot relocate falls back to int3), -ENOMEM,
 * -EFAULT when addr is not mapped executable. Must not be called from a
 * handler. */
int hook_attach(void *addr, hook_fn entry, hook_fn ret, void *data, struct hook **out);

/* hook_attach, told the code of the function addr lies in: [func, func +
 * func_size). An address past the function's first instruction is patched
 * with the 5-byte jmp only when a scan of the function finds no branch into
 * the bytes the jmp covers and no indirect jump (a jump table may land
 * there); otherwise, and when func is NULL for such an address (nothing
 * known), with int3, as the kernel does at any instruction (USDT sites,
 * fn+off). hook_attach itself assumes the jmp is safe where its own bytes
 * allow it (callers that probe function entries). */
int hook_attach_in(void *addr, const void *func, size_t func_size, hook_fn entry, hook_fn ret, void *data,
		   struct hook **out);

/* Remove a hook. When it returns, its handlers are not running and will not
 * run again. The original bytes come back when the last hook of the address
 * goes. Safe while other threads run the function; must not be called from
 * a handler. */
int hook_detach(struct hook *h);

/* From an entry handler: skip the function and return rc to its caller
 * (as the kernel's bpf_override_return). 0, or -EINVAL outside an entry
 * handler. */
int hook_override(struct hook_pt_regs *regs, uint64_t rc);

/* For user stack walks, as the kernel's perf_callchain_user() from a uprobe:
 * hook_at_func_entry() is 1 while entry handlers of a site whose original
 * instruction is `push %rbp` run on this thread (the return address is at
 * [sp], in no frame yet: is_uprobe_at_func_entry(); 6.18 measured: not for
 * a site on `endbr64`);
 * hook_ret_addrs() gives the return trampoline's address and the return
 * addresses it replaced in frames at or above sp, innermost first
 * (fixup_uretprobe_trampoline_entries()). */
int hook_at_func_entry(void);
size_t hook_ret_addrs(uint64_t sp, uint64_t *tramp, uint64_t *out, size_t max);

/* For other code rewriters (syscall sites, agent/syscall/site.c), with
 * the hook engine's lock, code pools and rules:
 * hook_branch_into: whether a branch of [func, func + size) may land in
 * (addr, addr + len) (see hook_attach_in), 1 when it cannot tell; decoded
 * from `copy` (size bytes, the caller's own patches undone) if not NULL;
 * hook_code_near: n bytes of executable memory within rel32 reach of addr
 * (never freed), filled by hook_code_put; hook_emit_jmp: a jmp at `at` to
 * target (5 bytes, or 14 when out of reach), its length;
 * hook_text_replace: n (2..8) bytes of code at addr from `old` to `new`
 * while other threads may run it, for bytes where no thread can be stopped
 * past addr (inside one instruction); `prot` the mapping's (the caller read
 * /proc/self/maps), or -1. -EAGAIN when the code is not `old`.
 * (The callers that give a copy or prot spare a read of /proc/self/maps: a
 * transient fd while the application runs.) */
int hook_branch_into(uint64_t addr, unsigned len, uint64_t func, size_t size, const uint8_t *copy);
uint8_t *hook_code_near(uint64_t addr, size_t n);
int hook_code_put(uint8_t *dst, const uint8_t *src, size_t n);
int hook_emit_jmp(uint8_t *b, uint64_t at, uint64_t target);
int hook_text_replace(uint64_t addr, const uint8_t *old, const uint8_t *new, size_t n, int prot);

/* The first instruction at addr a site keeps, its jump after it (entry:
 * addr is a function's entry): its length or 0, its byte 0 and what it
 * takes from sp (hook.c site_after_first). */
int hook_kept_insn(uint64_t addr, int entry, uint8_t *op, uint64_t *sp_adj);
/* The byte at addr as the file mapped there has it (under a kernel
 * uprobe's int3, the instruction it stands for), or -1. */
int hook_file_byte(uint64_t addr);
/* At start, before the application runs: the files a patch reads
 * (/proc/self/mem, /proc/self/maps) opened now, kept at high numbers. */
void hook_premap(void);

/* How a hook was applied (tests, status). */
enum hook_mode { HOOK_MODE_JMP = 1, HOOK_MODE_INT3 = 2 };
int hook_mode(const struct hook *h);
/* Whether h's site keeps the instruction at the probed address and jumps
 * after it (hook_kept_insn): the kernel's byte 0 is left alone. */
int hook_kept(const struct hook *h);

/* Counters since the process started. */
struct hook_stats {
	uint64_t ret_dropped;   /* uretprobe frames skipped: a thread's shadow stack was full */
	uint64_t int3_hits;     /* SIGTRAP round trips (int3 sites, and sites being patched) */
	uint64_t parked_moved;  /* threads moved out of bytes being patched */
	uint64_t merged_traps;  /* traps that arrived merged into a patching signal */
};
void hook_get_stats(struct hook_stats *st);

/* ---- the instruction decoder, for the relocator and its tests ---- */
struct x86_insn {
	uint8_t len;
	uint8_t opc_off;        /* where the opcode byte is (after prefixes/REX/VEX) */
	uint8_t map;            /* 0: one-byte, 1: 0F, 2: 0F38, 3: 0F3A, 8-10: AMD XOP */
	uint8_t op;
	uint8_t has_modrm, modrm;
	uint8_t disp_off, disp_size;
	uint8_t imm_off, imm_size;
	uint8_t rip_rel;        /* ModRM memory operand relative to the next ip */
	uint8_t rex, opsize16, vex;
	uint8_t legacy_prefixes;
};
/* Decodes the instruction at p (at most max bytes readable). Returns its
 * length, or -EINVAL if it is not a valid x86-64 instruction. */
int hook_x86_decode(const uint8_t *p, size_t max, struct x86_insn *out);

#endif
