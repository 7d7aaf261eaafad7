/* SPDX-License-Identifier: MIT */
/*
 * jit.c — loading AOT blobs (syscall_server/aot) into executable memory.
 *
 * A blob is position-independent x86-64 code with its entry at offset 0
 * (bpf_jit_fn), followed by its read-only data and import slots, and ends
 * with a trailer saying where the import slots are (syscall_server/aot/link.py):
 *
 *     uint32_t slot_off[nr_imports];   0xffffffff: slot not used
 *     zero padding to 8 bytes
 *     struct bpf_jit_trailer
 *
 * The only fix-up at load time is filling those slots with the addresses of
 * the few runtime functions the code calls (bpf_jit_imports, in the order of
 * IMPORTS in syscall_server/aot/irgen.py) and the %fs offset of the run
 * budget's counter; helpers and maps are reached through the bpf_jit_env
 * argument.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bpf_rt.h"

#define BPF_JIT_TRAILER_MAGIC 0x54494a42u   /* "BJIT" */
#define BPF_JIT_TRAILER_VERSION 1u

#define BPF_JIT_NO_SLOT 0xffffffffu

struct bpf_jit_trailer {
	uint32_t nr_imports;
	uint32_t reserved;
	uint32_t magic;
	uint32_t version;
};

/* Called by the blob right after bpf_tail_call: non-zero means the helper
 * recorded a target and the program must return at once. */
BPFSHIM_API int bpf_rt_tail_call_pending(void)
{
	const struct bpf_run_ctx *rc = bpf_cur_run_ctx;

	return rc && rc->tail_call_next;
}

/* The offset of bpf_rt_backedges_left from the thread pointer: the same in
 * every thread (initial-exec TLS), so code reads it as %fs:offset. */
static uintptr_t backedges_tpoff(void)
{
	uintptr_t tp;

	__asm__("mov %%fs:0, %0" : "=r"(tp));
	return (uintptr_t)&bpf_rt_backedges_left - tp;
}

enum { IMPORT_BACKEDGES_TPOFF = 2 };
static void *const bpf_jit_imports[] = {
	(void *)bpf_rt_tail_call_pending,
	(void *)bpf_rt_backedge,
	NULL,   /* IMPORT_BACKEDGES_TPOFF, filled at load */
	(void *)bpf_rt_ld_abs,
};

static size_t page_round(size_t len)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	return (len + pg - 1) / pg * pg;
}

/* Copies the blob into fresh executable memory; returns its entry, or NULL
 * with errno set (EINVAL for a malformed blob). */
BPFSHIM_API void *bpf_jit_load(const void *blob, size_t len)
{
	struct bpf_jit_trailer tr;
	uint32_t slot_off[BPFSHIM_ARRAY_SIZE(bpf_jit_imports)];
	size_t map_len, table_len, code_len;
	void *mem;

	if (!blob || len < sizeof(tr) || len % 8) {
		errno = EINVAL;
		return NULL;
	}
	memcpy(&tr, (const char *)blob + len - sizeof(tr), sizeof(tr));
	/* A blob from a newer compiler may import more than this agent knows: refuse it. */
	if (tr.magic != BPF_JIT_TRAILER_MAGIC || tr.version != BPF_JIT_TRAILER_VERSION ||
	    tr.nr_imports > BPFSHIM_ARRAY_SIZE(bpf_jit_imports)) {
		errno = EINVAL;
		return NULL;
	}
	table_len = BPFSHIM_ROUND_UP(4 * tr.nr_imports, 8);
	if (len < sizeof(tr) + table_len) {
		errno = EINVAL;
		return NULL;
	}
	code_len = len - sizeof(tr) - table_len;
	memcpy(slot_off, (const char *)blob + code_len, 4 * tr.nr_imports);
	for (uint32_t i = 0; i < tr.nr_imports; i++)
		if (slot_off[i] != BPF_JIT_NO_SLOT && (slot_off[i] % 8 || slot_off[i] + 8ull > code_len)) {
			errno = EINVAL;
			return NULL;
		}
	map_len = page_round(len);
	mem = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return NULL;
	memcpy(mem, blob, len);
	for (uint32_t i = 0; i < tr.nr_imports; i++)
		if (slot_off[i] != BPF_JIT_NO_SLOT) {
			void *v = i == IMPORT_BACKEDGES_TPOFF ? (void *)backedges_tpoff() : bpf_jit_imports[i];
			memcpy((char *)mem + slot_off[i], &v, sizeof(void *));
		}
	if (mprotect(mem, map_len, PROT_READ | PROT_EXEC)) {
		int err = errno;

		munmap(mem, map_len);
		errno = err;
		return NULL;
	}
	return mem;
}

BPFSHIM_API void bpf_jit_free(void *p, size_t len)
{
	if (p)
		munmap(p, page_round(len));
}
