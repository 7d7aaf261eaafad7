/* Probe targets with exact prologues. */
	.intel_syntax noprefix
	.text
	.globl a_push, a_endbr, a_riplea, a_ripmov, a_jcc, a_jmp32, a_jmp8, a_ret1, a_short, a_call, a_sub, a_xorcmp, a_helper, a_gvar, a_pushpair, a_pushpair_call

	.p2align 4
a_push:                         /* push rbp; mov rbp,rsp (1 + 3) */
	push rbp
	mov rbp, rsp
	lea rax, [rdi + rsi]
	pop rbp
	ret

	.p2align 4
a_endbr:                        /* endbr64 (4) + lea (4) */
	endbr64
	lea rax, [rdi + rsi * 2]
	ret

	.p2align 4
a_riplea:                       /* lea rax,[rip+x] first (7 bytes) */
	lea rax, [rip + a_gvar]
	mov rax, [rax]
	add rax, rdi
	ret

	.p2align 4
a_ripmov:                       /* mov rax,[rip+x] first */
	mov rax, [rip + a_gvar]
	add rax, rdi
	ret

	.p2align 4
a_jcc:                          /* test (3) + je rel8 (2): jcc inside the displaced bytes */
	test rdi, rdi
	je 1f
	lea rax, [rdi + 1]
	ret
1:	mov rax, -1
	ret

	.p2align 4
a_jmp32:                        /* jmp rel32 first (5 bytes): relocated */
	.byte 0xe9
	.long 2f - 1f
1:	.fill 16, 1, 0xcc
2:	lea rax, [rdi + rdi * 2]
	ret

	.p2align 4
a_jmp8:                         /* jmp rel8 (2 bytes), then other code: int3 */
	jmp 1f
	.byte 0xcc, 0xcc, 0xcc, 0xcc
1:	lea rax, [rdi + rdi * 4]
	ret

	.p2align 4
a_ret1:                         /* a 1-byte function: int3 */
	ret

	.p2align 4
a_short:                        /* 3 bytes: int3 */
	mov rax, rdi
	ret
	.byte 0xcc, 0xcc

	.p2align 4
a_call:                         /* call rel32 first */
	call a_helper
	add rax, rdi
	ret

	.p2align 4
a_helper:
	mov eax, 100
	ret

	.p2align 4
a_sub:                          /* sub rsp,24 (4) + mov (4) */
	sub rsp, 24
	mov [rsp], rdi
	mov rax, [rsp]
	add rax, rsi
	add rsp, 24
	ret

	.p2align 4
a_xorcmp:                       /* xor (2) + cmp (3) + setl */
	xor eax, eax
	cmp rdi, rsi
	setl al
	ret

	.p2align 4
a_pushpair:                     /* push r12 (2, kept: the jump after it) + push rbp (1) + push rbx + lea: 2 * rdi */
	push r12
	push rbp
	push rbx
	lea rax, [rdi + rdi]
	pop rbx
	pop rbp
	pop r12
	ret
a_pushpair_end:

	.p2align 4
a_pushpair_call:                /* a_pushpair(rdi) with r12 == rbp: its stack after push rbp is the one
	                         * after push r12 but for the return address (trapped_here) */
	push r12
	push rbp
	mov r12, rdi
	mov rbp, rdi
	call a_pushpair
	pop rbp
	pop r12
	ret

	.globl a_pushpair_size
	.section .rodata
	.p2align 3
a_pushpair_size: .quad a_pushpair_end - a_pushpair

	.data
	.p2align 3
a_gvar:	.quad 1000
	.section .note.GNU-stack,"",@progbits
