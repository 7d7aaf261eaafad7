"""eBPF -> LLVM IR (text), one LLVM function per subprogram.

Semantics are those of the kernel's interpreter (kernel/bpf/core.c) after the
verifier's fixups (do_misc_fixups): division by zero gives 0, modulo by zero
leaves dst (zero-extended for 32-bit), signed division by -1 negates and signed
modulo by -1 gives 0, shift amounts are masked, 32-bit operations zero-extend.

Registers are i64 allocas (SROA/mem2reg make them SSA values); the stack is an
i8 array alloca with r10 at its end; other memory is reached as a null base pointer
plus the address, with align 1 (eBPF allows unaligned access; x86 does too). Helpers are called through
env->helpers[id]; maps through env->maps[i] / env->map_values[i]; the runtime
functions the code needs (bpf_rt_tail_call_pending, bpf_rt_backedge) through
import slots that bpf_jit_load fills (see link.py).

Runs are bounded (agent/bpf_rt.h): a taken back edge (a jump to its own pc or
before) goes through a block that decrements the budget counter and calls
bpf_rt_backedge when it reaches 0, except in a loop that a constant bounds
(loops.py): the edges that enter it go through a block that takes the bound
off the counter the same way, and its own back edges are plain jumps, so LLVM
sees the loop as it would without a budget (it vectorizes and unrolls it). A
function with back edges keeps the counter in a local (a register after SROA)
and hands it to the thread's variable, reached as %fs:offset (address space
257, the offset an import), around calls and at returns. Functions without
back edges never touch it.
"""
from .insn import (
    AotError, BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_JMP32, BPF_ALU64,
    BPF_W, BPF_H, BPF_B, BPF_DW, SIZE_BYTES, BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_MEMSX, BPF_ATOMIC, BPF_X,
    BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_NEG, BPF_MOD,
    BPF_XOR, BPF_MOV, BPF_ARSH, BPF_END, BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET, BPF_JNE,
    BPF_JSGT, BPF_JSGE, BPF_CALL, BPF_EXIT, BPF_JLT, BPF_JLE, BPF_JSLT, BPF_JSLE, BPF_FETCH,
    BPF_XCHG, BPF_CMPXCHG, BPF_LOAD_ACQ, BPF_STORE_REL, BPF_PSEUDO_CALL, BPF_PSEUDO_MAP_IDX,
    BPF_PSEUDO_MAP_IDX_VALUE, BPF_FUNC_tail_call, BPF_REG_FP, MAX_BPF_STACK, HELPER_MAX,
    BPF_JCOND, BPF_MAY_GOTO, BPF_MAX_LOOPS, BPF_PSEUDO_FUNC, jump_target, predecessors,
)

from .loops import plan as budget_plan
from .switch import plan_tree as switch_plan

ENTRY_NAME = "bpf_prog"
IMPORT_PREFIX = "__bpfshim_import."
ZERO_NAME = "__bpfshim_zero"
# Import slots, filled by bpf_jit_load by index (bpf_jit_imports[] in agent/jit.c).
IMPORTS = ("bpf_rt_tail_call_pending", "bpf_rt_backedge", "bpf_rt_backedges_tpoff", "bpf_rt_ld_abs")

_ITY = {BPF_B: "i8", BPF_H: "i16", BPF_W: "i32", BPF_DW: "i64"}
_BITS = {BPF_B: 8, BPF_H: 16, BPF_W: 32, BPF_DW: 64}

_ALU_SIMPLE = {BPF_ADD: "add", BPF_SUB: "sub", BPF_MUL: "mul", BPF_OR: "or", BPF_AND: "and",
               BPF_XOR: "xor"}
_SHIFT = {BPF_LSH: "shl", BPF_RSH: "lshr", BPF_ARSH: "ashr"}
_CMP = {BPF_JEQ: "eq", BPF_JNE: "ne", BPF_JGT: "ugt", BPF_JGE: "uge", BPF_JLT: "ult",
        BPF_JLE: "ule", BPF_JSGT: "sgt", BPF_JSGE: "sge", BPF_JSLT: "slt", BPF_JSLE: "sle"}
_RMW = {0x00: "add", 0x40: "or", 0x50: "and", 0xa0: "xor"}

FN_ATTRS = 'nounwind "no-builtins" "frame-pointer"="none" "no-trapping-math"="true"'


def _fname(f):
    return ENTRY_NAME if f.idx == 0 else f"bpf_sub{f.idx}"


def _cbname(f):
    return f"bpf_cb{f.idx}"


def callback_ir(f):
    """The entry of a subprogram whose address the program takes (bpf_loop,
    bpf_for_each_map_elem): bpf_rt_callback_fn's C convention around the
    subprogram's fastcc; a tail call pending in it ends only the callback."""
    args = ", ".join(f"i64 %a{r}" for r in range(1, 6)) + ", ptr %env"
    out = [f"define internal i64 @{_cbname(f)}({args}) #0 {{", "entry:"]
    if f.may_tail_call:
        out += [f"  %p = call fastcc {{ i64, i1 }} @{_fname(f)}({args})",
                "  %r = extractvalue { i64, i1 } %p, 0"]
    else:
        out.append(f"  %r = call fastcc i64 @{_fname(f)}({args})")
    return out + ["  ret i64 %r", "}"]


def _stack_use(prog, f):
    """(size, escapes, zero): the stack alloca size, whether r10 is used as a
    value (then the stack is reached through other registers and the alloca
    is the full 512 bytes), and how many bytes below r10 to zero at entry.

    Uninitialized stack must not be LLVM undef (privileged programs may read
    it), but zeroing all 512 bytes costs time at run and compile time, so a
    scan in the manner of the verifier's stack depth follows pointers derived
    from r10 by mov and add/sub of constants; anything else it cannot follow
    means zeroing all of it."""
    lo = 0            # lowest offset reached, directly or through tracked pointers
    escapes = False
    exact = True
    known = {}        # register -> offset from r10, within the current block
    for pc in range(f.start, f.end):
        ins = prog[pc]
        if ins is None:
            continue
        if pc in f.leaders:
            known = {}
        cls, code = ins.cls, ins.code
        src_is_reg = code & BPF_X
        # memory accesses
        base = ins.src if cls == BPF_LDX else ins.dst if cls in (BPF_ST, BPF_STX) else None
        if base == BPF_REG_FP:
            sz = SIZE_BYTES[ins.size]
            if ins.off < -MAX_BPF_STACK or ins.off + sz > 0:
                escapes, exact = True, False
            else:
                lo = min(lo, ins.off)
        elif base in known:
            lo = min(lo, known[base] + ins.off)
        if cls == BPF_ALU64 and ins.op == BPF_MOV and src_is_reg and ins.off == 0 and \
                (ins.src == BPF_REG_FP or ins.src in known):
            escapes = True
            known[ins.dst] = known.get(ins.src, 0)
            lo = min(lo, known[ins.dst])
            continue
        if cls == BPF_ALU64 and ins.dst in known and not src_is_reg and ins.op in (BPF_ADD, BPF_SUB):
            known[ins.dst] += ins.imm if ins.op == BPF_ADD else -ins.imm
            lo = min(lo, known[ins.dst])
            continue
        # r10 or a tracked pointer used as a value any other way
        if cls in (BPF_ALU, BPF_ALU64):
            if (src_is_reg and (ins.src == BPF_REG_FP or ins.src in known)) or ins.dst in known \
                    or ins.dst == BPF_REG_FP:
                escapes, exact = True, False
        elif cls == BPF_STX and (ins.src == BPF_REG_FP or ins.src in known):
            escapes, exact = True, False
        elif cls in (BPF_JMP, BPF_JMP32) and src_is_reg and BPF_REG_FP in (ins.src, ins.dst):
            escapes = True
        # register writes end tracking
        if cls in (BPF_ALU, BPF_ALU64, BPF_LDX, BPF_LD):
            known.pop(ins.dst, None)
        elif cls == BPF_STX and ins.mode == BPF_ATOMIC:
            known.pop(ins.src, None)
            known.pop(0, None)
        elif cls == BPF_JMP and ins.op == BPF_CALL:
            for r in range(6):
                known.pop(r, None)
    depth = (-max(lo, -MAX_BPF_STACK) + 7) & ~7
    if escapes:
        return MAX_BPF_STACK, True, depth if exact else MAX_BPF_STACK
    return depth, False, depth


class FuncGen:
    def __init__(self, prog, f, funcs_by_start, preds):
        self.prog = prog
        self.f = f
        self.by_start = funcs_by_start
        self.preds = preds
        # Test nodes of a compare tree that became a switch and that nothing
        # else reaches: their blocks are not emitted (nor planned again as
        # trees of their own, which cost more than all the rest of the IR).
        self.dead = set()
        self.out = []
        self.n = 0
        self.stack_size, self.stack_escapes, self.stack_zero = _stack_use(prog, f)
        self.helpers_ptr = None
        # Register -> its value in the current block (a load or the value last
        # stored): a register read twice in a block is loaded once, so the IR
        # every pass walks is smaller. Valid until the next block leader (the
        # blocks split off after calls have the one predecessor).
        self.cur = {}
        self.back_blocks = []     # (label, target pc, charge): emitted after the body
        self.has_back = any(ins is not None and ins.cls in (BPF_JMP, BPF_JMP32) and ins.op not in (BPF_CALL, BPF_EXIT)
                            and jump_target(ins) is not None and jump_target(ins) <= ins.pc
                            for ins in prog[f.start:f.end])
        self.budget = budget_plan(prog, f) if self.has_back else None
        self.entries = {}         # loop header pc -> the label of the block that charges its entry

    def left_out(self):
        """The frame's budget count to the thread's variable (before a call or a return)."""
        if self.has_back:
            self.e(f"store i32 {self.val('load i32, ptr %left')}, ptr addrspace(257) %leftp, align 4")

    def left_in(self):
        if self.has_back:
            self.e(f"store i32 {self.val('load i32, ptr addrspace(257) %leftp, align 4')}, ptr %left")

    def edge(self, pc, target):
        """The label an edge from pc (None: the function's start) to target
        branches to: the target, or a block that charges the run budget first:
        one for a back edge, a loop's bound for an entry into a loop the
        budget plan charges at its entry (loops.py)."""
        plan = self.budget
        if plan and target in plan.charge and (pc is None or pc not in plan.body[target]):
            if target not in self.entries:
                self.entries[target] = f"P{target}"
                self.back_blocks.append((f"P{target}", target, plan.charge[target]))
            return self.entries[target]
        if pc is not None and target <= pc and (not plan or plan.counted(pc, target)):
            lab = f"B{pc}_{len(self.back_blocks)}"
            self.back_blocks.append((lab, target, 1))
            return lab
        return f"L{target}"

    def emit_back_blocks(self):
        for lab, target, n in self.back_blocks:
            self.out.append(f"{lab}:")
            c = self.val("load i32, ptr %left")
            d = self.val(f"sub i32 {c}, {n}")
            self.e(f"store i32 {d}, ptr %left")
            z = self.val(f"icmp sle i32 {d}, 0")
            slow = self.label()
            self.e(f"br i1 {z}, label %{slow}, label %L{target}, !prof !1")
            self.out.append(f"{slow}:")
            self.e(f"store i32 {d}, ptr addrspace(257) %leftp, align 4")
            fn = self.val(f"load ptr, ptr @{IMPORT_PREFIX}bpf_rt_backedge, align 8, !invariant.load !0")
            self.e(f"call void {fn}()")
            self.left_in()
            self.e(f"br label %L{target}")

    # -- small emit helpers ------------------------------------------------
    def tmp(self):
        self.n += 1
        return f"%v{self.n}"

    def label(self):
        self.n += 1
        return f"X{self.n}"

    def e(self, line):
        self.out.append("  " + line)

    def val(self, expr):
        t = self.tmp()
        self.e(f"{t} = {expr}")
        return t

    def rd(self, r, pc):
        if r > BPF_REG_FP:
            raise AotError(f"invalid register r{r}", pc)
        if r == BPF_REG_FP:
            return "%fp"
        v = self.cur.get(r)
        if v is None:
            v = self.cur[r] = self.val(f"load i64, ptr %r{r}")
        return v

    def wr(self, r, v, pc):
        if r >= BPF_REG_FP:
            raise AotError(f"frame pointer r10 is read only" if r == BPF_REG_FP else f"invalid register r{r}", pc)
        self.e(f"store i64 {v}, ptr %r{r}")
        self.cur[r] = v

    def trunc32(self, v):
        if v.lstrip("-").isdigit():
            return str(((int(v) + 2**31) & 0xffffffff) - 2**31)
        return self.val(f"trunc i64 {v} to i32")

    def zext32(self, v):
        return self.val(f"zext i32 {v} to i64")

    def env_load(self, idx, slot):
        """env->field[slot] for field index idx (0 helpers, 1 maps, 2 map_values)."""
        tab = self.val(f"getelementptr inbounds ptr, ptr %env, i64 {idx}")
        base = self.val(f"load ptr, ptr {tab}, align 8, !invariant.load !0")
        p = self.val(f"getelementptr inbounds ptr, ptr {base}, i64 {slot}")
        return self.val(f"load ptr, ptr {p}, align 8, !invariant.load !0")

    def addr(self, base, off, size, pc):
        """Pointer for base register + off."""
        if base == BPF_REG_FP and -self.stack_size <= off and off + size <= 0:
            return self.val(f"getelementptr inbounds i8, ptr %stk, i64 {self.stack_size + off}")
        b = self.rd(base, pc)
        if off:
            b = self.val(f"add i64 {b}, {off}")
        return self.val(f"getelementptr i8, ptr %mem, i64 {b}")

    # -- the function ------------------------------------------------------
    def gen(self):
        f = self.f
        prog = self.prog
        name = _fname(f)
        if f.idx == 0:
            ret = "i64"
            self.out.append(f"define i64 @{name}(i64 %a1, ptr %env) #0 {{")
        else:
            ret = "{ i64, i1 }" if f.may_tail_call else "i64"
            self.out.append(f"define internal fastcc {ret} @{name}(i64 %a1, i64 %a2, i64 %a3, i64 %a4, "
                            f"i64 %a5, ptr %env) #0 {{")
        self.ret_ty = ret
        self.out.append("entry:")
        for r in range(10):
            self.e(f"%r{r} = alloca i64, align 8")
        self.e("%maygoto = alloca i64, align 8")
        self.e(f"store i64 {BPF_MAX_LOOPS}, ptr %maygoto")
        if self.has_back:
            self.e("%left = alloca i32, align 4")
            off = self.val(f"load i64, ptr @{IMPORT_PREFIX}bpf_rt_backedges_tpoff, align 8, !invariant.load !0")
            self.e(f"%leftp = inttoptr i64 {off} to ptr addrspace(257)")
            self.left_in()
        ssz = max(self.stack_size, 8)
        self.e(f"%stk = alloca [{ssz} x i8], align 16")
        nargs = 1 if f.idx == 0 else 5
        for r in range(10):
            self.e(f"store i64 {f'%a{r}' if 1 <= r <= nargs else 0}, ptr %r{r}")
        self.e(f"%fpp = getelementptr inbounds i8, ptr %stk, i64 {ssz}")
        self.e("%fp = ptrtoint ptr %fpp to i64")
        # Memory other than the own stack is addressed as %mem + address, %mem
        # being a null pointer the optimizer cannot see through (loaded from a
        # global it may not assume the value of): scalar evolution follows
        # such pointers (it does not follow inttoptr of each address), so loops
        # over memory get vectorized. When r10 escapes into registers, %mem is
        # made to depend on the stack address so that it comes after the escape
        # and pointers based on it may alias the stack.
        self.e(f"%z0 = load i64, ptr @{ZERO_NAME}, align 8, !invariant.load !0")
        if self.stack_escapes:
            self.e("%z = mul i64 %z0, %fp")
            self.e("%mem = inttoptr i64 %z to ptr")
        else:
            self.e("%mem = inttoptr i64 %z0 to ptr")
        if self.stack_zero:
            # Uninitialized stack must not be LLVM undef (privileged programs
            # may read it). Typed wide stores: an aggregate store is split bytewise.
            z0 = ssz - self.stack_zero
            o = z0
            while o < ssz:
                w = 32 if o % 32 == 0 and o + 32 <= ssz else 8
                self.e(f"%zs{o} = getelementptr inbounds i8, ptr %stk, i64 {o}")
                self.e(f"store {'<4 x i64> zeroinitializer' if w == 32 else 'i64 0'}, ptr %zs{o}, align 8")
                o += w
        self.e(f"br label %{self.edge(None, f.start)}")
        terminated = True
        prev = None
        for pc in range(f.start, f.end):
            ins = prog[pc]
            if ins is None or pc in self.dead:
                continue
            if pc in f.leaders:
                if not terminated:
                    self.e(f"br label %{self.edge(prev, pc)}")
                self.out.append(f"L{pc}:")
                self.cur = {}
            terminated = self.insn(ins)
            prev = pc
        if not terminated:
            raise AotError("falls off the end", f.end - 1)
        self.emit_back_blocks()
        self.out.append("}")
        return self.out

    def ret_normal(self):
        self.left_out()
        r0 = self.rd(0, None)
        if self.ret_ty == "i64":
            self.e(f"ret i64 {r0}")
        else:
            a = self.val(f"insertvalue {{ i64, i1 }} undef, i64 {r0}, 0")
            b = self.val(f"insertvalue {{ i64, i1 }} {a}, i1 false, 1")
            self.e(f"ret {{ i64, i1 }} {b}")

    def ret_abort(self):
        """Leave at once after a tail call (the run loop continues with its target)."""
        self.left_out()
        if self.ret_ty == "i64":
            self.e(f"ret i64 {self.rd(0, None)}")
        else:
            self.e("ret { i64, i1 } { i64 0, i1 true }")

    def check_tail_call(self):
        fn = self.val(f"load ptr, ptr @{IMPORT_PREFIX}bpf_rt_tail_call_pending, align 8, !invariant.load !0")
        p = self.val(f"call i32 {fn}()")
        c = self.val(f"icmp ne i32 {p}, 0")
        out, cont = self.label(), self.label()
        self.e(f"br i1 {c}, label %{out}, label %{cont}, !prof !1")
        self.out.append(f"{out}:")
        self.ret_abort()
        self.out.append(f"{cont}:")

    # -- one instruction; returns True if it ended the block ----------------
    def insn(self, ins):
        cls = ins.cls
        pc = ins.pc
        if cls in (BPF_ALU, BPF_ALU64):
            self.alu(ins)
        elif cls in (BPF_JMP, BPF_JMP32):
            return self.jmp(ins)
        elif cls == BPF_LDX:
            if ins.mode not in (BPF_MEM, BPF_MEMSX) or (ins.mode == BPF_MEMSX and ins.size == BPF_DW):
                raise AotError(f"invalid LDX opcode {ins.code:#04x}", pc)
            ty = _ITY[ins.size]
            p = self.addr(ins.src, ins.off, SIZE_BYTES[ins.size], pc)
            v = self.val(f"load {ty}, ptr {p}, align 1")
            if ins.size != BPF_DW:
                v = self.val(f"{'sext' if ins.mode == BPF_MEMSX else 'zext'} {ty} {v} to i64")
            self.wr(ins.dst, v, pc)
        elif cls == BPF_ST:
            if ins.mode != BPF_MEM:
                raise AotError(f"invalid ST opcode {ins.code:#04x}", pc)
            ty = _ITY[ins.size]
            bits = _BITS[ins.size]
            imm = ins.imm if bits >= 32 else ((ins.imm + (1 << (bits - 1))) & ((1 << bits) - 1)) - (1 << (bits - 1))
            p = self.addr(ins.dst, ins.off, SIZE_BYTES[ins.size], pc)
            self.e(f"store {ty} {imm}, ptr {p}, align 1")
        elif cls == BPF_STX:
            if ins.mode == BPF_MEM:
                ty = _ITY[ins.size]
                v = self.rd(ins.src, pc)
                if ins.size != BPF_DW:
                    v = self.val(f"trunc i64 {v} to {ty}")
                p = self.addr(ins.dst, ins.off, SIZE_BYTES[ins.size], pc)
                self.e(f"store {ty} {v}, ptr {p}, align 1")
            elif ins.mode == BPF_ATOMIC:
                self.atomic(ins)
            else:
                raise AotError(f"invalid STX opcode {ins.code:#04x}", pc)
        elif cls == BPF_LD:
            if not ins.is_lddw():
                self.ld_abs(ins)
                return False
            if ins.src == 0:
                v = ins.imm64 - (1 << 64) if ins.imm64 >= 1 << 63 else ins.imm64
                self.wr(ins.dst, str(v), pc)
            elif ins.src == BPF_PSEUDO_MAP_IDX:
                m = self.env_load(1, ins.imm & 0xffffffff)
                self.wr(ins.dst, self.val(f"ptrtoint ptr {m} to i64"), pc)
            elif ins.src == BPF_PSEUDO_MAP_IDX_VALUE:
                m = self.env_load(2, ins.imm & 0xffffffff)
                v = self.val(f"ptrtoint ptr {m} to i64")
                off = ins.imm64 >> 32
                if off:
                    v = self.val(f"add i64 {v}, {off}")
                self.wr(ins.dst, v, pc)
            elif ins.src == BPF_PSEUDO_FUNC:
                cb = self.by_start[pc + ins.imm + 1]
                self.wr(ins.dst, self.val(f"ptrtoint ptr @{_cbname(cb)} to i64"), pc)
            else:
                raise AotError(f"lddw with src_reg {ins.src} (unrelocated map or BTF reference)", pc)
        return False

    def ld_abs(self, ins):
        """LD_ABS/LD_IND as the kernel's rewrite (bpf_gen_ld_abs): bpf_rt_ld_abs
        on the skb in r6 at imm or src + imm (as an int); out of the packet
        the function returns 0."""
        pc = ins.pc
        if ins.mode == BPF_IND:
            off = self.trunc32(self.val(f"add i64 {self.rd(ins.src, pc)}, {ins.imm}"))
        elif ins.mode == BPF_ABS:
            off = str(ins.imm)
        else:
            raise AotError(f"invalid LD opcode {ins.code:#04x}", pc)
        fn = self.val(f"load ptr, ptr @{IMPORT_PREFIX}bpf_rt_ld_abs, align 8, !invariant.load !0")
        v = self.val(f"call i64 {fn}(i64 {self.rd(6, pc)}, i32 {off}, i32 {SIZE_BYTES[ins.size]})")
        bad = self.val(f"icmp slt i64 {v}, 0")
        out, cont = self.label(), self.label()
        self.e(f"br i1 {bad}, label %{out}, label %{cont}, !prof !1")
        self.out.append(f"{out}:")
        self.wr(0, "0", pc)
        self.ret_normal()
        self.out.append(f"{cont}:")
        self.wr(0, v, pc)

    def src_operand(self, ins, is64):
        """The second operand as an i64/i32 value (imm sign-extended to 64 / as i32)."""
        if ins.code & BPF_X:
            v = self.rd(ins.src, ins.pc)
            return v if is64 else self.trunc32(v)
        return str(ins.imm)

    def alu(self, ins):
        pc = ins.pc
        is64 = ins.cls == BPF_ALU64
        op = ins.op
        ty = "i64" if is64 else "i32"
        bits = 64 if is64 else 32
        if op == BPF_END:
            return self.endian(ins)
        if op == BPF_MOV:
            if ins.code & BPF_X:
                if is64 and ins.off == 1 and ins.imm in (1, 0x10000):
                    raise AotError("addr_space_cast (arena) is not supported", pc)
                v = self.rd(ins.src, pc)
                if ins.off:
                    if ins.off not in ((8, 16, 32) if is64 else (8, 16)):
                        raise AotError(f"invalid movsx offset {ins.off}", pc)
                    t = self.val(f"trunc i64 {v} to i{ins.off}")
                    v = self.val(f"sext i{ins.off} {t} to {ty}")
                    if not is64:
                        v = self.zext32(v)
                elif not is64:
                    v = self.zext32(self.trunc32(v))
            else:
                if ins.off:
                    raise AotError("invalid mov with offset", pc)
                v = str(ins.imm if is64 else ins.imm & 0xffffffff)
            self.wr(ins.dst, v, pc)
            return
        a = self.rd(ins.dst, pc)
        if not is64:
            a = self.trunc32(a)
        if op == BPF_NEG:
            r = self.val(f"sub {ty} 0, {a}")
        elif op in _ALU_SIMPLE:
            if ins.off:
                raise AotError(f"invalid ALU offset {ins.off}", pc)
            b = self.src_operand(ins, is64)
            r = self.val(f"{_ALU_SIMPLE[op]} {ty} {a}, {b}")
        elif op in _SHIFT:
            if ins.code & BPF_X:
                b = self.src_operand(ins, is64)
                b = self.val(f"and {ty} {b}, {bits - 1}")
            else:
                b = str(ins.imm & (bits - 1))
            r = self.val(f"{_SHIFT[op]} {ty} {a}, {b}")
        elif op in (BPF_DIV, BPF_MOD):
            if ins.off not in (0, 1):
                raise AotError(f"invalid div/mod offset {ins.off}", pc)
            b = self.src_operand(ins, is64)
            r = self.divmod(op, ins.off == 1, ty, a, b)
        else:
            raise AotError(f"invalid ALU opcode {ins.code:#04x}", pc)
        if not is64:
            r = self.zext32(r)
        self.wr(ins.dst, r, pc)

    def divmod(self, op, signed, ty, a, b):
        """The verifier-patched semantics: x/0 = 0, x%0 = x, signed x/-1 = -x, x%-1 = 0."""
        if b.lstrip("-").isdigit():
            k = int(b)
            if k == 0:
                return "0" if op == BPF_DIV else a
            if signed and k == -1:
                return self.val(f"sub {ty} 0, {a}") if op == BPF_DIV else "0"
            instr = ("sdiv" if signed else "udiv") if op == BPF_DIV else ("srem" if signed else "urem")
            return self.val(f"{instr} {ty} {a}, {k}")
        z = self.val(f"icmp eq {ty} {b}, 0")
        if signed:
            m1 = self.val(f"icmp eq {ty} {b}, -1")
            bad = self.val(f"or i1 {z}, {m1}")
            d = self.val(f"select i1 {bad}, {ty} 1, {ty} {b}")
            if op == BPF_DIV:
                q = self.val(f"sdiv {ty} {a}, {d}")
                n = self.val(f"sub {ty} 0, {a}")
                t = self.val(f"select i1 {m1}, {ty} {n}, {ty} {q}")
                return self.val(f"select i1 {z}, {ty} 0, {ty} {t}")
            q = self.val(f"srem {ty} {a}, {d}")
            t = self.val(f"select i1 {m1}, {ty} 0, {ty} {q}")
            return self.val(f"select i1 {z}, {ty} {a}, {ty} {t}")
        d = self.val(f"select i1 {z}, {ty} 1, {ty} {b}")
        if op == BPF_DIV:
            q = self.val(f"udiv {ty} {a}, {d}")
            return self.val(f"select i1 {z}, {ty} 0, {ty} {q}")
        q = self.val(f"urem {ty} {a}, {d}")
        return self.val(f"select i1 {z}, {ty} {a}, {ty} {q}")

    def endian(self, ins):
        pc = ins.pc
        if ins.imm not in (16, 32, 64):
            raise AotError(f"invalid endianness width {ins.imm}", pc)
        if ins.cls == BPF_ALU64:
            if ins.code & BPF_X:
                raise AotError(f"invalid opcode {ins.code:#04x}", pc)
            swap = True                     # bswap: unconditional
        else:
            swap = bool(ins.code & BPF_X)   # to_be on a little-endian host
        w = ins.imm
        v = self.rd(ins.dst, pc)
        if w == 64:
            if swap:
                v = self.val(f"call i64 @llvm.bswap.i64(i64 {v})")
        else:
            t = self.val(f"trunc i64 {v} to i{w}")
            if swap:
                t = self.val(f"call i{w} @llvm.bswap.i{w}(i{w} {t})")
            v = self.val(f"zext i{w} {t} to i64")
        self.wr(ins.dst, v, pc)

    def atomic(self, ins):
        pc = ins.pc
        size = ins.size
        op = ins.imm
        if op in (BPF_LOAD_ACQ, BPF_STORE_REL):
            ty = _ITY[size]
            nb = SIZE_BYTES[size]
            if op == BPF_LOAD_ACQ:
                p = self.addr(ins.src, ins.off, nb, pc)
                v = self.val(f"load atomic {ty}, ptr {p} acquire, align {nb}")
                if size != BPF_DW:
                    v = self.val(f"zext {ty} {v} to i64")
                self.wr(ins.dst, v, pc)
            else:
                v = self.rd(ins.src, pc)
                if size != BPF_DW:
                    v = self.val(f"trunc i64 {v} to {ty}")
                p = self.addr(ins.dst, ins.off, nb, pc)
                self.e(f"store atomic {ty} {v}, ptr {p} release, align {nb}")
            return
        if size not in (BPF_W, BPF_DW):
            raise AotError(f"invalid atomic size in opcode {ins.code:#04x}", pc)
        ty = _ITY[size]
        nb = SIZE_BYTES[size]
        v = self.rd(ins.src, pc)
        if size == BPF_W:
            v = self.val(f"trunc i64 {v} to i32")
        p = self.addr(ins.dst, ins.off, nb, pc)
        if op == BPF_CMPXCHG:
            exp = self.rd(0, pc)
            if size == BPF_W:
                exp = self.val(f"trunc i64 {exp} to i32")
            pair = self.val(f"cmpxchg ptr {p}, {ty} {exp}, {ty} {v} seq_cst seq_cst, align {nb}")
            old = self.val(f"extractvalue {{ {ty}, i1 }} {pair}, 0")
            if size == BPF_W:
                old = self.zext32(old)
            self.wr(0, old, pc)
            return
        if op == BPF_XCHG:
            rmw, fetch = "xchg", True
        elif op & ~BPF_FETCH in _RMW:
            rmw, fetch = _RMW[op & ~BPF_FETCH], bool(op & BPF_FETCH)
        else:
            raise AotError(f"invalid atomic operation {op:#x}", pc)
        old = self.val(f"atomicrmw {rmw} ptr {p}, {ty} {v} seq_cst, align {nb}")
        if fetch:
            if size == BPF_W:
                old = self.zext32(old)
            self.wr(ins.src, old, pc)

    def jmp(self, ins):
        pc = ins.pc
        op = ins.op
        is64 = ins.cls == BPF_JMP
        if op == BPF_EXIT:
            self.ret_normal()
            return True
        if op == BPF_CALL:
            if not is64:
                raise AotError(f"invalid opcode {ins.code:#04x}", pc)
            self.call(ins)
            return False
        if op == BPF_JA:
            self.e(f"br label %{self.edge(pc, jump_target(ins))}")
            return True
        if op == BPF_JCOND and is64 and ins.src == BPF_MAY_GOTO and not ins.code & BPF_X:
            # may_goto as the verifier rewrites it: a per-function loop budget;
            # once spent, the branch is taken.
            n = self.val("load i64, ptr %maygoto")
            z = self.val(f"icmp eq i64 {n}, 0")
            dec = self.val(f"sub i64 {n}, 1")
            nv = self.val(f"select i1 {z}, i64 0, i64 {dec}")
            self.e(f"store i64 {nv}, ptr %maygoto")
            self.e(f"br i1 {z}, label %{self.edge(pc, jump_target(ins))}, label %{self.edge(pc, pc + 1)}, !prof !2")
            return True
        if op not in _CMP and op != BPF_JSET:
            raise AotError(f"invalid jump opcode {ins.code:#04x}", pc)
        sw = switch_plan(self.prog, self.f, pc) if is64 and op in _CMP and not ins.code & BPF_X else None
        if sw:
            default, cases, nodes = sw
            self.drop_tree(pc, nodes)
            v = self.rd(ins.dst, pc)
            arms = " ".join(f"i64 {c - (1 << 64) if c >> 63 else c}, label %{self.edge(pc, t)}" for c, t in cases)
            self.e(f"switch i64 {v}, label %{self.edge(pc, default)} [ {arms} ]")
            return True
        a = self.rd(ins.dst, pc)
        ty = "i64" if is64 else "i32"
        if not is64:
            a = self.trunc32(a)
        b = self.src_operand(ins, is64)
        if op == BPF_JSET:
            t = self.val(f"and {ty} {a}, {b}")
            c = self.val(f"icmp ne {ty} {t}, 0")
        else:
            c = self.val(f"icmp {_CMP[op]} {ty} {a}, {b}")
        self.e(f"br i1 {c}, label %{self.edge(pc, jump_target(ins))}, label %{self.edge(pc, pc + 1)}")
        return True

    def drop_tree(self, root, nodes):
        """Mark dead the tree's nodes after root that only tree nodes reach
        (the root's switch replaces them; a node is one jump, its own block)."""
        dead = {n for n in nodes if n > root}
        changed = True
        while changed:
            changed = False
            for n in list(dead):
                if any(p != root and p not in dead for p in self.preds.get(n, ())):
                    dead.discard(n)
                    changed = True
        self.dead |= dead

    def call(self, ins):
        pc = ins.pc
        args = [self.rd(r, pc) for r in range(1, 6)]
        if ins.code & BPF_X:
            # callx (bpf_conformance): helper number in dst; out of range -> slot 0 (NULL: faults)
            idx = self.rd(ins.dst, pc)
            ok = self.val(f"icmp ult i64 {idx}, {HELPER_MAX}")
            idx = self.val(f"select i1 {ok}, i64 {idx}, i64 0")
            fn = self.env_load(0, idx)
            self.left_out()
            r = self.val(f"call i64 {fn}({', '.join('i64 ' + a for a in args)})")
            self.left_in()
            self.wr(0, r, pc)
            self.check_tail_call()
            return
        if ins.src == BPF_PSEUDO_CALL:
            callee = self.by_start[pc + ins.imm + 1]
            argl = ", ".join("i64 " + a for a in args) + ", ptr %env"
            self.left_out()
            if callee.may_tail_call:
                pair = self.val(f"call fastcc {{ i64, i1 }} @{_fname(callee)}({argl})")
                self.left_in()
                r = self.val(f"extractvalue {{ i64, i1 }} {pair}, 0")
                self.wr(0, r, pc)
                ab = self.val(f"extractvalue {{ i64, i1 }} {pair}, 1")
                out, cont = self.label(), self.label()
                self.e(f"br i1 {ab}, label %{out}, label %{cont}, !prof !1")
                self.out.append(f"{out}:")
                self.ret_abort()
                self.out.append(f"{cont}:")
            else:
                r = self.val(f"call fastcc i64 @{_fname(callee)}({argl})")
                self.left_in()
                self.wr(0, r, pc)
            return
        fn = self.env_load(0, ins.imm)
        self.left_out()
        r = self.val(f"call i64 {fn}({', '.join('i64 ' + a for a in args)})")
        self.left_in()
        self.wr(0, r, pc)
        if ins.imm == BPF_FUNC_tail_call:
            self.check_tail_call()


def module_ir(prog, funcs):
    """The whole program as LLVM IR text (entry function first: it must land at offset 0)."""
    by_start = {f.start: f for f in funcs}
    preds = predecessors(prog)
    lines = [
        'target triple = "x86_64-unknown-linux-gnu"',
        f"@{ZERO_NAME} = internal externally_initialized global i64 0, align 8",
    ] + [
        # One scalar global per import (an array would be split and renamed by GlobalOpt).
        f"@{IMPORT_PREFIX}{name} = internal externally_initialized global ptr null, align 8"
        for name in IMPORTS
    ] + [
        "",
    ]
    for f in funcs:
        lines += FuncGen(prog, f, by_start, preds).gen()
        lines.append("")
        if f.is_callback:
            lines += callback_ir(f)
            lines.append("")
    lines += [
        "declare i16 @llvm.bswap.i16(i16)",
        "declare i32 @llvm.bswap.i32(i32)",
        "declare i64 @llvm.bswap.i64(i64)",
        f"attributes #0 = {{ {FN_ATTRS} }}",
        "!0 = !{}",
        '!1 = !{!"branch_weights", i32 1, i32 2000}',
        '!2 = !{!"branch_weights", i32 1, i32 1000000}',
        "",
    ]
    return "\n".join(lines)
