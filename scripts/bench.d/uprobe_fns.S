/* Probe targets for scripts/bench.d/uprobe, each twice: the probed copy
 * and an identical unprobed one (the loop cost measured in the same run). */
	.intel_syntax noprefix
	.text
	.globl f_push, r_push, f_endbr, r_endbr
	.type f_push, @function
	.type r_push, @function
	.type f_endbr, @function
	.type r_endbr, @function
	.p2align 4
f_push:                 /* nop/push prologue: the kernel emulates it */
	push rbp
	mov rbp, rsp
	lea rax, [rdi + rsi]
	pop rbp
	ret
	.p2align 4
r_push:
	push rbp
	mov rbp, rsp
	lea rax, [rdi + rsi]
	pop rbp
	ret
	.p2align 4
f_endbr:                /* endbr64: the kernel single-steps it */
	endbr64
	lea rax, [rdi + rsi * 2]
	ret
	.p2align 4
r_endbr:
	endbr64
	lea rax, [rdi + rsi * 2]
	ret
	/* sized as a compiler sizes them: bpfshim's jump goes after the
	 * entry's endbr64 or push (agent/hook/hook.c site_after_first) */
	.size f_push, r_push - f_push
	.size r_push, f_endbr - r_push
	.size f_endbr, r_endbr - f_endbr
	.size r_endbr, r_end - r_endbr
r_end:
	.section .note.GNU-stack,"",@progbits
