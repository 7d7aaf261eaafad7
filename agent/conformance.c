/* SPDX-License-Identifier: MIT */
/*
 * Running one program with the bpf_conformance conventions (used by
 * `bpfshim conformance-plugin` and compat_tests/test_conformance.py):
 * r1 = memory or 0, r2 = its length, r10 = a 512-byte stack, and test
 * helper 5 "unwind": returns its argument, and ends the program with r0 = 0
 * when that argument is 0.
 */
#include <setjmp.h>
#include <string.h>
#include "bpf_rt.h"

uint64_t bpf_interp_run2(const struct bpf_prog_rt *prog, uint64_t r1, uint64_t r2);

static __thread jmp_buf unwind_jmp;

static uint64_t unwind(uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5)
{
	if (!a1)
		longjmp(unwind_jmp, 1);
	return a1;
}

/* Returns 0 with *r0 set, or -1 if the program faulted. */
BPFSHIM_API int bpf_conformance_run(const void *insns, uint32_t insn_cnt, void *mem, uint32_t mem_len,
				    void *jit_entry, uint64_t *r0)
{
	static bpf_helper_fn table[BPF_RT_HELPER_MAX];
	struct bpf_prog_rt prog;
	struct bpf_run_ctx rc, *saved = bpf_cur_run_ctx;
	volatile uint64_t out = 0;

	table[5] = unwind;
	memset(&prog, 0, sizeof(prog));
	prog.insns = insns;
	prog.insn_cnt = insn_cnt;
	prog.env.helpers = table;
	prog.env.prog = &prog;
	prog.jited = (bpf_jit_fn)jit_entry;
	memset(&rc, 0, sizeof(rc));
	rc.prog = &prog;
	bpf_cur_run_ctx = &rc;
	if (setjmp(unwind_jmp)) {
		bpf_cur_run_ctx = saved;
		*r0 = 0;
		return 0;
	}
	if (prog.jited)
		out = prog.jited((uint64_t)(uintptr_t)mem, &prog.env);
	else
		out = bpf_interp_run2(&prog, (uint64_t)(uintptr_t)mem, mem_len);
	bpf_cur_run_ctx = saved;
	*r0 = out;
	return 0;
}
