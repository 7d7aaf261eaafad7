/* SPDX-License-Identifier: MIT */
/*
 * x86-64 instruction length decoder: legacy prefixes, REX, VEX (C4/C5) and
 * EVEX (62), AMD XOP (8F), opcode maps 0F / 0F38 / 0F3A, ModRM / SIB / displacement and
 * immediates. Enough to find instruction boundaries and the fields the
 * relocator rewrites (RIP-relative displacements, branch offsets); it does
 * not validate operands beyond what the length depends on.
 */
#include <errno.h>
#include <string.h>
#include "hook.h"

enum { IMM_NONE, IMM_8, IMM_16, IMM_Z, IMM_V, IMM_MOFFS, IMM_ENTER, IMM_GRP3, IMM_32 };

/* One-byte map: 1 = has ModRM, -1 = invalid in 64-bit mode / handled apart. */
static int map0_modrm(uint8_t op, int *imm)
{
	*imm = IMM_NONE;
	if (op < 0x40) {
		switch (op & 7) {
		case 0: case 1: case 2: case 3:
			return 1;
		case 4:
			*imm = IMM_8;
			return 0;
		case 5:
			*imm = IMM_Z;
			return 0;
		default:
			return -1;      /* push/pop seg, daa...: invalid; 0F/26/2E/36/3E are handled before */
		}
	}
	if (op >= 0x50 && op <= 0x5f)
		return 0;
	if (op >= 0x70 && op <= 0x7f) {
		*imm = IMM_8;
		return 0;
	}
	if (op >= 0x90 && op <= 0x9f)
		return op == 0x9a ? -1 : 0;
	if (op >= 0xb0 && op <= 0xb7) {
		*imm = IMM_8;
		return 0;
	}
	if (op >= 0xb8 && op <= 0xbf) {
		*imm = IMM_V;
		return 0;
	}
	if (op >= 0xd8 && op <= 0xdf)
		return 1;       /* x87 */
	switch (op) {
	case 0x63: return 1;
	case 0x68: *imm = IMM_Z; return 0;
	case 0x69: *imm = IMM_Z; return 1;
	case 0x6a: *imm = IMM_8; return 0;
	case 0x6b: *imm = IMM_8; return 1;
	case 0x6c: case 0x6d: case 0x6e: case 0x6f: return 0;
	case 0x80: case 0x83: *imm = IMM_8; return 1;
	case 0x81: *imm = IMM_Z; return 1;
	case 0x84: case 0x85: case 0x86: case 0x87: case 0x88: case 0x89: case 0x8a:
	case 0x8b: case 0x8c: case 0x8d: case 0x8e: case 0x8f:
		return 1;
	case 0xa0: case 0xa1: case 0xa2: case 0xa3: *imm = IMM_MOFFS; return 0;
	case 0xa4: case 0xa5: case 0xa6: case 0xa7: case 0xaa: case 0xab:
	case 0xac: case 0xad: case 0xae: case 0xaf:
		return 0;
	case 0xa8: *imm = IMM_8; return 0;
	case 0xa9: *imm = IMM_Z; return 0;
	case 0xc0: case 0xc1: *imm = IMM_8; return 1;
	case 0xc2: case 0xca: *imm = IMM_16; return 0;
	case 0xc3: case 0xc9: case 0xcb: case 0xcc: case 0xcf: return 0;
	case 0xc6: *imm = IMM_8; return 1;
	case 0xc7: *imm = IMM_Z; return 1;
	case 0xc8: *imm = IMM_ENTER; return 0;
	case 0xcd: *imm = IMM_8; return 0;
	case 0xd0: case 0xd1: case 0xd2: case 0xd3: return 1;
	case 0xd7: return 0;
	case 0xe0: case 0xe1: case 0xe2: case 0xe3: case 0xe4: case 0xe5: case 0xe6:
	case 0xe7: case 0xeb:
		*imm = IMM_8;
		return 0;
	case 0xe8: case 0xe9: *imm = IMM_Z; return 0;
	case 0xec: case 0xed: case 0xee: case 0xef: return 0;
	case 0xf1: case 0xf4: case 0xf5: return 0;
	case 0xf6: case 0xf7: *imm = IMM_GRP3; return 1;
	case 0xf8: case 0xf9: case 0xfa: case 0xfb: case 0xfc: case 0xfd: return 0;
	case 0xfe: case 0xff: return 1;
	}
	return -1;
}

/* Two-byte map (0F xx), also VEX/EVEX map 1. */
static int map1_modrm(uint8_t op, int *imm)
{
	*imm = IMM_NONE;
	if (op >= 0x80 && op <= 0x8f) {
		*imm = IMM_Z;   /* jcc rel32 */
		return 0;
	}
	if (op >= 0xc8 && op <= 0xcf)
		return 0;       /* bswap */
	switch (op) {
	case 0x04: case 0x0a: case 0x0c: case 0x24: case 0x25: case 0x26: case 0x27:
	case 0x36: case 0x39: case 0x3b: case 0x3c: case 0x3d: case 0x3e: case 0x3f:
		return -1;
	case 0x05: case 0x06: case 0x07: case 0x08: case 0x09: case 0x0b: case 0x0e:
	case 0x30: case 0x31: case 0x32: case 0x33: case 0x34: case 0x35: case 0x37:
	case 0x77: case 0xa0: case 0xa1: case 0xa2: case 0xa8: case 0xa9: case 0xaa:
		return 0;
	case 0x0f:      /* 3DNow!: ModRM, then the opcode as an imm8 */
	case 0x70: case 0x71: case 0x72: case 0x73: case 0xa4: case 0xac: case 0xba:
	case 0xc2: case 0xc4: case 0xc5: case 0xc6:
		*imm = IMM_8;
		return 1;
	}
	return 1;
}

int hook_x86_decode(const uint8_t *p, size_t max, struct x86_insn *out)
{
	struct x86_insn d;
	size_t i = 0;
	int imm = IMM_NONE, modrm;
	int rexw = 0;

	memset(&d, 0, sizeof(d));
	if (max > 15)
		max = 15;
#define NEED(n) do { if (i + (n) > max) return -EINVAL; } while (0)
	/* legacy prefixes, then an optional REX right before the opcode */
	for (;;) {
		NEED(1);
		uint8_t b = p[i];
		if (b == 0xf0 || b == 0xf2 || b == 0xf3 || b == 0x2e || b == 0x36 || b == 0x3e ||
		    b == 0x26 || b == 0x64 || b == 0x65 || b == 0x66 || b == 0x67) {
			if (b == 0x66)
				d.opsize16 = 1;
			d.legacy_prefixes++;
			d.rex = 0;      /* a REX not immediately before the opcode is ignored */
			i++;
			continue;
		}
		if ((b & 0xf0) == 0x40) {
			d.rex = b;
			i++;
			continue;
		}
		break;
	}
	rexw = (d.rex & 8) != 0;
	NEED(1);
	uint8_t b = p[i];
	if (b == 0xc4 || b == 0xc5 || b == 0x62) {
		/* VEX3 / VEX2 / EVEX (always so in 64-bit mode) */
		if (d.rex)
			return -EINVAL;
		d.vex = b;
		if (b == 0xc5) {
			NEED(3);
			d.map = 1;
			i += 2;
		} else if (b == 0xc4) {
			NEED(4);
			d.map = p[i + 1] & 0x1f;
			rexw = (p[i + 2] & 0x80) != 0;
			i += 3;
		} else {
			NEED(5);
			d.map = p[i + 1] & 0x07;
			rexw = (p[i + 2] & 0x80) != 0;
			i += 4;
		}
		if (d.map < 1 || d.map > 3)
			return -EINVAL;
		d.opc_off = (uint8_t)i;
		d.op = p[i++];
		if (d.map == 1) {
			modrm = map1_modrm(d.op, &imm);
			if (modrm < 0)
				return -EINVAL;
			if (d.op >= 0x80 && d.op <= 0x8f)
				return -EINVAL;
		} else {
			modrm = 1;
			imm = d.map == 3 ? IMM_8 : IMM_NONE;
		}
	} else if (b == 0x8f && i + 1 < max && (p[i + 1] & 0x1f) >= 8) {
		/* AMD XOP: like VEX3; map 8 has an imm8, map 0xA an imm32 */
		if (d.rex)
			return -EINVAL;
		NEED(5);
		d.vex = b;
		unsigned xmap = p[i + 1] & 0x1f;
		if (xmap > 10)
			return -EINVAL;
		d.map = (uint8_t)xmap;
		i += 3;
		d.opc_off = (uint8_t)i;
		d.op = p[i++];
		modrm = 1;
		imm = xmap == 8 ? IMM_8 : IMM_NONE;
		if (xmap == 10)
			imm = IMM_32;
	} else if (b == 0x0f) {
		NEED(2);
		i++;
		if (p[i] == 0x38 || p[i] == 0x3a) {
			d.map = p[i] == 0x38 ? 2 : 3;
			i++;
			NEED(1);
			d.opc_off = (uint8_t)i;
			d.op = p[i++];
			modrm = 1;
			imm = d.map == 3 ? IMM_8 : IMM_NONE;
		} else {
			d.map = 1;
			d.opc_off = (uint8_t)i;
			d.op = p[i++];
			modrm = map1_modrm(d.op, &imm);
			if (modrm < 0)
				return -EINVAL;
		}
	} else {
		d.map = 0;
		d.opc_off = (uint8_t)i;
		d.op = p[i++];
		modrm = map0_modrm(d.op, &imm);
		if (modrm < 0)
			return -EINVAL;
	}

	if (modrm) {
		NEED(1);
		d.has_modrm = 1;
		d.modrm = p[i++];
		unsigned mod = d.modrm >> 6, rm = d.modrm & 7;
		if (mod != 3) {
			if (rm == 4) {
				NEED(1);
				uint8_t sib = p[i++];
				if (mod == 0 && (sib & 7) == 5)
					d.disp_size = 4;
			} else if (mod == 0 && rm == 5) {
				d.disp_size = 4;
				d.rip_rel = 1;
			}
			if (mod == 1)
				d.disp_size = 1;
			else if (mod == 2)
				d.disp_size = 4;
		}
		if (d.disp_size) {
			d.disp_off = (uint8_t)i;
			i += d.disp_size;
		}
	}

	switch (imm) {
	case IMM_32: d.imm_size = 4; break;
	case IMM_8: d.imm_size = 1; break;
	case IMM_16: d.imm_size = 2; break;
	case IMM_Z: d.imm_size = (d.opsize16 && !rexw) ? 2 : 4; break;
	case IMM_V: d.imm_size = rexw ? 8 : (d.opsize16 ? 2 : 4); break;
	case IMM_MOFFS: d.imm_size = 8; break;  /* 67 would make it 4: see below */
	case IMM_ENTER: d.imm_size = 3; break;
	case IMM_GRP3:
		if (((d.modrm >> 3) & 7) < 2)   /* test r/m, imm */
			d.imm_size = d.op == 0xf6 ? 1 : ((d.opsize16 && !rexw) ? 2 : 4);
		break;
	}
	if (imm == IMM_MOFFS) {
		for (size_t k = 0; k < d.opc_off; k++)
			if (p[k] == 0x67)
				d.imm_size = 4;
	}
	if (d.imm_size) {
		d.imm_off = (uint8_t)i;
		i += d.imm_size;
	}
	if (i > max)
		return -EINVAL;
#undef NEED
	d.len = (uint8_t)i;
	if (out)
		*out = d;
	return (int)i;
}
