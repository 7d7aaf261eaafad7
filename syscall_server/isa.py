"""The eBPF instruction set by its uapi names (include/uapi/linux/bpf.h and
bpf_common.h): classes, sizes, modes, ALU and jump ops, sources, atomic ops,
the pseudo src_regs of lddw and call, and struct bpf_insn with its
decode/encode.

The values are read from the integer #defines and enums of the generated
cdef (uapi_cdef.h, scripts/gen_uapi.py) as text, not through cffi:
compat_tests/progs_gen.py imports this module under /usr/bin/python3, stdlib
only. Only what the cdef does not have is written here.
"""
import re
import struct
from pathlib import Path


def _cdef_values():
    text = Path(__file__).with_name("uapi_cdef.h").read_text()
    values = {n: int(v) for n, v in re.findall(r"^#define (BPF_\w+) (\d+)$", text, re.M)}
    for body in re.findall(r"\benum\b[^{;]*\{([^}]*)\}", text):
        nxt = 0
        for name, val in re.findall(r"(\w+)\s*(?:=\s*([^,]+))?,", body):
            try:
                nxt = int(val, 0) if val else nxt
            except ValueError:
                break               # (1ULL << 0) and such: none the ISA needs
            values[name] = nxt
            nxt += 1
    return values


_CDEF = _cdef_values()


def _uapi(*names):
    return tuple(_CDEF[n] for n in names)


# classes (BPF_JMP32 and BPF_ALU64 take classic BPF's BPF_RET and BPF_MISC)
BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_JMP32, BPF_ALU64 = _uapi(
    "BPF_LD", "BPF_LDX", "BPF_ST", "BPF_STX", "BPF_ALU", "BPF_JMP", "BPF_JMP32", "BPF_ALU64")
# sizes
BPF_W, BPF_H, BPF_B, BPF_DW = _uapi("BPF_W", "BPF_H", "BPF_B", "BPF_DW")
SIZE_BYTES = {BPF_W: 4, BPF_H: 2, BPF_B: 1, BPF_DW: 8}     # bpf_size_to_bytes()
# modes
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_MEMSX, BPF_ATOMIC = _uapi(
    "BPF_IMM", "BPF_ABS", "BPF_IND", "BPF_MEM", "BPF_MEMSX", "BPF_ATOMIC")
# sources
BPF_K, BPF_X = _uapi("BPF_K", "BPF_X")
BPF_LD_IMM64 = BPF_LD | BPF_IMM | BPF_DW     # lddw's opcode (the kernel's BPF_LD_IMM64 insn)
# ALU operations
(BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_NEG, BPF_MOD,
 BPF_XOR, BPF_MOV, BPF_ARSH, BPF_END) = _uapi(
    "BPF_ADD", "BPF_SUB", "BPF_MUL", "BPF_DIV", "BPF_OR", "BPF_AND", "BPF_LSH", "BPF_RSH",
    "BPF_NEG", "BPF_MOD", "BPF_XOR", "BPF_MOV", "BPF_ARSH", "BPF_END")
BPF_TO_LE, BPF_TO_BE = _uapi("BPF_TO_LE", "BPF_TO_BE")
# jumps
(BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET, BPF_JNE, BPF_JSGT, BPF_JSGE, BPF_CALL, BPF_EXIT,
 BPF_JLT, BPF_JLE, BPF_JSLT, BPF_JSLE, BPF_JCOND) = _uapi(
    "BPF_JA", "BPF_JEQ", "BPF_JGT", "BPF_JGE", "BPF_JSET", "BPF_JNE", "BPF_JSGT", "BPF_JSGE",
    "BPF_CALL", "BPF_EXIT", "BPF_JLT", "BPF_JLE", "BPF_JSLT", "BPF_JSLE", "BPF_JCOND")
# atomic operations (imm of BPF_STX | BPF_ATOMIC)
BPF_FETCH, BPF_XCHG, BPF_CMPXCHG, BPF_LOAD_ACQ, BPF_STORE_REL = _uapi(
    "BPF_FETCH", "BPF_XCHG", "BPF_CMPXCHG", "BPF_LOAD_ACQ", "BPF_STORE_REL")
# src_reg of lddw
(BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE, BPF_PSEUDO_BTF_ID, BPF_PSEUDO_FUNC, BPF_PSEUDO_MAP_IDX,
 BPF_PSEUDO_MAP_IDX_VALUE) = _uapi(
    "BPF_PSEUDO_MAP_FD", "BPF_PSEUDO_MAP_VALUE", "BPF_PSEUDO_BTF_ID", "BPF_PSEUDO_FUNC",
    "BPF_PSEUDO_MAP_IDX", "BPF_PSEUDO_MAP_IDX_VALUE")
# src_reg of call
BPF_PSEUDO_CALL, BPF_PSEUDO_KFUNC_CALL = _uapi("BPF_PSEUDO_CALL", "BPF_PSEUDO_KFUNC_CALL")
# the frame pointer (BPF_REG_FP in include/linux/filter.h) and the helper a tail call is
BPF_REG_FP, BPF_FUNC_tail_call = _uapi("BPF_REG_10", "BPF_FUNC_tail_call")
BPF_MAY_GOTO = 0            # enum bpf_cond_pseudo_jmp (src_reg of BPF_JMP | BPF_JCOND): not in the cdef
# the kernel's own (include/linux/filter.h, include/linux/bpf.h)
MAX_BPF_STACK = 512
BPF_MAX_LOOPS = 8 * 1024 * 1024
BPF_TAIL_CALL = 0xF0        # BPF_JMP | BPF_TAIL_CALL: the interpreter's opcode for tail calls

INSN = struct.Struct("<BBhi")      # struct bpf_insn: code, dst_reg:4 src_reg:4, off, imm


class Insn:
    """One struct bpf_insn."""
    __slots__ = ("code", "dst", "src", "off", "imm")

    def __init__(self, code, regs, off, imm):
        self.code, self.dst, self.src, self.off, self.imm = code, regs & 0xF, regs >> 4, off, imm

    @property
    def cls(self):           # BPF_CLASS()
        return self.code & 0x07

    @property
    def op(self):            # BPF_OP()
        return self.code & 0xF0

    @property
    def size(self):          # BPF_SIZE()
        return self.code & 0x18

    @property
    def mode(self):          # BPF_MODE()
        return self.code & 0xE0

    def is_lddw(self):
        return self.code == BPF_LD_IMM64

    def pack(self):
        return INSN.pack(self.code, self.dst | (self.src << 4), self.off, self.imm)


def decode(data):
    """bytes -> one Insn per 8-byte slot."""
    return [Insn(*INSN.unpack_from(data, i)) for i in range(0, len(data), 8)]


def s32(v):
    """The low 32 bits of v as the signed imm field holds them."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def encode(code, dst=0, src=0, off=0, imm=0):
    """One struct bpf_insn as bytes (imm taken modulo 2**32)."""
    return INSN.pack(code, (dst & 0xF) | ((src & 0xF) << 4), off, s32(imm))


def encode_lddw(dst, imm64, src=0):
    """The two slots of lddw: dst = imm64 (a map fd, a map value, ... by src)."""
    return encode(BPF_LD_IMM64, dst, src, 0, imm64) + encode(0, imm=imm64 >> 32)
