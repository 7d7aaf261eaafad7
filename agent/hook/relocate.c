/* SPDX-License-Identifier: MIT */
/*
 * Relocation: the displaced instructions of a site copied to run elsewhere,
 * and the scan of a function for branches into the bytes a patch covers.
 *
 * Jump-mode trampoline of a site (allocated within +-2 GiB of it):
 *
 *     lea  -128(%rsp),%rsp          skip the red zone
 *     push %rax
 *     movabs $site,%rax
 *     call *entry_common(%rip)      saves pt_regs, runs the handlers
 *     pop  %rax                     (entry_common returns here, or to the
 *     lea  128(%rsp),%rsp            caller of the function on override)
 *     <relocated displaced instructions>
 *     jmp  addr+len
 *     .quad hook_entry_common
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define TRAMP_SIZE 256
#define OOL_SIZE 64
#define RELOC_OFF 31

static int fits32(int64_t v)
{
	return v >= INT32_MIN && v <= INT32_MAX;
}

static int32_t get32(const uint8_t *p)
{
	int32_t x;
	memcpy(&x, p, 4);
	return x;
}

int emit_jmp(uint8_t *b, uint64_t at, uint64_t target)
{
	int64_t rel = (int64_t)(target - (at + 5));

	if (fits32(rel)) {
		b[0] = 0xe9;
		put32(b + 1, rel);
		return 5;
	}
	b[0] = 0xff;                    /* jmp *0(%rip); .quad target */
	b[1] = 0x25;
	put32(b + 2, 0);
	memcpy(b + 6, &target, 8);
	return 14;
}

enum { BR_NONE, BR_JMP, BR_JCC, BR_CALL, BR_BAD };

/* Relative branches: kind, and target. */
static int branch_of(const struct x86_insn *d, const uint8_t *src, uint64_t next, uint64_t *target)
{
	if (d->vex)
		return BR_NONE;
	if (d->map == 0) {
		if (d->op == 0xeb || (d->op >= 0x70 && d->op <= 0x7f)) {
			*target = next + (int64_t)(int8_t)src[d->imm_off];
			return d->op == 0xeb ? BR_JMP : BR_JCC;
		}
		if (d->op == 0xe8 || d->op == 0xe9) {
			if (d->imm_size != 4)
				return BR_BAD;  /* 66-prefixed: 16-bit ip */
			*target = next + (int64_t)get32(src + d->imm_off);
			return d->op == 0xe8 ? BR_CALL : BR_JMP;
		}
		if (d->op >= 0xe0 && d->op <= 0xe3)
			return BR_BAD;          /* loop*, jrcxz: rel8 only */
		if (d->op == 0xc7 && d->modrm == 0xf8)
			return BR_BAD;          /* xbegin */
	} else if (d->map == 1 && d->op >= 0x80 && d->op <= 0x8f) {
		if (d->imm_size != 4)
			return BR_BAD;
		*target = next + (int64_t)get32(src + d->imm_off);
		return BR_JCC;
	}
	return BR_NONE;
}

/* Control never falls through to the next instruction. */
static int ends_flow(const struct x86_insn *d)
{
	if (d->vex)
		return 0;
	if (d->map == 0) {
		switch (d->op) {
		case 0xc2: case 0xc3: case 0xca: case 0xcb: case 0xcf: case 0xe9: case 0xeb: case 0xcc:
		case 0xf4:
			return 1;
		case 0xff:
			return ((d->modrm >> 3) & 7) == 4 || ((d->modrm >> 3) & 7) == 5;
		}
	}
	return d->map == 1 && d->op == 0x0b;    /* ud2 */
}

/* Write the relocated form of one instruction (at src_addr) into b, which
 * will execute at `at`. Returns its length or -EINVAL. */
static int reloc_insn(const struct x86_insn *d, const uint8_t *src, uint64_t src_addr, uint8_t *b, uint64_t at)
{
	uint64_t next = src_addr + d->len, target = 0;
	int n;

	switch (branch_of(d, src, next, &target)) {
	case BR_BAD:
		return -EINVAL;
	case BR_JMP:
		return emit_jmp(b, at, target);
	case BR_JCC: {
		unsigned cc = (d->map == 0 ? d->op : d->op) & 0xf;
		int64_t rel = (int64_t)(target - (at + 6));
		if (fits32(rel)) {
			b[0] = 0x0f;
			b[1] = (uint8_t)(0x80 | cc);
			put32(b + 2, rel);
			return 6;
		}
		b[0] = (uint8_t)(0x70 | (cc ^ 1));     /* j!cc over an absolute jmp */
		b[1] = 14;
		emit_jmp(b + 2, at + 2, target);
		return 16;
	}
	case BR_CALL: {
		/* push the original return address, then jmp */
		uint32_t lo = (uint32_t)next, hi = (uint32_t)(next >> 32);
		b[0] = 0x68;
		memcpy(b + 1, &lo, 4);
		b[5] = 0xc7; b[6] = 0x44; b[7] = 0x24; b[8] = 0x04;     /* movl $hi, 4(%rsp) */
		memcpy(b + 9, &hi, 4);
		n = emit_jmp(b + 13, at + 13, target);
		return 13 + n;
	}
	}
	memcpy(b, src, d->len);
	if (d->rip_rel) {
		int64_t t = (int64_t)next + get32(src + d->disp_off);
		int64_t nd = t - (int64_t)(at + d->len);
		if (!fits32(nd))
			return -EINVAL;
		put32(b + d->disp_off, nd);
	}
	return d->len;
}

/* The jump-mode trampoline of s, or -EINVAL if the code does not allow it.
 * `avail` bytes are readable at s->addr. */
int build_tramp(struct hook_site *s, size_t avail)
{
	uint8_t buf[TRAMP_SIZE];
	uint8_t *t = near_alloc(s->addr, TRAMP_SIZE);
	uint64_t at;
	unsigned covered = 0, off = RELOC_OFF;

	if (!t)
		return -ENOMEM;
	at = (uint64_t)t;
	memset(s->bmap, 0xff, sizeof(s->bmap));
	while (covered < 5) {
		struct x86_insn d;
		uint64_t target;
		int n = hook_x86_decode(s->orig + covered, avail - covered, &d);
		if (n < 0)
			return -EINVAL;
		int br = branch_of(&d, s->orig + covered, s->addr + covered + n, &target);
		if (covered + n < 5 && (ends_flow(&d) || br == BR_CALL))
			return -EINVAL;         /* would patch past the function / return into the patch */
		if ((br == BR_JMP || br == BR_JCC || br == BR_CALL) && target > s->addr && target < s->addr + 5)
			return -EINVAL;         /* branch into the bytes the jmp overwrites */
		if (s->orig[covered] == 0xcc)
			return -EINVAL;
		if (covered == 0 && n == 1 && !first_insn_ok(s->orig[0]))
			return -EINVAL;         /* see trapped_here() */
		s->bmap[covered] = (uint8_t)off;
		n = reloc_insn(&d, s->orig + covered, s->addr + covered, buf + off, at + off);
		if (n < 0)
			return n;
		off += (unsigned)n;
		covered += d.len;
	}
	off += (unsigned)emit_jmp(buf + off, at + off, s->addr + covered);
	off = (off + 7) & ~7u;
	uint64_t common = (uint64_t)hook_entry_common, site = (uint64_t)s;
	memcpy(buf + off, &common, 8);
	/* the fixed head */
	static const uint8_t head1[] = { 0x48, 0x8d, 0x64, 0x24, 0x80, 0x50, 0x48, 0xb8 };
	memcpy(buf, head1, sizeof(head1));
	memcpy(buf + 8, &site, 8);
	buf[16] = 0xff;
	buf[17] = 0x15;
	put32(buf + 18, (int64_t)off - 22);
	static const uint8_t head2[] = { 0x58, 0x48, 0x8d, 0xa4, 0x24, 0x80, 0x00, 0x00, 0x00 };
	memcpy(buf + 22, head2, sizeof(head2));
	off += 8;
	if (off > TRAMP_SIZE)
		return -EINVAL;
	int err = code_write(t, buf, off);
	if (err)
		return err;
	s->tramp = t;
	s->reloc = t + RELOC_OFF;
	s->disp_len = (uint8_t)covered;
	s->patch_len = 5;
	s->mode = HOOK_MODE_JMP;
	return 0;
}

/* int3 mode: an out-of-line copy of the first instruction and a jmp back
 * (into *slot; the site's mode is the caller's business). */
int build_ool_slot(struct hook_site *s, size_t avail, uint8_t **slot, uint8_t *len)
{
	uint8_t buf[OOL_SIZE];
	struct x86_insn d;
	int n = hook_x86_decode(s->orig, avail, &d);

	if (n < 0 || s->orig[0] == 0xcc)
		return -EINVAL;
	uint8_t *t = near_alloc(s->addr, OOL_SIZE);
	if (!t)
		return -ENOMEM;
	n = reloc_insn(&d, s->orig, s->addr, buf, (uint64_t)t);
	if (n < 0)
		return n;
	n += emit_jmp(buf + n, (uint64_t)t + (unsigned)n, s->addr + d.len);
	int err = code_write(t, buf, (size_t)n);
	if (err)
		return err;
	*slot = t;
	*len = d.len;
	return 0;
}

int build_ool(struct hook_site *s, size_t avail)
{
	uint8_t *t, len;
	int err = build_ool_slot(s, avail, &t, &len);

	if (err)
		return err;
	s->reloc = t;
	s->tramp = NULL;
	s->patch_len = 1;
	s->disp_len = len;
	s->mode = HOOK_MODE_INT3;
	return 0;
}

/* buf holds the code at [at, at + len): put back the original bytes where
 * sites patched it (their jmp or int3 is not the code). */
void unpatch_copy(uint8_t *buf, uint64_t at, size_t len)
{
	for (struct hook_site *o = all_sites; o; o = o->anext)
		for (size_t i = 0; i < len; i++)
			if (at + i >= o->addr && at + i < o->addr + 5)
				buf[i] = o->orig[at + i - o->addr];
}

/* See hook_attach_in(): whether a branch elsewhere in [func, func + size)
 * may land in (addr, addr + len). Decoded from a copy with the original
 * bytes of the sites already patched. */
int branch_into_copy(uint64_t addr, unsigned len, uint64_t func, size_t size, const uint8_t *copy)
{
	uint8_t *code;
	size_t avail;
	int prot, hit = 0;

	/* both ends mapped executable (mapping_of caps avail at an insn), unless
	 * the caller read them */
	if (!func || addr < func || addr >= func + size ||
	    (!copy && (mapping_of(func, &prot, &avail) || mapping_of(func + size - 1, &prot, &avail))) ||
	    !(code = malloc(size)))
		return 1;
	memcpy(code, copy ? copy : (const uint8_t *)func, size);
	unpatch_copy(code, func, size);
	for (size_t pc = 0; pc < size && !hit;) {
		struct x86_insn d;
		uint64_t target = 0;
		int n = hook_x86_decode(code + pc, size - pc, &d);
		if (n <= 0)
			break;          /* padding or data past the code: what came before counts */
		int br = branch_of(&d, code + pc, func + pc + (unsigned)n, &target);
		int indirect = !d.vex && d.map == 0 && d.op == 0xff && ((d.modrm >> 3) & 7) == 4;
		hit = indirect || br == BR_BAD ||
		      ((br == BR_JMP || br == BR_JCC || br == BR_CALL) && target > addr && target < addr + len);
		pc += (unsigned)n;
	}
	free(code);
	return hit;
}

int branch_into(uint64_t addr, unsigned len, uint64_t func, size_t size)
{
	return branch_into_copy(addr, len, func, size, NULL);
}
