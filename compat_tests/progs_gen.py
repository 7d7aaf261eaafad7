"""Random valid eBPF programs, and a batch runner for the differential test.

Stdlib only: the runner part runs under /usr/bin/python3 as uid 65534 too.

    python3 progs_gen.py run < batch.json > results.json

runs every program of the batch with BPF_PROG_LOAD + BPF_PROG_TEST_RUN
through whatever bpf() the process has (the kernel, or bpfshim when the
process is started with LD_PRELOAD=libbpfshim.so) and dumps its maps.

Generated programs (gen_program(seed)) are meant to pass the kernel
verifier as BPF_PROG_TYPE_SOCKET_FILTER or BPF_PROG_TYPE_SYSCALL:
- every register is initialised in a prologue and stays a scalar at every
  statement boundary (helper calls re-initialise r1-r5 right after), so any
  forward branch to a statement boundary is safe;
- the stack area used is initialised in the prologue; stack accesses are
  aligned (the verifier is strict about stack alignment);
- map value pointers only live inside a statement, after a NULL check;
- loops count a reserved register down from a small constant;
- the program ends by xor-folding r0-r9 into r0, so an ALU difference
  anywhere shows in retval.
"""
import ctypes
import json
import os
import random
import struct
import sys

# ---------------------------------------------------------------- encoding
# syscall_server/isa.py is stdlib only too: the runner imports it from the checkout
if os.path.dirname(os.path.dirname(os.path.abspath(__file__))) not in sys.path:
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from syscall_server.isa import (  # noqa: E402
    BPF_LD as LD, BPF_LDX as LDX, BPF_ST as ST, BPF_STX as STX, BPF_ALU as ALU, BPF_JMP as JMP,
    BPF_JMP32 as JMP32, BPF_ALU64 as ALU64, BPF_W as W, BPF_H as H, BPF_B as B, BPF_DW as DW,
    BPF_IMM as IMM, BPF_MEM as MEM, BPF_MEMSX as MEMSX, BPF_ATOMIC as ATOMIC,
    BPF_ADD as ADD, BPF_SUB as SUB, BPF_MUL as MUL, BPF_DIV as DIV, BPF_OR as OR, BPF_AND as AND,
    BPF_LSH as LSH, BPF_RSH as RSH, BPF_NEG as NEG, BPF_MOD as MOD, BPF_XOR as XOR, BPF_MOV as MOV,
    BPF_ARSH as ARSH, BPF_END as END, BPF_JA as JA, BPF_JEQ as JEQ, BPF_JGT as JGT, BPF_JGE as JGE,
    BPF_JSET as JSET, BPF_JNE as JNE, BPF_JSGT as JSGT, BPF_JSGE as JSGE, BPF_CALL as CALL,
    BPF_EXIT as EXIT, BPF_JLT as JLT, BPF_JLE as JLE, BPF_JSLT as JSLT, BPF_JSLE as JSLE,
    BPF_K as K, BPF_X as X, BPF_FETCH as FETCH, BPF_XCHG as XCHG, BPF_CMPXCHG as CMPXCHG,
    BPF_PSEUDO_MAP_FD as PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE as PSEUDO_MAP_VALUE, BPF_PSEUDO_CALL as PSEUDO_CALL,
    BPF_PSEUDO_FUNC as PSEUDO_FUNC,
    SIZE_BYTES, INSN, encode as insn, s32 as _s32,
)

BPF_PROG_TYPE_SOCKET_FILTER = 1
BPF_PROG_TYPE_SYSCALL = 31
BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_ARRAY = 1, 2
FUNC_map_lookup_elem, FUNC_map_update_elem, FUNC_map_delete_elem = 1, 2, 3
FUNC_skb_load_bytes = 26
FUNC_loop = 181
FUNC_strtol, FUNC_strtoul, FUNC_probe_read_kernel, FUNC_probe_read_kernel_str = 105, 106, 113, 115
STRTOL_INPUTS = (b"123", b"-42", b"0x1f", b"  77", b"zz", b"99999999999999999999", b"0777", b"+5x", b"-0",
                 b"\n12", b"0X", b"-9223372036854775808", b"18446744073709551615", b"1a2b")

# ---------------------------------------------------------------- disassembly
_ALU_SYM = {ADD: "+=", SUB: "-=", MUL: "*=", DIV: "/=", OR: "|=", AND: "&=", LSH: "<<=", RSH: ">>=",
            MOD: "%=", XOR: "^=", MOV: "=", ARSH: "s>>="}
_JMP_SYM = {JEQ: "==", JGT: ">", JGE: ">=", JSET: "&", JNE: "!=", JSGT: "s>", JSGE: "s>=", JLT: "<",
            JLE: "<=", JSLT: "s<", JSLE: "s<="}
_SZ = {W: "u32", H: "u16", B: "u8", DW: "u64"}
_ATOMIC = {ADD: "add", AND: "and", OR: "or", XOR: "xor"}


def disasm_one(code, regs, off, imm, nxt=None):
    dst, src = regs & 0xF, regs >> 4
    cls, op = code & 7, code & 0xF0
    if cls in (ALU, ALU64):
        w = "r" if cls == ALU64 else "w"
        if op == END:
            if cls == ALU64:
                return f"r{dst} = bswap{imm} r{dst}"
            return f"r{dst} = {'be' if code & X else 'le'}{imm} r{dst}"
        if op == NEG:
            return f"{w}{dst} = -{w}{dst}"
        if op == MOV and code & X and off:
            return f"{w}{dst} = (s{off}){w}{src}"
        sym = _ALU_SYM.get(op, f"?alu{op:x}")
        if op in (DIV, MOD) and off == 1:
            sym = "s" + sym
        rhs = f"{w}{src}" if code & X else f"{imm:#x}" if abs(imm) > 9 else str(imm)
        return f"{w}{dst} {sym} {rhs}"
    if cls in (JMP, JMP32):
        w = "r" if cls == JMP else "w"
        if op == EXIT:
            return "exit"
        if op == CALL:
            return f"call pc{imm:+d}" if src == PSEUDO_CALL else f"call #{imm}"
        if op == JA:
            return f"gotol {imm:+d}" if cls == JMP32 else f"goto {off:+d}"
        rhs = f"{w}{src}" if code & X else f"{imm:#x}" if abs(imm) > 9 else str(imm)
        return f"if {w}{dst} {_JMP_SYM.get(op, '?')} {rhs} goto {off:+d}"
    if code == LD | IMM | DW:
        hi = nxt[3] if nxt else 0
        v = (imm & 0xFFFFFFFF) | ((hi & 0xFFFFFFFF) << 32)
        if src == PSEUDO_MAP_FD:
            return f"r{dst} = map[fd {imm}] ll"
        return f"r{dst} = {v:#x} ll"
    sz = _SZ[code & 0x18]
    if cls == LDX:
        return f"r{dst} = *({'s' + sz[1:] if code & 0xE0 == MEMSX else sz} *)(r{src} {off:+d})"
    if cls == ST:
        return f"*({sz} *)(r{dst} {off:+d}) = {imm}"
    if cls == STX and code & 0xE0 == MEM:
        return f"*({sz} *)(r{dst} {off:+d}) = r{src}"
    if cls == STX and code & 0xE0 == ATOMIC:
        m = f"*({sz} *)(r{dst} {off:+d})"
        if imm == XCHG:
            return f"r{src} = xchg({m}, r{src})"
        if imm == CMPXCHG:
            return f"r0 = cmpxchg({m}, r0, r{src})"
        name = _ATOMIC.get(imm & ~FETCH, "?")
        return f"{'r%d = ' % src if imm & FETCH else ''}atomic_{'fetch_' if imm & FETCH else ''}{name}({m}, r{src})"
    return f"?{code:#04x}"


def disasm(data):
    """One line per instruction: index, hex, readable form."""
    n = len(data) // 8
    out = []
    i = 0
    while i < n:
        code, regs, off, imm = INSN.unpack_from(data, 8 * i)
        nxt = INSN.unpack_from(data, 8 * i + 8) if code == LD | IMM | DW and i + 1 < n else None
        out.append(f"{i:4d}: {data[8 * i:8 * i + 8].hex()}  {disasm_one(code, regs, off, imm, nxt)}")
        if nxt:
            out.append(f"{i + 1:4d}: {data[8 * i + 8:8 * i + 16].hex()}")
            i += 1
        i += 1
    return "\n".join(out)


# ---------------------------------------------------------------- assembler
class Asm:
    """Instructions with symbolic forward/backward jump and call targets."""

    def __init__(self):
        self.items = []          # [code, dst, src, off, imm, label, kind]
        self.labels = {}
        self.n = 0

    def label(self, name):
        self.labels[name] = len(self.items)

    def emit(self, code, dst=0, src=0, off=0, imm=0):
        self.items.append([code, dst, src, off, imm, None, None])

    def jmp(self, code, dst, src, imm, target):
        self.items.append([code, dst, src, 0, imm, target, "off"])

    def gotol(self, target):
        self.items.append([JMP32 | JA, 0, 0, 0, 0, target, "imm"])

    def call_local(self, target):
        self.items.append([JMP | CALL, 0, PSEUDO_CALL, 0, 0, target, "imm"])

    def ld64(self, dst, value, src=0):
        value &= (1 << 64) - 1
        self.emit(LD | IMM | DW, dst, src, 0, _s32(value))
        self.emit(0, 0, 0, 0, _s32(value >> 32))

    def newlabel(self):
        self.n += 1
        return f"L{self.n}"

    def assemble(self):
        out = bytearray()
        for i, (code, dst, src, off, imm, target, kind) in enumerate(self.items):
            if target is not None:
                delta = self.labels[target] - i - 1
                if kind == "off":
                    off = delta
                else:
                    imm = delta
            out += insn(code, dst, src, off, imm)
        return bytes(out)


# ---------------------------------------------------------------- generator
ALU_OPS = (ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH)
JMP_OPS = (JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, JLT, JLE, JSLT, JSLE)
STACK_SLOTS = 12                     # fp-96 .. fp-1 initialised in the prologue
STACK_BYTES = 8 * STACK_SLOTS
KEY_OFF, VAL_OFF = -104, -144        # helper key / value areas (also initialised)
STACK_LOW = -144
SKB_CTX_FIELDS = (0, 4, 8, 16, 24, 32, 48, 52, 56, 60, 64)   # len pkt_type mark protocol ... cb[0..4]
SKB_CB = (48, 52, 56, 60, 64)


class Gen:
    def __init__(self, seed, prog_type=None):
        self.rnd = random.Random(seed)
        self.seed = seed
        r = self.rnd
        self.prog_type = prog_type if prog_type is not None else (
            BPF_PROG_TYPE_SYSCALL if r.random() < 0.25 else BPF_PROG_TYPE_SOCKET_FILTER)
        self.asm = Asm()
        self.maps = []
        self.use_maps = r.random() < 0.6
        if self.use_maps:
            self.maps.append(self._hash_map())
            self.maps.append(self._array_map())
        self.has_sub = r.random() < 0.35
        self.sub_used = False
        self.cb_used = False
        self.sub_label = "SUB"
        self.budget = r.randint(20, 160)
        self.use_loop_helper = r.random() < 0.3

    # -- values
    def imm32(self):
        r = self.rnd
        c = r.random()
        if c < 0.3:
            return r.randint(-4, 8)
        if c < 0.45:
            return r.choice((0x7FFFFFFF, -0x80000000, -1, 0xFFFF, 0x8000, 0x80, 0xFF, 31, 32, 63, 64))
        if c < 0.6:
            return r.randint(-1000, 1000)
        return _s32(r.getrandbits(32))

    def imm64(self):
        r = self.rnd
        c = r.random()
        if c < 0.25:
            return r.choice((1 << 63, (1 << 63) - 1, (1 << 64) - 1, 1 << 32, (1 << 32) - 1, 0x80000000,
                             0xFFFFFFFF80000000, 0))
        return r.getrandbits(64)

    def _hash_map(self):
        r = self.rnd
        ks = r.choice((4, 8))
        vs = r.choice((8, 16, 24, 32))
        n = r.choice((4, 8, 16))
        init = []
        for k in r.sample(range(10), r.randint(0, min(n, 6))):
            init.append([k.to_bytes(ks, "little").hex(), r.getrandbits(8 * vs).to_bytes(vs, "little").hex()])
        return {"type": BPF_MAP_TYPE_HASH, "key_size": ks, "value_size": vs, "max_entries": n, "init": init}

    def _array_map(self):
        r = self.rnd
        vs = r.choice((8, 16, 32))
        n = r.choice((2, 4, 6))
        init = [[k.to_bytes(4, "little").hex(), r.getrandbits(8 * vs).to_bytes(vs, "little").hex()]
                for k in range(n) if r.random() < 0.7]
        return {"type": BPF_MAP_TYPE_ARRAY, "key_size": 4, "value_size": vs, "max_entries": n, "init": init}

    # -- register choice
    def reg(self, avoid=(), allow0=True):
        rs = [x for x in range(0 if allow0 else 1, 10) if x not in avoid]
        return self.rnd.choice(rs)

    # -- statements
    def prologue(self, regs, sub=False):
        a, r = self.asm, self.rnd
        if not sub and self.prog_type == BPF_PROG_TYPE_SOCKET_FILTER and r.random() < 0.5:
            a.emit(ALU64 | MOV | X, 6, 1)           # keep ctx for skb_load_bytes / ctx reads
            self.ctx_reg = 6
        elif not sub and self.prog_type == BPF_PROG_TYPE_SYSCALL and r.random() < 0.6:
            a.emit(ALU64 | MOV | X, 6, 1)
            self.ctx_reg = 6
        else:
            self.ctx_reg = None
        for x in regs:
            if x == self.ctx_reg:
                continue
            c = r.random()
            if c < 0.35:
                a.ld64(x, self.imm64())
            elif c < 0.75:
                a.emit(ALU64 | MOV | K, x, 0, 0, self.imm32())
            else:
                a.emit(ALU | MOV | K, x, 0, 0, self.imm32())
        # the stack areas statements read: all initialised
        lo = STACK_LOW if not sub else -STACK_BYTES
        for off in range(lo, 0, 8):
            if r.random() < 0.5:
                a.emit(ST | MEM | DW, 10, 0, off, self.imm32())
            else:
                a.emit(STX | MEM | DW, 10, self.rnd.choice([x for x in regs if x != self.ctx_reg]), off)

    def scalar_regs(self, avoid):
        """Registers that hold scalars here (ctx pointer excluded)."""
        return [x for x in range(10) if x not in avoid and x != self.ctx_reg]

    def st_alu(self, avoid):
        a, r = self.asm, self.rnd
        cls = ALU64 if r.random() < 0.55 else ALU
        op = r.choice(ALU_OPS)
        dst = r.choice(self.scalar_regs(avoid))
        srcs = self.scalar_regs(())
        use_x = r.random() < 0.5
        if op == NEG:
            a.emit(cls | NEG, dst)
            return
        if op in (LSH, RSH, ARSH):
            bits = 64 if cls == ALU64 else 32
            if use_x:
                src = r.choice(srcs)
                # masked amounts mostly; the ISA masks an unmasked one (& 63 / & 31)
                if r.random() < 0.85 and src not in avoid and src != dst:
                    a.emit(cls | AND | K, src, 0, 0, bits - 1)
                a.emit(cls | op | X, dst, src)
            else:
                a.emit(cls | op | K, dst, 0, 0, r.randrange(bits))
            return
        if op == MOV:
            if use_x:
                src = r.choice(srcs)
                off = 0
                if r.random() < 0.4:
                    off = r.choice((8, 16, 32) if cls == ALU64 else (8, 16))
                a.emit(cls | MOV | X, dst, src, off)
            else:
                a.emit(cls | MOV | K, dst, 0, 0, self.imm32())
            return
        off = 1 if op in (DIV, MOD) and r.random() < 0.4 else 0
        if use_x:
            src = r.choice(srcs)
            if op in (DIV, MOD) and r.random() < 0.5 and src not in avoid:
                # interesting divisors: 0, -1, small
                a.emit(cls | MOV | K, src, 0, 0, r.choice((0, -1, 0, 1, 3, -7)))
                if off and r.random() < 0.5 and dst != src:
                    # INT_MIN / -1
                    if cls == ALU64:
                        a.ld64(dst, 1 << 63)
                    else:
                        a.emit(ALU | MOV | K, dst, 0, 0, -0x80000000)
                    a.emit(cls | MOV | K, src, 0, 0, -1)
            a.emit(cls | op | X, dst, src, off)
        else:
            imm = self.imm32()
            if op in (DIV, MOD) and imm == 0:
                imm = r.choice((1, -1, 7))
            a.emit(cls | op | K, dst, 0, off, imm)

    def st_end(self, avoid):
        a, r = self.asm, self.rnd
        dst = r.choice(self.scalar_regs(avoid))
        c = r.random()
        if c < 0.4:
            a.emit(ALU64 | END, dst, 0, 0, r.choice((16, 32, 64)))       # bswap
        else:
            a.emit(ALU | END | r.choice((0, X)), dst, 0, 0, r.choice((16, 32, 64)))

    def stack_off(self, size, lo=-STACK_BYTES):
        return self.rnd.randrange(lo, 0, size) if lo % size == 0 else -size * self.rnd.randint(1, -lo // size)

    def st_stack(self, avoid):
        a, r = self.asm, self.rnd
        sz = r.choice((W, H, B, DW))
        n = SIZE_BYTES[sz]
        off = self.stack_off(n)
        c = r.random()
        if c < 0.3:
            a.emit(ST | MEM | sz, 10, 0, off, self.imm32())
        elif c < 0.6:
            a.emit(STX | MEM | sz, 10, r.choice(self.scalar_regs(())), off)
        elif c < 0.8 or sz == DW:
            a.emit(LDX | MEM | sz, r.choice(self.scalar_regs(avoid)), 10, off)
        else:
            a.emit(LDX | MEMSX | sz, r.choice(self.scalar_regs(avoid)), 10, off)

    def st_atomic(self, avoid, base=10, off=None, lo=-STACK_BYTES):
        a, r = self.asm, self.rnd
        sz = r.choice((W, DW))
        n = SIZE_BYTES[sz]
        if off is None:
            off = self.stack_off(n, lo)
        op = r.choice((ADD, AND, OR, XOR, ADD | FETCH, AND | FETCH, OR | FETCH, XOR | FETCH, XCHG, CMPXCHG))
        fetches = op & FETCH
        if fetches:
            src = r.choice(self.scalar_regs(avoid))
        else:
            src = r.choice(self.scalar_regs(()))
        if op == CMPXCHG:
            if 0 in avoid:
                op = ADD
            elif r.random() < 0.5:
                # make the compare succeed sometimes: r0 = current value
                a.emit(LDX | MEM | sz, 0, base, off)
        a.emit(STX | ATOMIC | sz, base, src, off, op)

    def st_ctx(self, avoid):
        a, r = self.asm, self.rnd
        if self.ctx_reg is None:
            return self.st_alu(avoid)
        dst = r.choice(self.scalar_regs(avoid))
        if self.prog_type == BPF_PROG_TYPE_SYSCALL:
            sz = r.choice((W, H, B, DW))
            n = SIZE_BYTES[sz]
            off = n * r.randrange(64 // n)
            c = r.random()
            if c < 0.5:
                a.emit(LDX | MEM | sz, dst, self.ctx_reg, off)
            elif c < 0.8:
                a.emit(STX | MEM | sz, self.ctx_reg, r.choice(self.scalar_regs(())), off)
            else:
                a.emit(ST | MEM | sz, self.ctx_reg, 0, off, self.imm32())
            return
        if r.random() < 0.4:
            a.emit(STX | MEM | W, self.ctx_reg, r.choice(self.scalar_regs(())), r.choice(SKB_CB))
        else:
            a.emit(LDX | MEM | W, dst, self.ctx_reg, r.choice(SKB_CTX_FIELDS))

    def reinit_args(self, avoid):
        a = self.asm
        for x in range(1, 6):
            if x == self.ctx_reg:
                continue
            a.emit(ALU64 | MOV | K, x, 0, 0, self.imm32())

    def st_skb_load(self, avoid):
        a, r = self.asm, self.rnd
        if self.ctx_reg is None or self.prog_type != BPF_PROG_TYPE_SOCKET_FILTER or any(
                x in avoid for x in (0, 1, 2, 3, 4, 5)):
            return self.st_alu(avoid)
        ln = r.choice((1, 2, 4, 8, 16))
        off = r.choice((0, 1, 4, 8, 14, 20, 40, 48, 60, 63))
        dst = -STACK_BYTES + 8 * r.randrange(0, (STACK_BYTES - ln) // 8 + 1) if ln <= STACK_BYTES else -STACK_BYTES
        a.emit(ALU64 | MOV | X, 1, self.ctx_reg)
        a.emit(ALU64 | MOV | K, 2, 0, 0, off)
        a.emit(ALU64 | MOV | X, 3, 10)
        a.emit(ALU64 | ADD | K, 3, 0, 0, dst)
        a.emit(ALU64 | MOV | K, 4, 0, 0, ln)
        a.emit(JMP | CALL, 0, 0, 0, FUNC_skb_load_bytes)
        self.reinit_args(avoid)

    def st_map(self, avoid):
        a, r = self.asm, self.rnd
        if not self.maps or any(x in avoid for x in (0, 1, 2, 3, 4, 5)):
            return self.st_alu(avoid)
        mi = r.randrange(len(self.maps))
        m = self.maps[mi]
        ks, vs = m["key_size"], m["value_size"]
        # the key: a small number, from a register or an immediate
        if r.random() < 0.5:
            a.emit(ST | MEM | (W if ks == 4 else DW), 10, 0, KEY_OFF, r.randint(0, 9))
        else:
            src = r.choice(self.scalar_regs(()))
            a.emit(ALU64 | MOV | X, 1, src)
            a.emit(ALU64 | AND | K, 1, 0, 0, 7)
            a.emit(STX | MEM | (W if ks == 4 else DW), 10, 1, KEY_OFF)
        a.ld64(1, mi, PSEUDO_MAP_FD)
        a.emit(ALU64 | MOV | X, 2, 10)
        a.emit(ALU64 | ADD | K, 2, 0, 0, KEY_OFF)
        c = r.random()
        if c < 0.55:
            a.emit(JMP | CALL, 0, 0, 0, FUNC_map_lookup_elem)
            skip = a.newlabel()
            a.jmp(JMP | JEQ | K, 0, 0, 0, skip)
            # r1-r5 are clobbered by the call: the callee-saved registers only
            live = [x for x in self.scalar_regs(avoid) if x >= 6] or [0]
            for _ in range(r.randint(1, 4)):
                sz = r.choice((W, H, B, DW))
                n = SIZE_BYTES[sz]
                off = n * r.randrange(vs // n)
                k = r.random()
                if k < 0.3:
                    a.emit(LDX | MEM | sz, r.choice(live), 0, off)
                elif k < 0.55:
                    a.emit(STX | MEM | sz, 0, r.choice(live), off)
                elif k < 0.7:
                    a.emit(ST | MEM | sz, 0, 0, off, self.imm32())
                else:
                    asz = r.choice((W, DW))
                    an = SIZE_BYTES[asz]
                    aoff = an * r.randrange(vs // an)
                    op = r.choice((ADD, AND, OR, XOR, ADD | FETCH, OR | FETCH, XOR | FETCH, XCHG))
                    src = r.choice(live)
                    a.emit(STX | ATOMIC | asz, 0, src, aoff, op)
            sz = r.choice((W, DW, B))
            a.emit(LDX | MEM | sz, 0, 0, SIZE_BYTES[sz] * r.randrange(vs // SIZE_BYTES[sz]))
            a.label(skip)
        elif c < 0.85:
            a.emit(ALU64 | MOV | X, 3, 10)
            a.emit(ALU64 | ADD | K, 3, 0, 0, VAL_OFF)
            a.emit(ALU64 | MOV | K, 4, 0, 0, r.choice((0, 0, 0, 1, 2)))
            a.emit(JMP | CALL, 0, 0, 0, FUNC_map_update_elem)
        else:
            a.emit(JMP | CALL, 0, 0, 0, FUNC_map_delete_elem)
        self.reinit_args(avoid)

    def st_misc_helper(self, avoid):
        """bpf_strtol/strtoul on a string put on the stack; bpf_probe_read_kernel(_str)
        from one stack area to another (no overlap)."""
        a, r = self.asm, self.rnd
        if any(x in avoid for x in (0, 1, 2, 3, 4, 5)):
            return self.st_alu(avoid)
        if r.random() < 0.5:
            text = r.choice(STRTOL_INPUTS)
            buf = -STACK_BYTES + 8 * r.randrange(0, 4)          # up to 24 bytes of text from here
            raw = text + bytes(r.getrandbits(8) for _ in range(24 - len(text))) if r.random() < 0.3 else \
                text.ljust(24, b"\0")
            raw = raw[:24]
            for k in range(0, 24, 8):
                a.ld64(1, int.from_bytes(raw[k:k + 8], "little"))
                a.emit(STX | MEM | DW, 10, 1, buf + k)
            a.emit(ALU64 | MOV | X, 1, 10)
            a.emit(ALU64 | ADD | K, 1, 0, 0, buf)
            a.emit(ALU64 | MOV | K, 2, 0, 0, r.randint(1, 24))
            a.emit(ALU64 | MOV | K, 3, 0, 0, r.choice((0, 0, 10, 16, 8, 2, 1 << 5, 1)))
            a.emit(ALU64 | MOV | X, 4, 10)
            a.emit(ALU64 | ADD | K, 4, 0, 0, -STACK_BYTES + 8 * r.randrange(4, STACK_SLOTS))
            a.emit(JMP | CALL, 0, 0, 0, r.choice((FUNC_strtol, FUNC_strtoul)))
        else:
            dst = -96 + 8 * r.randrange(3)
            src = -48 + 8 * r.randrange(3)
            a.emit(ALU64 | MOV | X, 1, 10)
            a.emit(ALU64 | ADD | K, 1, 0, 0, dst)
            a.emit(ALU64 | MOV | K, 2, 0, 0, r.randint(1, 32))
            a.emit(ALU64 | MOV | X, 3, 10)
            a.emit(ALU64 | ADD | K, 3, 0, 0, src)
            a.emit(JMP | CALL, 0, 0, 0, r.choice((FUNC_probe_read_kernel, FUNC_probe_read_kernel_str)))
        self.reinit_args(avoid)

    def st_bpf_loop(self, avoid):
        """bpf_loop(n, callback, fp-96, 0): the callback reads and writes the
        caller's stack through its ctx argument."""
        a, r = self.asm, self.rnd
        if any(x in avoid for x in (0, 1, 2, 3, 4, 5)):
            return self.st_alu(avoid)
        a.emit(ALU64 | MOV | K, 1, 0, 0, r.randint(0, 6))
        a.items.append([LD | IMM | DW, 2, PSEUDO_FUNC, 0, 0, "CB", "imm"])
        a.emit(0)
        a.emit(ALU64 | MOV | X, 3, 10)
        a.emit(ALU64 | ADD | K, 3, 0, 0, -96)
        a.emit(ALU64 | MOV | K, 4, 0, 0, 0)
        a.emit(JMP | CALL, 0, 0, 0, FUNC_loop)
        self.cb_used = True
        self.reinit_args(avoid)

    def callback(self):
        """bpf_loop's callback(index r1, ctx r2 = caller's fp-96): returns 0 or 1."""
        a, r = self.asm, self.rnd
        a.label("CB")
        saved = self.ctx_reg, self.maps, self.has_sub
        self.ctx_reg, self.maps, self.has_sub = 2, [], False
        for x in (0, 3, 4, 5, 6, 7, 8, 9):
            if r.random() < 0.5:
                a.emit(ALU64 | MOV | X, x, 1)
            else:
                a.emit(ALU64 | MOV | K, x, 0, 0, self.imm32())
        for off in range(-STACK_BYTES, 0, 8):
            a.emit(STX | MEM | DW, 10, r.choice((0, 1, 3, 4)), off)
        self.block(1, r.randint(3, 20), (2,), in_loop=True)
        # something index-dependent into the caller's stack, then r0 in [0, 1]
        a.emit(ALU64 | XOR | X, 0, 1)
        a.emit(STX | MEM | DW, 2, 0, 8 * r.randrange(12))
        if r.random() < 0.7:
            a.emit(ALU64 | MOV | K, 0, 0, 0, 0)
        else:
            a.emit(ALU64 | AND | K, 0, 0, 0, 1)
        a.emit(JMP | EXIT)
        self.ctx_reg, self.maps, self.has_sub = saved

    def st_subcall(self, avoid):
        a = self.asm
        if not self.has_sub or any(x in avoid for x in (0, 1, 2, 3, 4, 5)):
            return self.st_alu(avoid)
        a.call_local(self.sub_label)
        self.sub_used = True
        self.reinit_args(avoid)

    def cond_jump(self, target, avoid):
        a, r = self.asm, self.rnd
        cls = JMP if r.random() < 0.6 else JMP32
        op = r.choice(JMP_OPS)
        dst = r.choice(self.scalar_regs(()))
        if r.random() < 0.5:
            a.jmp(cls | op | X, dst, r.choice(self.scalar_regs(())), 0, target)
        else:
            a.jmp(cls | op | K, dst, 0, self.imm32(), target)

    def block(self, depth, budget, avoid, in_loop=False):
        r = self.rnd
        while budget > 0:
            c = r.random()
            before = len(self.asm.items)
            if c < 0.38:
                self.st_alu(avoid)
            elif c < 0.45:
                self.st_end(avoid)
            elif c < 0.57:
                self.st_stack(avoid)
            elif c < 0.63:
                self.st_atomic(avoid)
            elif c < 0.68:
                self.st_ctx(avoid)
            elif c < 0.76 and depth < 3:
                skip = self.asm.newlabel()
                self.cond_jump(skip, avoid)
                self.block(depth + 1, r.randint(1, 6), avoid, in_loop)
                self.asm.label(skip)
            elif c < 0.81 and depth < 3:
                els, end = self.asm.newlabel(), self.asm.newlabel()
                self.cond_jump(els, avoid)
                self.block(depth + 1, r.randint(1, 5), avoid, in_loop)
                if r.random() < 0.5:
                    self.asm.gotol(end)
                else:
                    self.asm.jmp(JMP | JA, 0, 0, 0, end)
                self.asm.label(els)
                self.block(depth + 1, r.randint(1, 5), avoid, in_loop)
                self.asm.label(end)
            elif c < 0.85 and depth < 2 and not in_loop:
                self.st_loop(depth, avoid)
            elif c < 0.92 and not in_loop:
                self.st_map(avoid)
            elif c < 0.95 and not in_loop:
                self.st_subcall(avoid)
            elif c < 0.965 and not in_loop:
                self.st_skb_load(avoid)
            elif c < 0.98 and not in_loop:
                self.st_misc_helper(avoid)
            elif c < 0.99 and not in_loop and self.use_loop_helper:
                self.st_bpf_loop(avoid)
            else:
                self.st_alu(avoid)
            budget -= max(1, len(self.asm.items) - before)

    def st_loop(self, depth, avoid):
        a, r = self.asm, self.rnd
        free = [x for x in self.scalar_regs(avoid) if x not in (0,)]
        cnt = r.choice(free)
        inner = tuple(avoid) + (cnt,)
        a.emit(ALU64 | MOV | K, cnt, 0, 0, r.randint(1, 5))
        top = a.newlabel()
        a.label(top)
        self.block(depth + 1, r.randint(2, 10), inner, in_loop=True)
        if r.random() < 0.5:
            a.emit(ALU64 | SUB | K, cnt, 0, 0, 1)
            a.jmp(JMP | JSGT | K, cnt, 0, 0, top)
        else:
            a.emit(ALU | ADD | K, cnt, 0, 0, -1)
            a.jmp(JMP32 | JNE | K, cnt, 0, 0, top)

    def epilogue(self):
        a = self.asm
        # r0 = fold of all registers (ctx pointer excluded)
        for x in range(1, 10):
            if x == self.ctx_reg:
                continue
            a.emit(ALU64 | (XOR if x % 2 else ADD) | X, 0, x)
            a.emit(ALU64 | MUL | K, 0, 0, 0, 0x01000193)
        a.emit(JMP | EXIT)

    def subprog(self):
        """A small subprogram: r1-r5 are its arguments; r0/r6-r9 are set first."""
        a, r = self.asm, self.rnd
        a.label(self.sub_label)
        saved_ctx = self.ctx_reg
        self.ctx_reg = None
        for x in (0, 6, 7, 8, 9):
            if r.random() < 0.6:
                a.emit(ALU64 | MOV | X, x, r.randint(1, 5))
            else:
                a.emit(ALU64 | MOV | K, x, 0, 0, self.imm32())
        for off in range(-STACK_BYTES, 0, 8):
            a.emit(STX | MEM | DW, 10, r.randint(0, 9), off)
        # the sub-block must not call helpers / itself
        old_maps, old_sub = self.maps, self.has_sub
        self.maps, self.has_sub = [], False
        self.block(1, r.randint(3, 25), (), in_loop=True)
        self.maps, self.has_sub = old_maps, old_sub
        for x in range(1, 10):
            a.emit(ALU64 | XOR | X, 0, x)
        a.emit(JMP | EXIT)
        self.ctx_reg = saved_ctx

    def program(self):
        r = self.rnd
        self.prologue(list(range(0, 10)))
        self.block(0, self.budget, ())
        self.epilogue()
        if self.sub_used:
            self.subprog()
        if self.cb_used:
            self.callback()
        data = self.asm.assemble()
        btf = None
        if self.cb_used:
            # callbacks need BTF func_info ("missing btf func_info")
            funcs = [("main", 1, 0)]
            if self.sub_used:
                funcs.append(("sub", 5, self.asm.labels[self.sub_label]))
            funcs.append(("cb", 2, self.asm.labels["CB"]))
            blob, ids = make_btf([(f, n) for f, n, _ in funcs])
            btf = {"btf": blob.hex(), "func_info": [[off, tid] for (_, _, off), tid in zip(funcs, ids)]}
        p = {"seed": self.seed, "prog_type": self.prog_type, "insns": data.hex(), "maps": self.maps,
             # syscall programs must be sleepable (BPF_F_SLEEPABLE)
             "prog_flags": 1 << 4 if self.prog_type == BPF_PROG_TYPE_SYSCALL else 0}
        if btf:
            p.update(btf)
        if self.prog_type == BPF_PROG_TYPE_SOCKET_FILTER:
            p["data_in"] = packet(r).hex()
        else:
            p["ctx_in"] = bytes(r.getrandbits(8) for _ in range(64)).hex()
        return p


def make_btf(funcs):
    """A minimal BTF for func_info: int, void *, and one FUNC per subprogram.
    funcs: [(name, nargs)]. Returns (blob, [type id of each FUNC])."""
    strs = bytearray(b"\0")

    def name(n):
        off = len(strs)
        strs.extend(n.encode() + b"\0")
        return off
    types = bytearray()
    types += struct.pack("<IIII", name("int"), 1 << 24, 4, (1 << 24) | 32)     # [1] INT int, signed 32
    types += struct.pack("<III", 0, 2 << 24, 0)                                   # [2] PTR void
    nid = 3
    ids = []
    for fname, nargs in funcs:
        types += struct.pack("<III", 0, (13 << 24) | nargs, 1)                    # FUNC_PROTO -> int
        for k in range(nargs):
            types += struct.pack("<II", name(f"a{k}"), 2 if fname != "cb" or k else 1)
        types += struct.pack("<III", name(fname), 12 << 24, nid)                  # FUNC, static
        ids.append(nid + 1)
        nid += 2
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strs))
    return bytes(hdr + types + strs), ids


def packet(r):
    """A 64-byte Ethernet/IPv4/UDP frame with a random payload."""
    eth = bytes.fromhex("020000000001") + bytes.fromhex("020000000002") + b"\x08\x00"
    ip = bytes.fromhex("4500003200004000401100007f0000017f000001")
    udp = bytes.fromhex("1f9004d2001e0000")
    body = bytes(r.getrandbits(8) for _ in range(64 - len(eth) - len(ip) - len(udp)))
    return eth + ip + udp + body


def gen_program(seed):
    return Gen(seed).program()


# ---------------------------------------------------------------- runner (bpf() through ctypes)
BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_GET_NEXT_KEY = 0, 1, 2, 4
BPF_PROG_LOAD, BPF_PROG_TEST_RUN = 5, 10
NR_bpf = 321          # x86-64

_libc = None


def _bpf_fn():
    global _libc
    if _libc is None:
        # the global namespace: an LD_PRELOADed syscall() comes first
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
        _libc.syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
    return _libc


def bpf(cmd, attr, size=None):
    """attr: a ctypes buffer. Returns (ret, errno)."""
    lib = _bpf_fn()
    ctypes.set_errno(0)
    ret = lib.syscall(NR_bpf, cmd, ctypes.addressof(attr), len(attr) if size is None else size)
    return (ret, 0) if ret >= 0 else (-1, ctypes.get_errno())


def addr(buf):
    return ctypes.addressof(buf) if buf is not None else 0


def map_create(m):
    a = ctypes.create_string_buffer(72)
    struct.pack_into("<IIIII", a, 0, m["type"], m["key_size"], m["value_size"], m["max_entries"], 0)
    return bpf(BPF_MAP_CREATE, a)


def map_update(fd, k, v, flags=0):
    kb, vb = ctypes.create_string_buffer(k, len(k)), ctypes.create_string_buffer(v, len(v))
    a = ctypes.create_string_buffer(32)
    struct.pack_into("<IIQQQ", a, 0, fd, 0, addr(kb), addr(vb), flags)
    return bpf(BPF_MAP_UPDATE_ELEM, a)


def map_dump(fd, ks, vs):
    out = []
    kb, nk, vb = ctypes.create_string_buffer(ks), ctypes.create_string_buffer(ks), ctypes.create_string_buffer(vs)
    a = ctypes.create_string_buffer(32)
    first = True
    for _ in range(10000):
        struct.pack_into("<IIQQQ", a, 0, fd, 0, 0 if first else addr(kb), addr(nk), 0)
        ret, err = bpf(BPF_MAP_GET_NEXT_KEY, a)
        if ret < 0:
            if err != 2:      # ENOENT ends the walk
                out.append(["get_next_key errno", err])
            break
        first = False
        ctypes.memmove(kb, nk, ks)
        struct.pack_into("<IIQQQ", a, 0, fd, 0, addr(kb), addr(vb), 0)
        ret, err = bpf(BPF_MAP_LOOKUP_ELEM, a)
        out.append([kb.raw[:ks].hex(), vb.raw[:vs].hex() if ret == 0 else f"errno {err}"])
    return sorted(out, key=lambda e: str(e[0]))


def prog_load(prog_type, data, log_size=65536, log_level=1, name=b"", license=b"GPL", attr_size=None,
              extra=None, prog_flags=0):
    """BPF_PROG_LOAD: (fd or -1, errno, log text)."""
    ib = ctypes.create_string_buffer(data, max(len(data), 1))
    lic = ctypes.create_string_buffer(license) if license is not None else None
    log = ctypes.create_string_buffer(log_size) if log_size else None
    a = ctypes.create_string_buffer(max(attr_size or 144, 144))
    struct.pack_into("<IIQQIIQ", a, 0, prog_type, len(data) // 8, addr(ib), addr(lic),
                     log_level, log_size if log else 0, addr(log))
    struct.pack_into("<I", a, 44, prog_flags)
    a[48:48 + len(name)] = name
    if extra:
        extra(a, locals())
    ret, err = bpf(BPF_PROG_LOAD, a, attr_size or 144)
    text = log.value.decode(errors="replace") if log else ""
    return ret, err, text


BPF_BTF_LOAD = 18


def btf_load(blob):
    b = ctypes.create_string_buffer(blob, len(blob))
    a = ctypes.create_string_buffer(40)
    struct.pack_into("<QQI", a, 0, addr(b), 0, len(blob))
    return bpf(BPF_BTF_LOAD, a)


def _close(fd):
    try:
        os.close(fd)
    except OSError:
        pass


def run_one(p):
    res = {}
    fds = []
    try:
        for m in p["maps"]:
            fd, err = map_create(m)
            if fd < 0:
                res["map_create_errno"] = err
                return res
            fds.append(fd)
            for k, v in m["init"]:
                map_update(fd, bytes.fromhex(k), bytes.fromhex(v))
        data = bytearray(bytes.fromhex(p["insns"]))
        for i in range(0, len(data), 8):
            code, regs, off, imm = INSN.unpack_from(data, i)
            if code == LD | IMM | DW and regs >> 4 == PSEUDO_MAP_FD:
                INSN.pack_into(data, i, code, regs, off, fds[imm])
        extra = None
        if "btf" in p:
            bfd, err = btf_load(bytes.fromhex(p["btf"]))
            if bfd < 0:
                res["btf_load_errno"] = err
                return res
            fds.append(bfd)
            fi = b"".join(struct.pack("<II", off, tid) for off, tid in p["func_info"])
            fib = ctypes.create_string_buffer(fi, len(fi))

            def extra(a, _l, bfd=bfd, fib=fib, n=len(p["func_info"])):
                struct.pack_into("<IIQI", a, 72, bfd, 8, addr(fib), n)
        fd, err, log = prog_load(p["prog_type"], bytes(data), prog_flags=p.get("prog_flags", 0), extra=extra)
        res["load_errno"] = err
        if fd < 0:
            res["log"] = log[-2000:]
            return res
        fds.append(fd)
        a = ctypes.create_string_buffer(80)
        if "data_in" in p:
            din = bytes.fromhex(p["data_in"])
            ib = ctypes.create_string_buffer(din, len(din))
            ob = ctypes.create_string_buffer(len(din) + 256)
            struct.pack_into("<IIIIQQ", a, 0, fd, 0, len(din), len(ob), addr(ib), addr(ob))
            ret, err = bpf(BPF_PROG_TEST_RUN, a)
            size_out = struct.unpack_from("<I", a, 12)[0]
            res["data_out"] = ob.raw[:min(size_out, len(ob))].hex()
        else:
            cin = bytes.fromhex(p["ctx_in"])
            cb = ctypes.create_string_buffer(cin, len(cin))
            struct.pack_into("<I", a, 0, fd)
            struct.pack_into("<IIQ", a, 40, len(cin), 0, addr(cb))
            ret, err = bpf(BPF_PROG_TEST_RUN, a)
            res["ctx_out"] = cb.raw[:len(cin)].hex()
        res["test_errno"] = err
        res["retval"] = struct.unpack_from("<I", a, 4)[0]
        res["maps"] = [map_dump(f, m["key_size"], m["value_size"]) for f, m in zip(fds, p["maps"])]
        return res
    finally:
        for f in fds:
            _close(f)


def run_batch(progs):
    out = []
    for p in progs:
        try:
            out.append(run_one(p))
        except Exception as e:     # a harness problem must not hide the other programs
            out.append({"exception": repr(e)})
    return out


# ---------------------------------------------------------------- the differential driver
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHIM_LIB = os.path.join(ROOT, "syscall_server", "_native", "libbpfshim.so")
NOBODY = 65534
SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


NOBODY_PYTHON = "/usr/bin/python3"    # /root is 0700: the pyenv python is not usable as uid 65534


def nobody_env(env, preloaded):
    """What a python run as uid 65534 needs set besides `env`: HOME=/tmp and,
    with the shim preloaded, the server's python: the project's venv (the
    server needs cffi/llvmlite), not Debian's."""
    out = {"HOME": "/tmp"}
    venv = os.path.join(ROOT, ".venv", "bin", "python")
    if preloaded and "BPFSHIM_PYTHON" not in env and os.path.exists(venv):
        out["BPFSHIM_PYTHON"] = venv
    return out


def as_nobody_cmd(args, env):
    """args (a python script and its arguments) run as uid 65534 with
    NOBODY_PYTHON. LD_PRELOAD is set after setpriv: preloaded into setpriv
    itself, the shim's threads would break its per-thread capability
    juggling."""
    pre = env.pop("LD_PRELOAD", None)
    env.update(nobody_env(env, pre))
    return SETPRIV + ["env"] + ([f"LD_PRELOAD={pre}"] if pre else []) + [NOBODY_PYTHON] + list(args)


def _harness():
    """compat_tests.env and .unpriv (this file also runs as a script:
    scripts/bench.d)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from compat_tests import env, unpriv
    return env, unpriv


def kernel_ok():
    """The oracle is available: kernel eBPF works here (env.kernel_bpf_reason
    says why not)."""
    return _harness()[0].kernel_bpf_reason() is None


def run_backend(progs, shim=None, engine=None, as_nobody=False, timeout=900):
    """run_backend_once; when the process dies (a crash in an engine), the
    batch is split until the programs that kill it are found; their results
    say so ({"exception": "process died ..."}), the others are kept."""
    try:
        return run_backend_once(progs, shim, engine, as_nobody, timeout)
    except RuntimeError as e:
        if len(progs) == 1:
            return [{"exception": f"process died: {str(e)[:300]}"}]
    k = max(1, len(progs) // 8)
    out = []
    for i in range(0, len(progs), k):
        out += run_backend(progs[i:i + k], shim, engine, as_nobody, timeout)
    return out


def run_backend_once(progs, shim=None, engine=None, as_nobody=False, timeout=900):
    """Run a batch in one child process: the kernel (shim=None) or bpfshim
    (LD_PRELOAD, BPFSHIM_ENGINE=engine, a server of this engine's own; as
    uid 65534 with as_nobody). Returns the list of results."""
    unpriv = _harness()[1]
    if not shim:
        assert not as_nobody, "the kernel side runs as root"
        side, extra = unpriv.KERNEL, []
    else:
        side = unpriv.BPFSHIM_UNPRIV if as_nobody else unpriv.BPFSHIM
        extra = [("BPFSHIM_ENGINE", engine)] if engine else []
    py = sys.executable
    if as_nobody:
        py = NOBODY_PYTHON
        extra += list(nobody_env(os.environ, True).items())
    p, log = unpriv.run_side(side, [py, os.path.join(HERE, "progs_gen.py"), "run"], extra,
                             prefix=f"bpfshim-rand-{engine or 'default'}-", lib=shim or SHIM_LIB,
                             input=json.dumps(progs).encode(), timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"runner failed ({p.returncode}): {p.stderr.decode(errors='replace')[-3000:]}\n"
                           f"server.log: {log[-3000:]}")
    return json.loads(p.stdout)


def program_seed(base, i):
    return base * 1_000_003 + i


def select_programs(base_seed, n, start=0):
    """n programs the kernel verifier accepts, from seed index `start` on,
    with the kernel's results. Rejected programs are replaced by the next
    seeds. Returns (progs, kernel_results, next_index, rejections)."""
    progs, results, rejected = [], [], []
    i = start
    while len(progs) < n:
        cand = [gen_program(program_seed(base_seed, i + j)) for j in range(n - len(progs))]
        i += len(cand)
        for p, r in zip(cand, run_backend(cand)):
            if r.get("load_errno") or "exception" in r:
                rejected.append((p["seed"], r.get("load_errno"), r.get("log", r.get("exception", ""))[-300:]))
            else:
                progs.append(p)
                results.append(r)
    return progs, results, i, rejected


FIELDS = ("exception", "map_create_errno", "btf_load_errno", "load_errno", "log", "test_errno", "retval", "data_out", "ctx_out", "maps")


def diff_fields(want, got):
    out = []
    for f in FIELDS:
        if f == "log":
            continue
        if want.get(f) != got.get(f):
            out.append(f)
    return out


def describe(p, want, got, fields, label="bpfshim"):
    data = bytes.fromhex(p["insns"])
    lines = [f"program seed {p['seed']} prog_type {p['prog_type']} ({len(data) // 8} insns), "
             f"differs in {', '.join(fields)}",
             f"maps: {json.dumps([{k: v for k, v in m.items() if k != 'init'} for m in p['maps']])}",
             f"input: {p.get('data_in') or p.get('ctx_in')}",
             f"hex: {p['insns']}", disasm(data)]
    for f in fields or FIELDS:
        lines.append(f"  kernel  {f}: {json.dumps(want.get(f))}")
        lines.append(f"  {label:<7} {f}: {json.dumps(got.get(f))}")
    if got.get("log"):
        lines.append("  bpfshim log: " + got["log"][-500:])
    return "\n".join(lines)


def compare(progs, want, got):
    """[(index, fields)] of the programs whose results differ."""
    return [(i, f) for i, (w, g) in enumerate(zip(want, got)) for f in [diff_fields(w, g)] if f]


def differential(base_seed, n, engines=("interp", "aot"), nobody_engine=None, shim=SHIM_LIB, show=3,
                 chunk=1000, progress=None):
    """The whole differential, in chunks of `chunk` programs. Returns a
    summary dict; summary["reports"] holds, per backend, the first `show`
    mismatches described in full."""
    import time
    import collections
    t0 = time.time()
    runs = [(e, False) for e in engines] + ([(nobody_engine, True)] if nobody_engine else [])
    labels = [f"{e}{'@65534' if nb else ''}" for e, nb in runs]
    total, index, rejected = 0, 0, []
    kernel_s = 0.0
    eng = {lb: {"mismatches": 0, "by_field": collections.Counter(), "seconds": 0.0, "first_seeds": []}
           for lb in labels}
    reports = {lb: [] for lb in labels}
    while total < n:
        t = time.time()
        progs, want, index, rej = select_programs(base_seed, min(chunk, n - total), index)
        kernel_s += time.time() - t
        rejected += rej
        total += len(progs)
        for (engine, nobody), label in zip(runs, labels):
            t = time.time()
            got = run_backend(progs, shim=shim, engine=engine, as_nobody=nobody)
            e = eng[label]
            e["seconds"] += time.time() - t
            for i, fs in compare(progs, want, got):
                e["mismatches"] += 1
                e["by_field"].update(fs)
                if len(e["first_seeds"]) < 20:
                    e["first_seeds"].append(progs[i]["seed"])
                if len(reports[label]) < show:
                    reports[label].append(describe(progs[i], want[i], got[i], fs, label))
        if progress:
            progress(total, {lb: eng[lb]["mismatches"] for lb in labels})
    why = collections.Counter(r[2].strip().splitlines()[-2] if r[2].strip().count("\n") else r[2].strip()
                              for r in rejected)
    for e in eng.values():
        e["by_field"] = dict(e["by_field"])
        e["seconds"] = round(e["seconds"], 2)
    return {"programs": total, "generated": index, "rejected": len(rejected),
            "rejection_rate": round(len(rejected) / index, 4) if index else 0.0,
            "rejections": dict(why.most_common(5)), "kernel_s": round(kernel_s, 2), "engines": eng,
            "reports": reports, "seconds": round(time.time() - t0, 2)}


def main(argv):
    if len(argv) > 1 and argv[1] == "run":
        progs = json.load(sys.stdin)
        json.dump(run_batch(progs), sys.stdout)
        return 0
    if len(argv) > 1 and argv[1] == "show":
        p = gen_program(int(argv[2]))
        print(json.dumps({k: v for k, v in p.items() if k != "insns"}))
        print(disasm(bytes.fromhex(p["insns"])))
        return 0
    if len(argv) > 1 and argv[1] == "diff":
        # diff SEED N [ENGINES] [--nobody ENGINE]: prints the mismatches and a summary
        seed = int(argv[2]) if len(argv) > 2 else 1
        n = int(argv[3]) if len(argv) > 3 else 500
        engines = tuple(argv[4].split(",")) if len(argv) > 4 and argv[4] else ("interp", "aot")
        nobody = argv[6] if len(argv) > 6 and argv[5] == "--nobody" else None

        def progress(done, mism):
            print(f"... {done} programs, mismatches {mism}", file=sys.stderr, flush=True)
        s = differential(seed, n, engines=engines, nobody_engine=nobody, progress=progress)
        for label, reps in s.pop("reports").items():
            for r in reps:
                print(f"---- {label}: mismatch\n{r}\n")
        print(json.dumps(s, indent=1))
        for label, e in s["engines"].items():
            print(f"{label}: {e['mismatches']} mismatches of {s['programs']} programs")
        print(f"kernel rejected {s['rejected']} of {s['generated']} generated ({100 * s['rejection_rate']:.2f}%)")
        return 1 if any(e["mismatches"] for e in s["engines"].values()) else 0
    print("usage: progs_gen.py run < batch.json | show SEED | diff SEED N [ENGINES [--nobody ENGINE]]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
