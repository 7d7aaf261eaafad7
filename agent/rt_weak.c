/* SPDX-License-Identifier: MIT */
/*
 * Weak fallbacks for the runtime's entry points, so that each native library
 * links and loads whatever subset of the runtime it is built with; the real
 * definitions (prog_run.c, helpers/, jit.c) win at link time.
 */
#include <errno.h>
#include <stddef.h>
#include "bpf_rt.h"

__attribute__((weak)) __thread struct bpf_run_ctx *bpf_cur_run_ctx;
__attribute__((weak)) bpf_helper_fn bpf_helpers[BPF_RT_HELPER_MAX];

__attribute__((weak)) int bpf_prog_run(const struct bpf_prog_rt *prog, void *ctx, uint64_t *ret)
{
	return -ENOSYS;
}

__attribute__((weak)) void *bpf_jit_load(const void *blob, size_t len)
{
	return NULL;
}

__attribute__((weak)) int bpf_prog_run_probe(const struct bpf_prog_rt *prog, void *ctx, uint64_t cookie,
					     uint64_t func_ip, uint64_t *ret)
{
	return bpf_prog_run(prog, ctx, ret);
}

struct hook;
__attribute__((weak)) int hook_attach(void *addr, void *entry, void *ret, void *data, struct hook **out)
{
	return -ENOSYS;
}

__attribute__((weak)) int hook_detach(struct hook *h)
{
	return -ENOSYS;
}
