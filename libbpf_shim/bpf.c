/* SPDX-License-Identifier: MIT */
/*
 * bpf(2) as the loader sees it. The order of checks is the kernel's
 * __sys_bpf: size > PAGE_SIZE or non-zero bytes past union bpf_attr -> E2BIG,
 * copy at most sizeof(union bpf_attr) (EFAULT), then the command: an unknown
 * one is EINVAL, a known one starts with CHECK_ATTR (a non-zero byte past its
 * last field is EINVAL), both from the command table (bpf_cmd_table.h).
 * Map element commands and PROG_TEST_RUN run here; every other command is
 * one request to the server, which reads and writes our memory through the
 * connection (see proto.h).
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "shim.h"
#include "helpers/helpers.h"   /* the runtime's fault guard */

/* bpf_check_uarg_tail_zero() */
static int check_uarg_tail_zero(uint64_t uattr, size_t expected, size_t actual)
{
	unsigned char buf[BPF_ATTR_PAGE_SIZE];
	int err;

	if (actual > BPF_ATTR_PAGE_SIZE)
		return -E2BIG;
	if (actual <= expected)
		return 0;
	err = shim_copy_from_user(buf, uattr + expected, actual - expected);
	if (err)
		return err;
	for (size_t i = 0; i < actual - expected; i++)
		if (buf[i])
			return -E2BIG;
	return 0;
}

/* CHECK_ATTR(cmd) of a known command on the attr copied from the caller's
 * `size` (<= BPF_ATTR_SIZE) bytes: past them it is zero already. */
static int check_attr(int cmd, const union shim_attr *attr, unsigned int size)
{
	static const unsigned char zeros[BPF_ATTR_SIZE];
	size_t end = bpf_cmd_table[cmd].attr_end;

	return end < size && memcmp(attr->raw + end, zeros, size - end) ? -EINVAL : 0;
}

static long forward(int cmd, uint64_t uattr, const union shim_attr *attr, unsigned int size)
{
	struct shim_reply rep;
	struct { uint64_t uattr; union shim_attr attr; } req;
	int err;

	struct shim_uwin w;

	req.uattr = uattr;
	memcpy(&req.attr, attr, size);
	shim_uwin_bpf(&w, cmd, uattr, &attr->a, size);
	shim_cur_uwin = &w;
	err = shim_request(SHIM_OP_BPF, cmd, size, &req, sizeof(req.uattr) + size, -1, &rep, NULL, 0);
	shim_cur_uwin = NULL;

	if (err)
		return shim_err(-err);
	if (rep.err)
		return shim_err(rep.err);
	return rep.ret;
}

/* The single-element map commands: the hot path. One fault guard covers
 * the attr, key and value copies (map ops never touch the caller's memory
 * and copies happen outside map locks): a fault ends the command here. */
static long map_elem_cmd(int cmd, uint64_t uattr, unsigned int size)
{
	union shim_attr attr;
	bpf_rt_jmp_buf jb;
	bpf_rt_jmp_buf *volatile prev = NULL;
	long r;

	if (size > BPF_ATTR_SIZE) {
		int err = check_uarg_tail_zero(uattr, BPF_ATTR_SIZE, size);
		if (err)
			return shim_err(-err);
	}
	unsigned int n = size > BPF_ATTR_SIZE ? BPF_ATTR_SIZE : size;   /* not changed past the setjmp */
	if (!uattr && n)
		return shim_err(EFAULT);
	/* libc's copy and zeroing: with the sizes' bound known the compiler
	 * emits rep movs/stos instead, ~25 ns of this path's ~60 */
	size_t tail = sizeof(attr) - n;
	__asm__("" : "+r"(n), "+r"(tail));
	memset(attr.raw + n, 0, tail);
	if (bpf_rt_setjmp(jb)) {
		bpf_rt_guard_exit(prev);
		shim_map_cmd_abort();
		return shim_err(EFAULT);
	}
	prev = bpf_rt_guard_enter(&jb);
	memcpy(&attr, (const void *)(uintptr_t)uattr, n);
	r = check_attr(cmd, &attr, n);
	if (!r)
		r = shim_map_cmd(cmd, &attr.a, uattr);
	bpf_rt_guard_exit(prev);
	return r < 0 ? shim_err(-r) : r;
}

long shim_sys_bpf(int cmd, uint64_t uattr, unsigned int size)
{
	if (shim_hybrid)
		return shim_hybrid_bpf(cmd, uattr, size);
	return shim_user_bpf(cmd, uattr, size);
}

/* bpfshim's answer, in either mode: the runtime's own requests (prog.c),
 * hybrid mode's user-space twins (hybrid.c). */
long shim_user_bpf(int cmd, uint64_t uattr, unsigned int size)
{
	union shim_attr attr;
	int err;

	switch (cmd) {
	case BPF_MAP_LOOKUP_ELEM:
	case BPF_MAP_UPDATE_ELEM:
	case BPF_MAP_DELETE_ELEM:
	case BPF_MAP_GET_NEXT_KEY:
	case BPF_MAP_LOOKUP_AND_DELETE_ELEM:
		return map_elem_cmd(cmd, uattr, size);
	}

	err = check_uarg_tail_zero(uattr, BPF_ATTR_SIZE, size);
	if (err)
		return shim_err(-err);
	if (size > BPF_ATTR_SIZE)
		size = BPF_ATTR_SIZE;
	memset(&attr, 0, sizeof(attr));
	if (shim_copy_from_user(&attr, uattr, size))
		return shim_err(EFAULT);
	/* an unknown command is EINVAL there too; the request starts a server
	 * that is not running (the CLI asks with one) */
	if ((unsigned int)cmd >= BPF_CMD_MAX)
		return forward(cmd, uattr, &attr, size);
	err = check_attr(cmd, &attr, size);
	if (err)
		return shim_err(-err);
	if (bpf_cmd_table[cmd].where != BPF_CMD_SHIM)
		return forward(cmd, uattr, &attr, size);    /* served there, or named there as not served */

	switch (cmd) {
	case BPF_PROG_TEST_RUN: {
		long r = shim_prog_test_run(&attr.a, uattr);
		return r < 0 ? shim_err(-r) : r;
	}
	default: {
		long r = shim_map_cmd(cmd, &attr.a, uattr);
		return r < 0 ? shim_err(-r) : r;
	}
	}
}
