/* SPDX-License-Identifier: MIT */
/*
 * Packet helpers, on the skb context PROG_TEST_RUN builds
 * (libbpf_shim/test_run.c).
 */
#include <errno.h>
#include <string.h>
#include "helpers.h"

u64 bpf_skb_load_bytes(u64 ctx, u64 offset, u64 to, u64 len, u64 a5)
{
	const struct shim_skb_ctx *c = (const struct shim_skb_ctx *)(uintptr_t)ctx;

	if (offset > 0xffff || !len || offset + len > c->len) {
		memset((void *)(uintptr_t)to, 0, len);
		return bpf_rt_err(EFAULT);
	}
	memcpy((void *)(uintptr_t)to, c->data + offset, len);
	return 0;
}
