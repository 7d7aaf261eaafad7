/* SPDX-License-Identifier: MIT */
/*
 * libbpfshim_core.so (the server's, through cffi) starts here: the steps of
 * start.h its build has (no agent: Makefile CORE_SRC), in the order of
 * libbpf_shim/start/preload.c.
 */
#include "start.h"

__attribute__((constructor(101))) static void bpfshim_core_start(void)
{
	block_key_init();
	altstack_key_init();
	task_helpers_init();
}
