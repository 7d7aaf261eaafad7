/* SPDX-License-Identifier: MIT */
/*
 * The code every trampoline runs: hook_entry_common (from a site's
 * trampoline: saves pt_regs, calls the entry dispatcher) and hook_ret_tramp
 * (where a hooked function returns: calls the return dispatcher); both in
 * dispatch.c.
 */
#include "internal.h"

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
