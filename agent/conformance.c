/* SPDX-License-Identifier: MIT */
/*
 * Running one program with the bpf_conformance conventions (used by
 * `bpfshim conformance-plugin` and compat_tests/test_conformance.py):
 * r1 = the memory or 0, r2 = its length, r10 = a 512-byte stack, and test
 * helper 5 "unwind": returns its argument, and ends the program at once with
 * r0 = 0 when that argument is 0. The helper table is the global one with
 * slot 5 replaced, for this run only.
 *
 * Engines: the interpreter (jit_entry NULL) or AOT code loaded by
 * bpf_jit_load (AOT code has no r2 argument: the caller compiles the program
 * with a `mov r2, len` in front).
 */
#include <errno.h>
#include <string.h>
#include "bpf_rt.h"
#include "helpers/helpers.h"

static uint64_t unwind(uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5)
{
	if (!a1)
		bpf_rt_exit_run(0);
	return a1;
}

/* 0 with *r0 set, -EFAULT if the program faulted, -EINVAL for no program,
 * -ENOMEM. */
BPFSHIM_API int bpf_conformance_run(const void *insns, uint32_t insn_cnt, void *mem, uint32_t mem_len,
				    void *jit_entry, uint64_t *r0)
{
	bpf_helper_fn table[BPF_RT_HELPER_MAX];
	struct bpf_prog_rt prog;
	int err;

	if (!insns || !insn_cnt || !r0)
		return -EINVAL;
	memcpy(table, bpf_helpers, sizeof(table));
	table[5] = unwind;
	memset(&prog, 0, sizeof(prog));
	prog.insns = insns;
	prog.insn_cnt = insn_cnt;
	prog.env.helpers = table;
	prog.env.prog = &prog;
	prog.jited = (bpf_jit_fn)jit_entry;
	err = prog.jited ? 0 : bpf_interp_prepare(&prog);
	if (err)
		return err;
	err = bpf_rt_run_guarded(&prog, mem_len ? mem : NULL, mem_len, 0, 0, r0);
	bpf_interp_release(&prog);
	return err;
}
