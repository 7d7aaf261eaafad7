/* SPDX-License-Identifier: MIT */
/*
 * The caller's memory the server may touch during one request: the ranges
 * the command's attr names, as the kernel's handler would copy_from_user /
 * copy_to_user them (the attr itself, key/value/log/info buffers of the
 * sizes given, the strings it points to). serve_mem() (conn.c) answers a
 * READ/WRITE/READSTR of the server only inside these ranges, so a server
 * that is not what it should be still reads and writes nothing else.
 *
 * The ranges are computed here from the shim's own copy of the attr (the
 * one the server receives); nested pointers (bpf_prog_info's arrays) are read
 * from the caller's memory once, here: if the caller changes them
 * afterwards, the server's access falls outside and gets EFAULT.
 */
#include <errno.h>
#include <string.h>
#include <linux/perf_event.h>
#include "shim.h"
#include "helpers/helpers.h"   /* the runtime's fault guard */

__thread const struct shim_uwin *shim_cur_uwin;

#define PAGE_SIZE_ 4096u
#define PATH_MAX_ 4096u
#define BPF_TAG_SIZE_ 8u
#define MAX_INSNS_ (1u << 20)       /* BPF_COMPLEXITY_LIMIT_INSNS */
#define PERF_ATTR_SIZE_VER0_ 64u

static void add(struct shim_uwin *w, uint64_t addr, uint64_t len, uint32_t access)
{
	if (!addr || !len || w->n >= SHIM_UWIN_MAX)
		return;
	if (addr + len < addr)       /* wraps: nothing valid there */
		return;
	w->r[w->n++] = (struct shim_uwin_range){ addr, len, access };
}

static uint64_t mul(uint64_t a, uint64_t b)
{
	return b && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

/* fd_array: the kernel reads fd_array[0..fd_array_cnt) and the entries the
 * instructions index (ld_imm64 BPF_PSEUDO_MAP_IDX[_VALUE], kfunc calls'
 * off). Scanned from the caller's instructions under one fault guard. */
static uint64_t fd_array_len(const union bpf_attr *a)
{
	volatile uint64_t n = a->fd_array_cnt;   /* what the fault path returns, as far as it got */
	uint32_t cnt = a->insn_cnt < MAX_INSNS_ ? a->insn_cnt : MAX_INSNS_;
	const struct bpf_insn *in = (const void *)(uintptr_t)a->insns;
	bpf_rt_jmp_buf jb;
	bpf_rt_jmp_buf *volatile prev = NULL;

	if (!a->insns)
		return n * 4;
	if (bpf_rt_setjmp(jb)) {
		bpf_rt_guard_exit(prev);
		return n * 4;          /* the server's read of insns faults too */
	}
	prev = bpf_rt_guard_enter(&jb);
	for (uint32_t i = 0; i < cnt; i++) {
		uint8_t code = in[i].code, src = in[i].src_reg;
		uint64_t idx;

		if (code == (BPF_LD | BPF_IMM | BPF_DW) &&
		    (src == BPF_PSEUDO_MAP_IDX || src == BPF_PSEUDO_MAP_IDX_VALUE))
			idx = (uint32_t)in[i].imm;
		else if (code == (BPF_JMP | BPF_CALL) && src == BPF_PSEUDO_KFUNC_CALL && in[i].off > 0)
			idx = (uint64_t)in[i].off;
		else
			continue;
		if (idx + 1 > n)
			n = idx + 1;
	}
	bpf_rt_guard_exit(prev);
	return n * 4;
}

static void prog_load(struct shim_uwin *w, const union bpf_attr *a)
{
	add(w, a->insns, mul(a->insn_cnt, sizeof(struct bpf_insn)), SHIM_UWIN_R);
	add(w, a->license, 128, SHIM_UWIN_STR);
	add(w, a->log_buf, a->log_size, SHIM_UWIN_W);
	add(w, a->func_info, mul(a->func_info_cnt, a->func_info_rec_size), SHIM_UWIN_R);
	add(w, a->line_info, mul(a->line_info_cnt, a->line_info_rec_size), SHIM_UWIN_R);
	add(w, a->core_relos, mul(a->core_relo_cnt, a->core_relo_rec_size), SHIM_UWIN_R);
	add(w, a->fd_array, fd_array_len(a), SHIM_UWIN_R);
}

/* bpf_prog_get_info_by_fd(): each array the caller points to, of the length
 * the caller gives (count x its record size, or bytes). */
static void prog_info(struct shim_uwin *w, const struct bpf_prog_info *i)
{
	add(w, i->jited_prog_insns, i->jited_prog_len, SHIM_UWIN_W);
	add(w, i->xlated_prog_insns, i->xlated_prog_len, SHIM_UWIN_W);
	add(w, i->map_ids, mul(i->nr_map_ids, 4), SHIM_UWIN_W);
	add(w, i->jited_ksyms, mul(i->nr_jited_ksyms, 8), SHIM_UWIN_W);
	add(w, i->jited_func_lens, mul(i->nr_jited_func_lens, 4), SHIM_UWIN_W);
	add(w, i->func_info, mul(i->nr_func_info, i->func_info_rec_size), SHIM_UWIN_W);
	add(w, i->line_info, mul(i->nr_line_info, i->line_info_rec_size), SHIM_UWIN_W);
	add(w, i->jited_line_info, mul(i->nr_jited_line_info, i->jited_line_info_rec_size), SHIM_UWIN_W);
	add(w, i->prog_tags, mul(i->nr_prog_tags, BPF_TAG_SIZE_), SHIM_UWIN_W);
}

static void btf_info(struct shim_uwin *w, const struct bpf_btf_info *i)
{
	add(w, i->btf, i->btf_size, SHIM_UWIN_W);
	add(w, i->name, i->name_len, SHIM_UWIN_W);
}

static void obj_info(struct shim_uwin *w, const union bpf_attr *a)
{
	uint32_t len = a->info.info_len < PAGE_SIZE_ ? a->info.info_len : PAGE_SIZE_;
	union { struct bpf_prog_info p; struct bpf_btf_info b; unsigned char raw[PAGE_SIZE_]; } u;
	struct shim_fd *e;

	add(w, a->info.info, len, SHIM_UWIN_R | SHIM_UWIN_W);
	e = shim_fd_get((int)a->info.bpf_fd);
	if (!e || !a->info.info)
		return;
	memset(&u, 0, sizeof(u));
	if (shim_copy_from_user(&u, a->info.info, len))
		return;
	if (e->kind == SHIM_OBJ_PROG)
		prog_info(w, &u.p);
	else if (e->kind == SHIM_OBJ_BTF)
		btf_info(w, &u.b);
}

void shim_uwin_bpf(struct shim_uwin *w, int cmd, uint64_t uattr, const union bpf_attr *a,
		   unsigned int size)
{
	w->n = 0;
	add(w, uattr, size, SHIM_UWIN_R | SHIM_UWIN_W);
	switch (cmd) {
	case BPF_PROG_LOAD:
		prog_load(w, a);
		break;
	case BPF_BTF_LOAD:
		add(w, a->btf, a->btf_size, SHIM_UWIN_R);
		add(w, a->btf_log_buf, a->btf_log_size, SHIM_UWIN_W);
		break;
	case BPF_OBJ_PIN:
	case BPF_OBJ_GET:
		add(w, a->pathname, PATH_MAX_, SHIM_UWIN_STR);
		break;
	case BPF_OBJ_GET_INFO_BY_FD:
		obj_info(w, a);
		break;
	case BPF_TASK_FD_QUERY:
		add(w, a->task_fd_query.buf, a->task_fd_query.buf_len, SHIM_UWIN_W);
		break;
	}
}

/* perf_copy_attr(): `size` bytes (0: PERF_ATTR_SIZE_VER0, at most a page),
 * the size field written back on E2BIG; config1 is the path (uprobe) or
 * symbol (kprobe) of a dynamic PMU. */
void shim_uwin_perf(struct shim_uwin *w, uint64_t uattr, const struct perf_event_attr *head)
{
	uint64_t size = head->size ? head->size : PERF_ATTR_SIZE_VER0_;

	w->n = 0;
	if (size > PAGE_SIZE_ || size < PERF_ATTR_SIZE_VER0_)
		size = 8;
	add(w, uattr, size, SHIM_UWIN_R | SHIM_UWIN_W);
	if (head->type >= PERF_TYPE_MAX)
		add(w, head->config1, PATH_MAX_, SHIM_UWIN_STR);
}

/* May the server do `access` on [addr, addr+len)? For SHIM_UWIN_STR, addr
 * must be where a string range starts; *max is cut to the range. */
int shim_uwin_allows(uint64_t addr, uint64_t len, uint32_t access, uint64_t *max)
{
	const struct shim_uwin *w = shim_cur_uwin;

	if (!w)
		return 0;
	for (unsigned i = 0; i < w->n; i++) {
		const struct shim_uwin_range *r = &w->r[i];
		if (!(r->access & access))
			continue;
		if (access == SHIM_UWIN_STR) {
			if (addr != r->addr)
				continue;
			if (max && *max > r->len)
				*max = r->len;
			return 1;
		}
		if (addr >= r->addr && len <= r->len && addr - r->addr <= r->len - len)
			return 1;
	}
	return 0;
}
