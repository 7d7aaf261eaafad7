"""do_check(): the abstract interpretation of kernel/bpf/verifier.c, for the
program types, helpers and map types it models. Every path is followed with
register and stack states (regs.py, alu.py); states are kept at prune points
and a path whose state an explored one covers stops there; a state equal to
one of its own ancestors at a loop head is an infinite loop.

bpf-to-bpf calls get a frame each (State.callers: the caller frames; a
PTR_TO_STACK register names its frame), and after the walk the static call
graph is checked as check_max_stack_depth() checks it (depth, combined stack).

What it does not model (callbacks, kfuncs, BTF pointers, helpers and
map types without a prototype here, program types without a ctx model) makes
it give up on the program (Unmodelled): PROG_LOAD then takes the structural
checks' verdict, as before. It also never rejects on a path where a value it
knows less of than the kernel decided anything (regs.py: exact), so its
rejects are the kernel's.
"""
import errno

from . import alu as A
from . import ctx as C
from . import protos as P
from . import tnum as T
from ..isa import (
    BPF_LD as LD, BPF_LDX as LDX, BPF_ST as ST, BPF_STX as STX, BPF_ALU as ALU, BPF_JMP as JMP,
    BPF_JMP32 as JMP32, BPF_ALU64 as ALU64, SIZE_BYTES as SIZES, BPF_MEMSX as MEMSX,
    BPF_ATOMIC as ATOMIC, BPF_CALL as CALL, BPF_EXIT as EXIT, BPF_JA as JA,
    BPF_PSEUDO_CALL as PSEUDO_CALL, BPF_PSEUDO_FUNC as PSEUDO_FUNC, BPF_PSEUDO_MAP_IDX as PSEUDO_MAP_IDX,
    BPF_PSEUDO_MAP_IDX_VALUE as PSEUDO_MAP_IDX_VALUE, BPF_FETCH as FETCH, BPF_CMPXCHG as CMPXCHG,
    BPF_LD_IMM64 as LDDW, MAX_BPF_STACK,
)
from .regs import (CTX, FUNC, M32, M64, MAP_KEY, MAP_PTR, MAP_VALUE, MAX_VAR_OFF, MEM, NOT_INIT, PACKET,
                   PACKET_END, PACKET_META, RINGBUF_MEM, SCALAR, SK_POINTERS, SOCK_COMMON, SOCKET, STACK, TCP_SOCK, Reg,
                   Unmodelled, s64,
                   scalar_const)

MAX_CALL_FRAMES = 8
MAX_PACKET_OFF = 0xFFFF
BEYOND_PKT_END, AT_PKT_END = -1, -2     # a packet pointer's range past the end, at it
MAX_ERRNO = 4095
# the register type of a helper's socket pointer, by its return type
SOCK_RET = {P.SOCKET_OR_NULL: SOCKET, P.SOCK_COMMON_OR_NULL: SOCK_COMMON, P.TCP_SOCK_OR_NULL: TCP_SOCK}
# reg_type_mismatch_ok(): the pointers a load or store insn is rewritten for
AUX_STRICT = {CTX, *SK_POINTERS}
# bpfshim's own budget: beyond it the program is not interpreted (the
# kernel's limit, BPF_COMPLEXITY_LIMIT_INSNS, is 1M processed insns; this
# model prunes less, so it may need more to reach the same verdict)
BUDGET_INSNS = 10_000
MAX_STATES_PER_INSN = 16
# outside loops the states at one insn are bounded by the paths to it
MAX_STATES_PER_INSN_ACYCLIC = 64

# the program types whose subprograms may run on a private stack, where the
# combined stack limit is not the kernel's verdict (bpf_enable_priv_stack;
# measured on 6.18: perf_event programs load with 504+504 bytes, kprobe,
# tracepoint and raw_tracepoint ones are refused)
PRIV_STACK_PROG_TYPES = {C.PERF_EVENT}


# try_match_pkt_pointers(): op -> (the taken branch has the range, range_right_open)
PKT_LEFT = {0x20: (False, False), 0xA0: (True, True), 0x30: (False, True), 0xB0: (True, False)}    # pkt op end
PKT_RIGHT = {0x20: (True, True), 0xA0: (False, False), 0x30: (True, False), 0xB0: (False, True)}   # end op pkt


_NR_CPU_IDS = []


def nr_cpu_ids():
    """The kernel's nr_cpu_ids: the possible CPUs (bpf_get_smp_processor_id's range)."""
    if not _NR_CPU_IDS:
        try:
            with open("/sys/devices/system/cpu/possible") as f:
                _NR_CPU_IDS.append(int(f.read().strip().split(",")[-1].split("-")[-1]) + 1)
        except (OSError, ValueError):
            _NR_CPU_IDS.append(0)
    if not _NR_CPU_IDS[0]:
        raise Unmodelled("nr_cpu_ids unknown")
    return _NR_CPU_IDS[0]


class MapInfo:
    """What do_check needs of a map (from its struct shm_map_attr and BTF)."""
    __slots__ = ("map_type", "key_size", "value_size", "max_entries", "map_flags", "special", "inner")

    def __init__(self, obj):
        a = obj.attr
        self.map_type, self.key_size, self.value_size = a.map_type, a.key_size, a.value_size
        self.max_entries, self.map_flags = a.max_entries, a.map_flags
        # a map of maps: its template (bpf_map_meta_alloc), what a lookup's pointer is to
        self.inner = None
        if a.map_type in P.MAP_IN_MAP:
            inner = MapInfo.__new__(MapInfo)
            inner.map_type, inner.key_size, inner.value_size = (a.inner_map_type, a.inner_key_size,
                                                                a.inner_value_size)
            inner.max_entries, inner.map_flags, inner.special, inner.inner = (a.inner_max_entries,
                                                                              a.inner_map_flags, False, None)
            self.inner = inner
        # fields the kernel gives rules of their own (bpf_spin_lock, bpf_timer, kptrs): not modelled
        btf = getattr(obj, "btf", None)
        self.special = a.spin_lock_off >= 0 or (btf is not None and obj.btf_value_type_id and (
            btf.btf.find_member_struct(obj.btf_value_type_id, "bpf_timer") >= 0 or
            any(t[0] == BTF_KIND_TYPE_TAG for t in btf.btf.types[1:])))


BTF_KIND_TYPE_TAG = 18


class Reject(Exception):
    def __init__(self, err, msg):
        super().__init__(msg)
        self.errno, self.msg = err, msg


class Slot:
    """One 8-byte stack slot: a type per byte ('I' STACK_INVALID, 'M'
    STACK_MISC, 'Z' STACK_ZERO, 'S' STACK_SPILL: the low bytes, all 8 or
    those of a narrow spill) and the spilled register."""
    __slots__ = ("types", "reg")

    def __init__(self, types="IIIIIIII", reg=None):
        self.types, self.reg = types, reg


class Frame:
    """A caller's frame while its callee runs (struct bpf_func_state).
    cb: the callee is a callback of the helper call at callsite, and
    returns a value in this (min, max) range (callback_ret_range)."""
    __slots__ = ("regs", "stack", "callsite", "subprog", "cb")

    def __init__(self, regs, stack, callsite, subprog, cb=None):
        self.regs, self.stack, self.callsite, self.subprog, self.cb = regs, stack, callsite, subprog, cb

    def copy(self):
        return Frame([r.copy() for r in self.regs], dict(self.stack), self.callsite, self.subprog, self.cb)


class State:
    """The current frame's registers and stack, the callers' frames below it."""
    __slots__ = ("regs", "stack", "callers", "subprog", "refs", "inexact", "parent", "branches", "insn", "unroll")

    def copy(self):
        s = State.__new__(State)
        s.regs = [r.copy() for r in self.regs]
        s.stack = dict(self.stack)      # slots are replaced, never changed in place
        s.callers = [f.copy() for f in self.callers] if self.callers else []
        s.subprog = self.subprog
        s.unroll = self.unroll      # callbacks entered on this path (callback_unroll_depth)
        s.refs = list(self.refs)
        s.inexact = self.inexact
        s.parent = self.parent
        s.branches = 1
        s.insn = self.insn
        return s


class Checker:
    def __init__(self, insns, prog_type, maps, log, ffi, prog_flags=0, expected_attach_type=0):
        self.insns = insns
        self.n = len(insns)
        self.prog_type = prog_type
        self.maps = maps                  # index -> map attr (map_type, key_size, value_size, ...)
        self.log = log
        self.ffi = ffi
        self.strict = bool(prog_flags & 1) and not (prog_flags & 2)
        self.expected_attach_type = expected_attach_type
        self.id_gen = 0
        self.processed = 0
        self.bad_helpers = {}
        self.ctx = C.Ctx(prog_type, expected_attach_type, ffi)
        # subprograms (check_subprogs: the structural pass checked their bounds)
        self.starts = sorted({0} | {k + x.imm + 1 for k, x in enumerate(insns) if self.calls_subprog(x)})
        self.subprog_of = {a: k for k, a in enumerate(self.starts)}
        self.stack_depth = [0] * len(self.starts)     # bytes each subprogram's frame reached
        self.aux_ptr = {}       # load/store insn -> the pointer type it was first checked with
        self._cyclic = None

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def calls_subprog(x):
        """A bpf-to-bpf call or a callback's address (bpf_pseudo_call/_func)."""
        return (x.code == JMP | CALL and x.src == PSEUDO_CALL) or (x.code == LDDW and x.src == PSEUDO_FUNC)

    def new_id(self):
        self.id_gen += 1
        return self.id_gen

    def reject(self, st, err, msg, *regs):
        if st.inexact or any(not r.exact for r in regs):
            raise Unmodelled(f"would reject ({msg}) on a path this model knows less of than the kernel")
        raise Reject(err, msg)

    def reg(self, st, r):
        x = st.regs[r]
        if x.type == NOT_INIT:
            self.reject(st, errno.EACCES, f"R{r} !read_ok")
        return x

    # ---------------------------------------------------------------- CFG facts
    def cfg(self):
        """Prune points (jump targets, conditional jumps, after calls) and the
        registers live into each instruction (a backward dataflow)."""
        n, ins = self.n, self.insns
        prune = set()
        succ = [[] for _ in range(n)]
        i = 0
        while i < n:
            x = ins[i]
            c = x.code
            cls = c & 7
            if c == LDDW:
                succ[i] = [i + 2]
                i += 2
                continue
            if cls in (JMP, JMP32):
                op = c & 0xF0
                if op == EXIT:
                    succ[i] = []
                elif op == CALL:
                    succ[i] = [i + 1]
                    prune.add(i + 1)
                    if (x.src == PSEUDO_CALL or (x.src == 0 and x.imm in P.CALLBACKS)) and cls == JMP:
                        prune.add(i)
                elif op == JA:
                    t = i + (x.imm if cls == JMP32 else x.off) + 1
                    succ[i] = [t]
                    prune.add(t)
                else:
                    t = i + x.off + 1
                    succ[i] = [i + 1, t]
                    prune.add(i)
                    prune.add(t)
            else:
                succ[i] = [i + 1]
            i += 1
        # liveness: uses/defs per insn, iterated to a fixpoint
        use, dfn = [0] * n, [0] * n
        for i in range(n):
            use[i], dfn[i] = self._use_def(ins[i])
        live = self.backward(succ, lambda i, out: use[i] | (out & ~dfn[i]))
        self.succ = succ
        return prune, live

    def cyclic(self):
        """The insns on a cycle of the control flow graph (in a loop)."""
        if self._cyclic is None:
            n, succ = self.n, self.succ
            index, low, on, stack, out = {}, {}, set(), [], set()
            counter = 0
            for root in range(n):
                if root in index:
                    continue
                work = [(root, 0)]
                while work:        # Tarjan's strongly connected components, iteratively
                    v, k = work.pop()
                    if k == 0:
                        index[v] = low[v] = counter
                        counter += 1
                        stack.append(v)
                        on.add(v)
                    ss = [t for t in succ[v] if t < n]
                    if k < len(ss):
                        work.append((v, k + 1))
                        t = ss[k]
                        if t not in index:
                            work.append((t, 0))
                        elif t in on:
                            low[v] = min(low[v], index[t])
                        continue
                    for t in ss:
                        if t in on:
                            low[v] = min(low[v], low[t])
                    if low[v] == index[v]:
                        comp = []
                        while True:
                            w = stack.pop()
                            on.discard(w)
                            comp.append(w)
                            if w == v:
                                break
                        if len(comp) > 1 or v in ss:
                            out.update(comp)
            self._cyclic = out
        return self._cyclic

    def backward(self, succ, step):
        """A backward dataflow to its fixpoint: per insn, step(i, the union
        over its successors)."""
        n = self.n
        val = [0] * (n + 2)
        changed = True
        while changed:
            changed = False
            for i in range(n - 1, -1, -1):
                out = 0
                for t in succ[i]:
                    if t < n:
                        out |= val[t]
                v = step(i, out)
                if v != val[i]:
                    val[i] = v
                    changed = True
        return val

    # the bits of a need mask: registers 0-10, then the current frame's stack
    # slots (slot k, bytes [-8(k+1), -8k), at bit SLOT0 + k)
    SLOT0 = 16
    ALL_SLOTS = ((1 << (MAX_BPF_STACK // 8)) - 1) << SLOT0

    def _slots(self, off, size):
        """The need bits of the slots that [r10 + off, + size) touches."""
        m = 0
        for a in range(off, off + size):
            k = -(a // 8) - 1
            if 0 <= k < MAX_BPF_STACK // 8:
                m |= 1 << (self.SLOT0 + k)
        return m

    def precision_needs(self, succ):
        """For each insn, the registers and own stack slots whose scalar
        value may still decide a check (a superset of what the kernel's
        precision tracking, mark_chain_precision(), would mark): the
        operands of conditional jumps, memory access bases, pointer
        arithmetic, helper and subprogram arguments, r0 at exit, and what
        flows into them through ALU ops and stack spills. State pruning
        ignores the values of other scalars, as the kernel's states_equal()
        ignores imprecise ones. A load through a pointer that may point into
        the stack makes every slot needed (a fill this pass cannot place)."""
        n, ins = self.n, self.insns
        b = lambda r: 1 << r
        # registers that may hold a stack pointer (forward; subprogram
        # arguments may be the caller's), and whether any is stored to memory
        fp_in = [None] * n
        escapes = False
        for _round in range(2):
            fp_in = [None] * n
            work = []
            for a in self.starts:
                fp_in[a] = b(10) | (0x3E if a else 0)
                work.append(a)
            stored = False
            while work:
                i = work.pop()
                m = fp_in[i]
                x = ins[i]
                c, cls = x.code, x.code & 7
                out = m
                if c == LDDW:
                    out = m & ~b(x.dst)
                elif cls in (ALU, ALU64):
                    op = c & 0xF0
                    if cls == ALU:
                        out = m & ~b(x.dst)
                    elif op == A.MOV:
                        out = (m & ~b(x.dst)) | ((b(x.dst) if m >> x.src & 1 else 0) if c & 8 else 0)
                    elif c & 8 and m >> x.src & 1:
                        out = m | b(x.dst)
                elif cls == LDX:
                    out = m & ~b(x.dst)
                    if escapes and m >> x.src & 1:
                        out |= b(x.dst)
                elif cls == STX:
                    if m >> x.src & 1:
                        stored = True
                    if (c & 0xE0) == ATOMIC:
                        out = m & ~(b(0) | b(x.src))
                elif cls in (JMP, JMP32) and (c & 0xF0) == CALL:
                    out = m & ~0x3F
                for t in succ[i]:
                    if t < n:
                        nm = out if fp_in[t] is None else fp_in[t] | out
                        if nm != fp_in[t]:
                            fp_in[t] = nm
                            work.append(t)
            if not stored or escapes:
                break
            escapes = True
        all_slots = False
        for i in range(n):
            x = ins[i]
            cls = x.code & 7
            if fp_in[i] is not None and ((cls == LDX and x.src != 10 and fp_in[i] >> x.src & 1) or
                                         (cls == STX and (x.code & 0xE0) == ATOMIC and x.dst != 10 and
                                          fp_in[i] >> x.dst & 1)):
                all_slots = True
                break
        extra = self.ALL_SLOTS if all_slots else 0
        return self.backward(succ, lambda i, out: self._need_step(ins[i], out) | extra)

    def _need_step(self, x, out):
        """The need mask before insn x, from the one after it."""
        c = x.code
        cls = c & 7
        b = lambda r: 1 << r
        if c == LDDW:
            return out & ~b(x.dst)
        if cls in (ALU, ALU64):
            op = c & 0xF0
            d = out >> x.dst & 1
            if op == A.MOV:
                return (out & ~b(x.dst)) | (b(x.src) if c & 8 and d else 0)
            if c & 8 and op in (A.ADD, A.SUB) and cls == ALU64:
                return out | b(x.dst) | b(x.src)       # pointer arithmetic checks both
            if c & 8 and d and op not in (A.NEG, A.END):
                return out | b(x.src)
            return out
        size = SIZES.get(c & 0x18, 8)
        if cls == LDX:
            v = (out & ~b(x.dst)) | b(x.src)
            if x.src == 10 and out >> x.dst & 1:
                v |= self._slots(x.off, size)
            return v
        if cls == ST:
            v = out | b(x.dst)
            if x.dst == 10 and size == 8 and x.off % 8 == 0:
                v &= ~self._slots(x.off, 8)
            return v
        if cls == STX:
            if (c & 0xE0) == ATOMIC:
                v = out | b(x.dst) | b(x.src) | b(0)
                return v | self._slots(x.off, size) if x.dst == 10 else v
            v = out | b(x.dst)
            if x.dst != 10:
                return v | b(x.src)         # a store the stack slots here do not see
            sl = self._slots(x.off, size)
            needed = out & sl
            if size == 8 and x.off % 8 == 0:
                v &= ~sl
            return v | (b(x.src) if needed else 0)
        if cls == LD:
            return out | 0x7FF
        op = c & 0xF0
        if op == EXIT:
            return out | b(0)
        if op == CALL:
            proto = P.PROTOS.get(x.imm) if x.src == 0 else None
            if proto is None:
                return (out & ~0x3F) | 0x3E
            # of a helper's arguments only the sizes are checked by value
            return (out & ~0x3F) | sum(b(k + 1) for k, at in enumerate(proto[2])
                                       if at in (P.SIZE, P.SIZE0, P.ALLOC_SIZE0))
        if op == JA:
            return out
        return out | b(x.dst) | (b(x.src) if c & 8 else 0)

    @staticmethod
    def _use_def(x):
        c = x.code
        cls = c & 7
        b = lambda *rs: sum(1 << r for r in rs)
        if c == LDDW:
            return 0, b(x.dst)
        if cls in (ALU, ALU64):
            op = c & 0xF0
            if op == A.MOV:
                return (b(x.src) if c & 8 else 0), b(x.dst)
            return b(x.dst) | (b(x.src) if c & 8 and op not in (A.NEG, A.END) else 0), b(x.dst)
        if cls == LDX:
            return b(x.src), b(x.dst)
        if cls == ST:
            return b(x.dst), 0
        if cls == STX:
            u = b(x.dst, x.src)
            if (c & 0xE0) == ATOMIC:
                if x.imm == CMPXCHG:
                    return u | 1, 1
                if x.imm & FETCH:
                    return u, b(x.src)
            return u, 0
        if cls == LD:
            return b(6) | (b(x.src) if c & 0xE0 == 0x40 else 0), 0x3F   # LD_ABS/IND: the skb in r6, r0-r5 set
        op = c & 0xF0
        if op == EXIT:
            return 1, 0
        if op == CALL:
            return 0x3E, 0x3F
        if op == JA:
            return 0, 0
        return b(x.dst) | (b(x.src) if c & 8 else 0), 0

    # ---------------------------------------------------------------- main loop
    def run(self):
        if self.prog_type not in C.MODELLED:
            raise Unmodelled("program type")
        self.prune, self.live = self.cfg()
        self.need = None        # precision_needs(), at the first state comparison
        explored = {}
        st = State()
        st.regs = [Reg() for _ in range(11)]
        st.regs[1] = Reg(CTX)
        st.regs[10] = Reg(STACK)
        st.regs[10].known(0)
        st.regs[1].known(0)
        st.stack, st.refs, st.inexact, st.parent, st.branches, st.insn = {}, [], False, None, 1, 0
        st.callers, st.subprog, st.unroll = [], 0, 0
        pending = []
        while True:
            if st is None:
                if not pending:
                    self.check_max_stack_depth()
                    return self.processed
                st = pending.pop()
            i = st.insn
            if i in self.prune:
                if self.visited(explored, i, st):
                    self.path_done(st)
                    st = None
                    continue
            self.processed += 1
            if self.processed > BUDGET_INSNS:
                raise Unmodelled("complexity beyond this model's budget")
            nxt = self.step(st, i, pending)
            if nxt is None:
                self.path_done(st)
                st = None
            else:
                st.insn = nxt

    def path_done(self, st):
        p = st.parent
        while p is not None:
            p.branches -= 1
            if p.branches:
                break
            p = p.parent

    def visited(self, explored, i, cur):
        live = self.live[i]
        lst = explored.setdefault(i, [])
        x = self.insns[i]
        callback_site = x.code == JMP | CALL and x.src == 0 and x.imm in P.CALLBACKS
        for old in lst:
            if old.branches and callback_site:
                # a callback called again: the iterations converge when a
                # state in progress there covers this one (is_state_visited)
                if self.need is None:
                    self.need = self.precision_needs(self.succ)
                if self.states_cover(old, cur, live, self.need[i]):
                    return True
                continue
            if old.branches:
                if self.states_exact(old, cur, live):
                    self.reject(cur, errno.EINVAL, f"infinite loop detected at insn {i}")
                continue
            if self.need is None:
                self.need = self.precision_needs(self.succ)
            if self.states_cover(old, cur, live, self.need[i]):
                return True
        snap = cur.copy()
        snap.parent = cur.parent
        snap.branches = 1
        cur.parent = snap
        lst.append(snap)
        if len(lst) > (MAX_STATES_PER_INSN if i in self.cyclic() else MAX_STATES_PER_INSN_ACYCLIC):
            # a loop this model does not see the end of soon: the kernel
            # may still accept it (it has 1M insns), or say it is too large
            raise Unmodelled("too many states at one insn")
        return False

    # ---------------------------------------------------------------- state comparison
    def same_frames(self, old, cur, live, need=-1):
        """The frames to compare, with the registers live in each and the
        need mask (precision_needs) of the current one: the same call chain
        (callsite by callsite) or None. A caller's live registers are the
        callee-saved ones live after its call; all of its values count."""
        if len(old.callers) != len(cur.callers) or \
                any(o.callsite != c.callsite for o, c in zip(old.callers, cur.callers)):
            return None
        out = [(old.regs, old.stack, cur.regs, cur.stack, live, need)]
        for o, c in zip(old.callers, cur.callers):
            out.append((o.regs, o.stack, c.regs, c.stack, self.live[o.callsite + 1] & 0x3C0, -1))
        return out

    def states_exact(self, old, cur, live):
        if old.refs != cur.refs or old.unroll != cur.unroll:
            return False
        frames = self.same_frames(old, cur, live)
        if frames is None:
            return False
        for oregs, ostack, cregs, cstack, lv, _need in frames:
            for r in range(11):
                if lv >> r & 1 and oregs[r].key() != cregs[r].key():
                    return False
            if ostack.keys() != cstack.keys():
                return False
            for k, s in ostack.items():
                c = cstack[k]
                if s.types != c.types or (s.reg is None) != (c.reg is None) or \
                        (s.reg is not None and s.reg.key() != c.reg.key()):
                    return False
        return True

    def states_cover(self, old, cur, live, need):
        """states_equal(): every run from cur is one old has been checked for."""
        if [r[0] for r in old.refs] != [r[0] for r in cur.refs] or old.inexact != cur.inexact:
            return False
        frames = self.same_frames(old, cur, live, need)
        if frames is None:
            return False
        idmap = {}
        return all(self.frame_covers(*f, idmap) for f in frames)

    def frame_covers(self, oregs, ostack, cregs, cstack, live, need, idmap):
        for r in range(11):
            if live >> r & 1:
                o, c = oregs[r], cregs[r]
                if not need >> r & 1 and o.type == SCALAR and c.type == SCALAR:
                    continue        # a scalar no check depends on: any value will do
                if not self.regsafe(o, c, idmap):
                    return False
        for k, s in ostack.items():
            c = cstack.get(k)
            for b in range(8):
                ot = s.types[b]
                if ot in "IM":      # uninit stack is readable by root: MISC covers anything
                    continue
                ct = c.types[b] if c is not None else "I"
                if ot != ct:
                    return False
            if s.reg is not None and (c is None or c.reg is None or not self.regsafe(s.reg, c.reg, idmap)):
                if not (c is not None and c.reg is not None and s.reg.type == SCALAR and c.reg.type == SCALAR and
                        0 <= -k - 1 < MAX_BPF_STACK // 8 and not need >> (self.SLOT0 - k - 1) & 1):
                    return False
        return True

    @staticmethod
    def regsafe(o, c, idmap):
        if o.type == NOT_INIT:
            return True
        if c.type != o.type or o.null != c.null or o.exact != c.exact:
            return False
        if o.id or c.id:
            if idmap.setdefault(o.id, c.id) != c.id:
                return False
        if not (o.smin <= c.smin and c.smax <= o.smax and o.umin <= c.umin and c.umax <= o.umax and
                o.s32min <= c.s32min and c.s32max <= o.s32max and o.u32min <= c.u32min and
                c.u32max <= o.u32max and T.tnum_in(o.var, c.var)):
            return False
        if o.type == SCALAR:
            return True
        if o.off != c.off or o.map is not c.map or o.size != c.size or o.ref != c.ref or o.frame != c.frame:
            return False
        if o.type in (PACKET, PACKET_META) and o.range > c.range:
            return False
        return True

    # ---------------------------------------------------------------- one instruction
    def step(self, st, i, pending):
        x = self.insns[i]
        c = x.code
        cls = c & 7
        regs = st.regs
        if x.dst == 10 and (cls in (ALU, ALU64, LDX) or c == LDDW):
            if cls == LDX or (cls != LD and c & 8):
                self.reg(st, x.src)         # the source is checked first
            self.reject(st, errno.EACCES, "frame pointer is read only")      # check_reg_arg(DST_OP)
        if cls in (ALU, ALU64):
            self.check_alu(st, x)
            return i + 1
        if c == LDDW:
            self.ld_imm64(st, i, x)
            return i + 2
        if cls == LD:
            self.check_ld_abs(st, x)
            return i + 1
        if cls == LDX:
            size = SIZES[c & 0x18]
            src = self.reg(st, x.src)
            val = Reg(SCALAR)
            self.check_mem_access(st, x.src, src, x.off, size, "read", val, sx=(c & 0xE0) == MEMSX)
            self.save_aux_ptr_type(st, i, src)
            regs[x.dst] = val
            return i + 1
        if cls == ST or cls == STX:
            size = SIZES[c & 0x18]
            dst = self.reg(st, x.dst)
            if cls == STX and (c & 0xE0) == ATOMIC:
                self.check_atomic(st, x, dst, size)
                return i + 1
            if cls == STX:
                val = self.reg(st, x.src)
            else:
                val = scalar_const(x.imm)
            self.check_mem_access(st, x.dst, dst, x.off, size, "write", val, st_imm=cls == ST)
            self.save_aux_ptr_type(st, i, dst)
            return i + 1
        op = c & 0xF0
        if op == CALL:
            if x.src == PSEUDO_CALL:
                return self.check_func_call(st, i, x)
            if x.src:
                raise Unmodelled("kfunc calls")
            self.check_helper_call(st, i, x, pending)
            return i + 1
        if op == EXIT:
            if st.callers:
                return self.prepare_func_exit(st)
            self.check_exit(st)
            return None
        if op == JA:
            return i + (x.imm if cls == JMP32 else x.off) + 1
        return self.check_cond_jmp(st, i, x, pending)

    def save_aux_ptr_type(self, st, i, reg):
        """One load or store insn is rewritten for one kind of pointer: ctx
        accesses are converted, so a ctx pointer on one path and another
        pointer on another cannot share it."""
        prev = self.aux_ptr.setdefault(i, reg.type)
        if prev != reg.type and (prev in AUX_STRICT or reg.type in AUX_STRICT):
            self.reject(st, errno.EINVAL, "same insn cannot be used with different pointers")

    def check_ld_abs(self, st, x):
        """check_ld_abs(): a packet load through the skb in r6 (socket
        filter, tc), r1-r5 clobbered, r0 the value."""
        if self.prog_type not in (C.SOCKET_FILTER, C.SCHED_CLS, C.SCHED_ACT):
            self.reject(st, errno.EINVAL, "BPF_LD_[ABS|IND] instructions not allowed for this program type")
        if x.dst or x.off or (x.code & 0xE0 == 0x20 and x.src):
            self.reject(st, errno.EINVAL, "BPF_LD_[ABS|IND] uses reserved fields")
        r6 = self.reg(st, 6)
        if st.refs:
            self.reject(st, errno.EINVAL, "BPF_LD_[ABS|IND] would lead to reference leak")
        if r6.type != CTX:
            self.reject(st, errno.EINVAL, "at the time of BPF_LD_ABS|IND R6 != pointer to skb")
        if x.code & 0xE0 == 0x40:
            self.reg(st, x.src)
        if r6.off or not T.is_const(r6.var) or r6.var[0]:
            raise Unmodelled("LD_ABS through a modified ctx")
        for r in range(1, 6):
            st.regs[r] = Reg()
        st.regs[0] = Reg(SCALAR)
        st.regs[0].unknown()

    # ---------------------------------------------------------------- ALU
    def check_alu(self, st, x):
        c = x.code
        alu32 = (c & 7) == ALU
        op = c & 0xF0
        regs = st.regs
        if op == A.END:
            d = self.reg(st, x.dst)
            # a pointer's bytes swapped: a scalar (allow_ptr_leaks)
            regs[x.dst] = Reg(SCALAR)
            regs[x.dst].exact = d.exact
            if alu32 and x.imm < 64:
                r = regs[x.dst]
                if x.imm == 16:
                    r.var = T.tnum_range(0, 0xFFFF)
                r.zext32() if x.imm == 32 else None
                r.sync()
            return
        if op == A.MOV:
            if c & 8:
                s = self.reg(st, x.src)
                if x.off:       # movsx
                    r = Reg(SCALAR)
                    if s.type == SCALAR and s.is_const():
                        bits = x.off
                        v = s.var[0] & ((1 << bits) - 1)
                        if v >> (bits - 1):
                            v -= 1 << bits
                        r.known(v & (M32 if alu32 else M64))
                    else:
                        r.exact = False
                    regs[x.dst] = r
                    return
                if alu32:
                    if s.is_ptr():
                        # the kernel: a pointer's low half is an unknown scalar
                        r = Reg(SCALAR)
                    else:
                        r = s.copy()
                        r.id = 0
                        r.zext32()
                        r.sync()
                    regs[x.dst] = r
                    return
                r = s.copy()
                if r.type == SCALAR and not r.id and not r.is_const():
                    s.id = r.id = self.new_id()      # linked scalars: a bound on one is a bound on both
                regs[x.dst] = r
                return
            r = Reg(SCALAR)
            r.known((x.imm & M32) if alu32 else x.imm)
            regs[x.dst] = r
            return
        d = self.reg(st, x.dst)
        if op == A.NEG:
            if d.is_ptr():
                regs[x.dst] = Reg(SCALAR)   # allow_ptr_leaks
                return
            r = d.copy()
            r.id = 0
            A.scalar_neg(r, alu32)
            regs[x.dst] = r
            return
        s = self.src_operand(st, x, alu32)
        if d.is_ptr() or s.is_ptr():
            regs[x.dst] = self.ptr_alu(st, x, d, s, op, alu32)
            return
        r = d.copy()
        r.id = 0
        A.scalar_alu(r, s, op, alu32)
        regs[x.dst] = r

    def src_operand(self, st, x, is32):
        """The source register, or the immediate as a scalar (sign-extended
        to 64 bits, or its low 32 for 32-bit operations)."""
        if x.code & 8:
            return self.reg(st, x.src)
        return scalar_const(x.imm & M32 if is32 else x.imm)

    _OPNAME = {A.ADD: "+=", A.SUB: "-=", A.MUL: "*=", A.DIV: "/=", A.OR: "|=", A.AND: "&=", A.LSH: "<<=",
               A.RSH: ">>=", A.MOD: "%=", A.XOR: "^=", A.ARSH: "s>>="}

    def ptr_alu(self, st, x, d, s, op, alu32):
        """adjust_ptr_min_max_vals()."""
        dn = x.dst
        if d.is_ptr() and s.is_ptr():
            if op == A.SUB and not alu32:
                return Reg(SCALAR)          # allow_ptr_leaks: the difference is a scalar
            self.reject(st, errno.EACCES, f"R{dn} pointer {self._OPNAME.get(op, '?')} pointer prohibited")
        if alu32:
            if op == A.SUB:
                return Reg(SCALAR)          # allow_ptr_leaks: a meaningless scalar
            self.reject(st, errno.EACCES, f"R{dn} 32-bit pointer arithmetic prohibited")
        ptr, off_reg = (d, s) if d.is_ptr() else (s, d)
        if not d.is_ptr():
            # scalar op= pointer
            if op == A.SUB:
                self.reject(st, errno.EACCES, f"R{dn} tried to subtract pointer from scalar")
            if op != A.ADD:
                self.reject(st, errno.EACCES, self._ptr_op_msg(dn, op))
        if ptr.null:
            self.reject(st, errno.EACCES, f"R{dn} pointer arithmetic on {ptr.type_str()} prohibited, null-check it first")
        if ptr.type == MAP_PTR:
            # CONST_PTR_TO_MAP: only + 0
            if off_reg.is_const() and off_reg.var[0] == 0 and op == A.ADD:
                return ptr.copy()
            self.reject(st, errno.EACCES, f"R{dn} pointer arithmetic on {ptr.type_str()} prohibited", off_reg)
        if ptr.type == PACKET_END or ptr.type in SK_POINTERS:
            self.reject(st, errno.EACCES, f"R{dn} pointer arithmetic on {ptr.type_str()} prohibited")
        if ptr.type not in (CTX, STACK, MAP_VALUE, MAP_KEY, PACKET, PACKET_META, MEM, RINGBUF_MEM):
            raise Unmodelled(f"arithmetic on {ptr.type}")
        if op not in (A.ADD, A.SUB):
            self.reject(st, errno.EACCES, self._ptr_op_msg(dn, op))
        if op == A.SUB and ptr is s:
            self.reject(st, errno.EACCES, f"R{dn} tried to subtract pointer from scalar")
        smin, smax, umin, umax = off_reg.smin, off_reg.smax, off_reg.umin, off_reg.umax
        known = off_reg.is_const()
        tname = ptr.type_str()
        if (known and (smin != smax or umin != umax)) or smin > smax or umin > umax:
            r = Reg(SCALAR)
            return r
        self.sane_offset(st, off_reg, tname)
        self.sane_offset(st, ptr, tname)
        r = ptr.copy()
        r.exact = ptr.exact and off_reg.exact
        if op == A.ADD:
            if known:
                r.off = ptr.off + smin
            else:
                # the variable part: bounds of ptr + scalar
                A._add(r, off_reg)
                r.var = T.add(ptr.var, off_reg.var)
                r.sync()
                if r.type in (PACKET, PACKET_META):
                    r.id = self.new_id()
                    r.range = 0
        else:
            if ptr.type == STACK:       # even of a constant (JITs, says the kernel)
                self.reject(st, errno.EACCES, f"R{dn} subtraction from stack pointer prohibited")
            if known:
                r.off = ptr.off - smin
            else:
                A._sub(r, off_reg)
                r.var = T.sub(ptr.var, off_reg.var)
                r.sync()
                if r.type in (PACKET, PACKET_META):
                    r.id = self.new_id()
                    r.range = 0
        self.sane_offset(st, r, tname)
        return r

    def sane_offset(self, st, reg, tname):
        """check_reg_sane_offset(): the scalar, the pointer and the result of
        pointer arithmetic (the access checks the upper bound)."""
        val = s64(reg.var[0])
        if T.is_const(reg.var) and not -MAX_VAR_OFF < val < MAX_VAR_OFF:
            self.reject(st, errno.EINVAL, f"math between {tname} pointer and {val} is not allowed", reg)
        if not -MAX_VAR_OFF < reg.off < MAX_VAR_OFF:
            self.reject(st, errno.EINVAL, f"{tname} pointer offset {reg.off} is not allowed", reg)
        if reg.smin == -(1 << 63):
            self.reject(st, errno.EINVAL, f"math between {tname} pointer and register with unbounded min value "
                        f"is not allowed", reg)
        if not -MAX_VAR_OFF < reg.smin < MAX_VAR_OFF:
            self.reject(st, errno.EINVAL, f"value {reg.smin} makes {tname} pointer be out of bounds", reg)

    def _ptr_op_msg(self, dn, op):
        if op in (A.AND, A.OR, A.XOR):
            return f"R{dn} bitwise operator {self._OPNAME[op]} on pointer prohibited"
        return f"R{dn} pointer arithmetic with {self._OPNAME.get(op, '?')} operator prohibited"

    # ---------------------------------------------------------------- ld_imm64
    def ld_imm64(self, st, i, x):
        if x.off:
            raise Reject(errno.EINVAL, "BPF_LD_IMM64 uses reserved fields")     # check_ld_imm()
        hi = self.insns[i + 1].imm
        if x.src == 0:
            st.regs[x.dst] = scalar_const((x.imm & M32) | ((hi & M32) << 32))
            return
        if x.src == PSEUDO_FUNC:
            r = Reg(FUNC)
            r.known(0)
            r.off = i + x.imm + 1       # the callback's first insn (subprogno)
            st.regs[x.dst] = r
            return
        if x.src in (PSEUDO_MAP_IDX, PSEUDO_MAP_IDX_VALUE):
            m = self.maps[x.imm]
            if x.src == PSEUDO_MAP_IDX:
                r = Reg(MAP_PTR)
                r.known(0)
            else:
                r = Reg(MAP_VALUE)
                r.known(0)
                r.off = hi & M32
            r.map = m
            st.regs[x.dst] = r
            return
        raise Unmodelled(f"ld_imm64 src {x.src}")

    # ---------------------------------------------------------------- memory
    def check_mem_access(self, st, regno, reg, insn_off, size, kind, val, sx=False, st_imm=False):
        """check_mem_access(): `val` is the loaded register (read) or the stored value (write)."""
        if reg.null:
            self.reject(st, errno.EACCES, f"R{regno} invalid mem access '{reg.type_str()}'")
        t = reg.type
        off = insn_off + reg.off
        if t == SCALAR:
            self.reject(st, errno.EACCES, f"R{regno} invalid mem access 'scalar'")
        if t == STACK:
            self.check_alignment(st, reg, insn_off, size, "stack ", True)
            self.stack_access(st, regno, reg, off, size, kind, val, st_imm)
            return
        if t in (MAP_VALUE, MAP_KEY, MEM, RINGBUF_MEM):
            if t == MAP_VALUE:
                self.check_alignment(st, reg, insn_off, size, "value ", self.strict)
                m = reg.map
                if m.special:
                    raise Unmodelled("map value with BTF fields")
                self.map_access_type(st, reg, off, size, kind)
                limit, what = m.value_size, f"map value, value_size={m.value_size}"
            elif t == MAP_KEY:
                if kind == "write":
                    self.reject(st, errno.EACCES, f"R{regno} cannot write into {t}")
                limit, what = reg.map.key_size, f"map key, key_size={reg.map.key_size}"
            else:
                self.check_alignment(st, reg, insn_off, size, "", self.strict)
                limit, what = reg.size, f"memory, mem_size={reg.size}"
            self.mem_region(st, regno, reg, off, size, limit, what, False)
            if kind == "read":
                val.unknown()
                val.type = SCALAR
                if t == MAP_VALUE and reg.map.map_flags & (1 << 7):
                    val.exact = False        # the kernel may read a frozen read-only map's bytes
                self._narrow(val, size, sx)
            return
        if t == CTX:
            self.ctx_access(st, regno, reg, insn_off, size, kind, val, sx)
            return
        if t in (PACKET, PACKET_META):
            if kind == "write" and not self.may_write_packet():
                self.reject(st, errno.EACCES, "cannot write into packet")
            self.check_pkt_alignment(st, reg, insn_off, size)
            self.packet_access(st, regno, reg, off, size)
            if kind == "read":
                val.unknown()
                val.type = SCALAR
                self._narrow(val, size, sx)
            return
        if t in SK_POINTERS:
            # check_sock_access(): fields of struct bpf_sock / bpf_tcp_sock, read only
            if kind == "write":
                self.reject(st, errno.EACCES, f"R{regno} cannot write into {t}")
            ok = self.ctx.sock_common(off, size) if t == SOCK_COMMON else \
                self.ctx.sock_field(off, size) is not None if t == SOCKET else self.ctx.tcp_sock(off, size)
            if not ok:
                self.reject(st, errno.EACCES, f"R{regno} invalid {t} access off={off} size={size}")
            val.unknown()
            val.type = SCALAR
            self._narrow(val, size, sx)
            return
        if t == MAP_PTR:
            # check_ptr_to_map_access(): struct bpf_array / bpf_htab through BTF
            tname = P.MAP_STRUCT.get(reg.map.map_type)
            if tname is None:
                raise Unmodelled(f"access to struct bpf_map of type {reg.map.map_type}")
            if off < 0:
                self.reject(st, errno.EACCES, f"R{regno} is {tname} invalid negative access: off={off}")
            if kind != "read":
                self.reject(st, errno.EACCES, f"only read from {tname} is supported")
            raise Unmodelled(f"read of struct {tname}")
        if t == PACKET_END:
            self.reject(st, errno.EACCES, f"R{regno} invalid mem access '{reg.type_str()}'")
        raise Unmodelled(f"access through {t}")

    def _narrow(self, val, size, sx):
        if sx:
            val.exact = False
            return
        if size < 8:
            val.var = T.cast(val.var, size)
            val.sync()
            val.smin, val.smax, val.umin, val.umax = 0, (1 << (size * 8)) - 1, 0, (1 << (size * 8)) - 1
            val.sync()

    def map_access_type(self, st, reg, off, size, kind):
        """check_map_access_type(): BPF_F_RDONLY_PROG, BPF_F_WRONLY_PROG."""
        m = reg.map
        if kind == "write" and m.map_flags & (1 << 7):
            self.reject(st, errno.EACCES, f"write into map forbidden, value_size={m.value_size} off={off} "
                        f"size={size}", reg)
        if kind == "read" and m.map_flags & (1 << 8):
            self.reject(st, errno.EACCES, f"read from map forbidden, value_size={m.value_size} off={off} "
                        f"size={size}", reg)

    def check_alignment(self, st, reg, off, size, desc, strict):
        if not strict or size == 1:
            return
        ro = T.add(reg.var, T.const(reg.off + off))
        if not T.is_aligned(ro, size):
            tn = str(s64(reg.var[0])) if T.is_const(reg.var) else T.sbin(reg.var)
            self.reject(st, errno.EACCES, f"misaligned {desc}access off {tn}+{reg.off}+{off} size {size}", reg)

    def check_pkt_alignment(self, st, reg, off, size):
        if not self.strict or size == 1:
            return
        ro = T.add(reg.var, T.const(2 + reg.off + off))     # NET_IP_ALIGN
        if not T.is_aligned(ro, size):
            tn = str(s64(reg.var[0])) if T.is_const(reg.var) else T.sbin(reg.var)
            self.reject(st, errno.EACCES, f"misaligned packet access off 2+{tn}+{reg.off}+{off} size {size}", reg)

    def mem_region(self, st, regno, reg, off, size, limit, what, zero_ok):
        """check_mem_region_access()."""
        if reg.smin < 0 and (reg.smin == -(1 << 63) or
                             not (-(1 << 31) <= off + reg.smin < (1 << 31)) or reg.smin + off < 0):
            self.reject(st, errno.EACCES, f"R{regno} min value is negative, either use unsigned index or do a "
                        f"if (index >=0) check.", reg)
        lo = reg.smin + off
        if not self._in(lo, size, limit, zero_ok):
            self.log(f"invalid access to {what} off={lo} size={size}")
            self.reject(st, errno.EACCES, f"R{regno} min value is outside of the allowed memory range", reg)
        if reg.umax >= MAX_VAR_OFF:
            self.reject(st, errno.EACCES, f"R{regno} unbounded memory access, make sure to bounds check any "
                        f"such access", reg)
        hi = reg.umax + off
        if not self._in(hi, size, limit, zero_ok):
            self.log(f"invalid access to {what} off={hi} size={size}")
            self.reject(st, errno.EACCES, f"R{regno} max value is outside of the allowed memory range", reg)

    @staticmethod
    def _in(off, size, limit, zero_ok):
        return off >= 0 and (size > 0 or zero_ok) and off + size <= limit

    def may_write_packet(self):
        return self.prog_type in C.PKT_WRITE

    def packet_access(self, st, regno, reg, off, size):
        if reg.smin < 0:
            self.reject(st, errno.EACCES, f"R{regno} min value is negative, either use unsigned index or do a "
                        f"if (index >=0) check.", reg)
        # the range is of every pointer with this id: their variable parts included
        if not (off >= 0 and off + size <= reg.range):
            self.log(f"invalid access to packet, off={off} size={size}, R{regno}(id={reg.id},off={reg.off},"
                     f"r={reg.range})")
            self.reject(st, errno.EACCES, f"R{regno} offset is outside of the packet", reg)

    # ---- stack
    def stack_bounds(self, st, regno, reg, off, size, kind):
        if T.is_const(reg.var):
            lo = s64(reg.var[0]) + off
            hi = lo + size
        else:
            if reg.smax >= MAX_VAR_OFF or reg.smin <= -MAX_VAR_OFF:
                self.reject(st, errno.EACCES, f"invalid unbounded variable-offset{kind} stack R{regno}", reg)
            lo = reg.smin + off
            hi = reg.smax + off + size
        err = None
        if lo < -MAX_BPF_STACK or lo > -1:
            err = errno.EACCES
        elif hi > 0:
            err = errno.EINVAL
        if err:
            if T.is_const(reg.var):
                self.reject(st, err, f"invalid{kind} stack R{regno} off={off} size={size}", reg)
            self.reject(st, err, f"invalid variable-offset{kind} stack R{regno} var_off={T.sbin(reg.var)} "
                        f"off={off} size={size}", reg)
        # grow_stack_state(): the subprogram of the frame the pointer names
        sp = st.subprog if reg.frame == len(st.callers) else st.callers[reg.frame].subprog
        self.stack_depth[sp] = max(self.stack_depth[sp], -(lo // 8) * 8)
        return lo, hi

    @staticmethod
    def stack_of(st, reg):
        """The slots of the frame a PTR_TO_STACK register points into."""
        return st.stack if reg.frame == len(st.callers) else st.callers[reg.frame].stack

    def stack_access(self, st, regno, reg, off, size, kind, val, st_imm):
        lo, hi = self.stack_bounds(st, regno, reg, off, size, " read from" if kind == "read" else " write to")
        stk = self.stack_of(st, reg)
        if not T.is_const(reg.var):
            if kind == "write":
                for a in range(lo, hi):
                    self._set_byte(stk, a, "M")
            else:
                val.unknown()
                val.type = SCALAR
                self._narrow(val, size, False)
            return
        if kind == "write":
            if size == 8 and lo % 8 == 0 and (val.is_ptr() or (val.type == SCALAR and not
                                                               (val.is_const() and val.var[0] == 0))):
                if val.type == STACK and stk is not st.stack:
                    self.reject(st, errno.EINVAL, "cannot spill pointers to stack into stack frame of the caller")
                stk[lo // 8] = Slot("SSSSSSSS", val.copy())
                return
            if val.is_ptr():
                self.reject(st, errno.EACCES, "invalid size of register spill")
            zero = val.type == SCALAR and val.is_const() and val.var[0] == 0
            if lo % 8 == 0 and val.type == SCALAR and not zero:
                # a narrow spill (save_register_state): the register is kept,
                # its bytes are the ones written, the slot's others lose a spill
                old = stk.get(lo // 8)
                rest = (old.types if old is not None else "IIIIIIII")[size:].replace("S", "M")
                stk[lo // 8] = Slot("S" * size + rest, val.copy())
                return
            for a in range(lo, hi):
                self._set_byte(stk, a, "Z" if zero else "M")
            return
        # read
        slot = stk.get(lo // 8)
        if slot is not None and slot.types[0] == "S":
            # a spilled register (check_stack_read_fixed_off)
            spill = 8 - len(slot.types.lstrip("S"))
            if size == 8 and spill == 8:
                v = slot.reg.copy()
                for k in Reg.__slots__:
                    setattr(val, k, getattr(v, k))
                return
            if slot.reg.is_ptr():
                self.reject(st, errno.EACCES, "invalid size of register fill")
            if size <= spill and lo % 8 == 0:
                v = slot.reg.copy()
                A.coerce(v, size)
                for k in Reg.__slots__:
                    setattr(val, k, getattr(v, k))
                return
            read = slot.types[lo % 8:lo % 8 + size]
            val.unknown()
            val.type = SCALAR
            if (read == "S" * size and slot.reg.is_const() and not slot.reg.var[0]) or read == "Z" * size:
                val.known(0)
            else:
                self._narrow(val, size, False)
            return
        for a in range(lo, hi):
            s = stk.get(a // 8)
            if s is not None and s.types[a % 8] == "S" and s.reg.is_ptr():
                self.reject(st, errno.EACCES, "invalid size of register fill")
        allzero = all((stk.get(a // 8) or Slot()).types[a % 8] == "Z" for a in range(lo, hi))
        val.unknown()
        val.type = SCALAR
        if allzero:
            val.known(0)
        else:
            self._narrow(val, size, False)

    @staticmethod
    def _set_byte(stk, a, t):
        k = a // 8
        s = stk.get(k)
        types = s.types if s is not None else "IIIIIIII"
        if "S" in types:
            types = "".join("M" if c == "S" else c for c in types)     # a partial write scrubs the spill
        b = a % 8
        stk[k] = Slot(types[:b] + t + types[b + 1:], None)

    # ---- ctx
    def check_ctx_off(self, st, regno, reg):
        """__check_ptr_off_reg() of a ctx pointer: neither a fixed nor a variable offset."""
        if reg.off < 0:
            self.reject(st, errno.EACCES, f"negative offset ctx ptr R{regno} off={reg.off} disallowed")
        if reg.off:
            self.reject(st, errno.EACCES, f"dereference of modified ctx ptr R{regno} off={reg.off} disallowed")
        if not T.is_const(reg.var) or reg.var[0]:
            self.reject(st, errno.EACCES, f"variable ctx access var_off={T.sbin(reg.var)} disallowed", reg)

    def ctx_access(self, st, regno, reg, off, size, kind, val, sx):
        self.check_ctx_off(st, regno, reg)
        self.check_alignment(st, reg, off, size, "context ", self.strict)
        res = self.ctx.valid(off, size, kind)
        if res is False:
            self.reject(st, errno.EACCES, f"invalid bpf_context access off={off} size={size}")
        if kind == "read":
            val.unknown()
            val.type = SCALAR
            if res in (PACKET, PACKET_META, PACKET_END):
                val.type = res
                val.known(0)
                val.range = 0
                return
            if res == SOCK_COMMON:
                val.type = res
                val.known(0)
                val.null = True
                val.id = self.new_id()
                return
            if sx:
                val.exact = False
            elif size < 8:
                self._narrow(val, size, False)

    # ---- atomics
    def check_atomic(self, st, x, dst, size):
        src = self.reg(st, x.src)
        if x.imm == CMPXCHG:
            self.reg(st, 0)
        if dst.type == SCALAR:
            self.reject(st, errno.EACCES, f"R{x.dst} invalid mem access 'scalar'")
        if dst.type in (CTX, PACKET, PACKET_META, PACKET_END):
            self.reject(st, errno.EACCES, f"BPF_ATOMIC stores into R{x.dst} {dst.type_str()} is not allowed")
        if (x.imm & FETCH) and x.src == 10:
            self.reject(st, errno.EACCES, "frame pointer is read only")
        tmp = Reg(SCALAR)
        strict, self.strict = self.strict, True      # atomics are always aligned (strict_alignment_once)
        try:
            self.check_mem_access(st, x.dst, dst, x.off, size, "read", tmp)
            self.check_mem_access(st, x.dst, dst, x.off, size, "write", Reg(SCALAR))
        finally:
            self.strict = strict
        if x.imm == CMPXCHG:
            st.regs[0] = tmp
        elif x.imm & FETCH:
            st.regs[x.src] = tmp

    # ---------------------------------------------------------------- calls
    def check_helper_call(self, st, i, x, pending):
        if x.imm in self.bad_helpers:
            raise Reject(*self.bad_helpers[x.imm])     # get_helper_proto() fails where the call is reached
        proto = P.PROTOS.get(x.imm)
        if proto is None:
            raise Unmodelled(f"helper {x.imm}")
        name, ret, args = proto
        regs = st.regs
        meta = {"map": None, "ref": None, "ptr": None}
        for k, at in enumerate(args):
            rn = k + 1
            reg = regs[rn]
            if reg.type == NOT_INIT:
                self.reject(st, errno.EACCES, f"R{rn} !read_ok")
            self.check_arg(st, x.imm, name, rn, reg, at, meta)
        # check_map_func_compatibility()
        m = meta["map"]
        if m is not None:
            if m.map_type not in P.KNOWN_MAP_TYPES:
                raise Unmodelled(f"map type {m.map_type}")
            allowed = P.MAP_ONLY.get(m.map_type)
            if (allowed is not None and x.imm not in allowed) or \
                    (x.imm in P.FUNC_NEEDS and P.FUNC_NEEDS[x.imm] != m.map_type):
                self.reject(st, errno.EINVAL, f"cannot pass map_type {m.map_type} into func {name}#{x.imm}")
        if x.imm in P.CALLBACKS:
            self.callback_call(st, i, x, pending, meta)
        if x.imm == 12:    # bpf_tail_call
            if st.refs:
                self.reject(st, errno.EINVAL, "tail_call would lead to reference leak")
        if meta["ref"] is not None:
            rid = meta["ref"]
            st.refs = [r for r in st.refs if r[0] != rid]
            for fregs, stk in self.frames(st):
                for rn, rr in enumerate(fregs):
                    if rr.ref == rid:
                        fregs[rn] = Reg(SCALAR)       # mark_reg_invalid(): unknown, for root
                for k, s in list(stk.items()):
                    if s.reg is not None and s.reg.ref == rid:
                        stk[k] = Slot("MMMMMMMM", None)
        if x.imm in P.CHANGES_PKT_DATA:
            # clear_all_pkt_pointers(): unknown scalars for root
            for fregs, stk in self.frames(st):
                for rn, rr in enumerate(fregs):
                    if rr.type in (PACKET, PACKET_META, PACKET_END):
                        fregs[rn] = Reg(SCALAR)
                for k, s in list(stk.items()):
                    if s.reg is not None and s.reg.type in (PACKET, PACKET_META, PACKET_END):
                        stk[k] = Slot("MMMMMMMM", None)
        for r in range(1, 6):
            regs[r] = Reg()
        r0 = Reg(SCALAR)
        if x.imm in P.RET_UP_TO_SIZE:
            # do_refine_retval_range(): at most the buffer's size, or -errno
            r0.smax = r0.s32max = meta["msize"]
            r0.smin = r0.s32min = -MAX_ERRNO
            r0.sync()
        elif x.imm == P.GET_SMP_PROCESSOR_ID:
            r0.umin = r0.u32min = r0.smin = r0.s32min = 0
            r0.umax = r0.u32max = r0.smax = r0.s32max = nr_cpu_ids() - 1
            r0.sync()
        if ret == P.VALUE_OR_NULL:
            # a map of maps gives a pointer to an inner map, of its template's kind
            r0 = Reg(MAP_PTR if m.inner is not None else MAP_VALUE)
            r0.known(0)
            r0.map = m.inner or m
            r0.null = True
            r0.id = self.new_id()
        elif ret == P.RINGBUF_OR_NULL:
            r0 = Reg(RINGBUF_MEM)
            r0.known(0)
            r0.null = True
            r0.size = meta.get("alloc", 0)
            r0.id = self.new_id()
            r0.ref = r0.id
            st.refs.append((r0.id, i))
        elif ret in SOCK_RET:
            r0 = Reg(SOCK_RET[ret])
            r0.known(0)
            r0.null = True
            r0.id = self.new_id()
            if x.imm in P.ACQUIRE:
                r0.ref = r0.id
                st.refs.append((r0.id, i))
            elif x.imm in P.PTR_CAST:
                r0.ref = meta.get("obj_ref", 0)
        regs[0] = r0

    def callback_call(self, st, i, x, pending, meta):
        """The callback's arguments (set_loop_callback_state,
        set_map_elem_callback_state), then its path."""
        if st.refs:
            raise Unmodelled("references held across a callback")
        regs = st.regs
        if x.imm == P.LOOP:
            args = {1: Reg(SCALAR), 2: regs[3]}       # the index, the context
        else:
            m = meta["map"]
            if m.map_type not in P.FOR_EACH_MAP_TYPES:
                raise Unmodelled(f"bpf_for_each_map_elem on map type {m.map_type}")
            key, value = Reg(MAP_KEY), Reg(MAP_VALUE)
            for r in (key, value):
                r.known(0)
                r.map = m
            args = {1: regs[1], 2: key, 3: value, 4: regs[3]}
        self.push_callback(st, i, pending, meta["func"], args)

    def check_arg(self, st, func_id, name, rn, reg, at, meta):
        t = reg.type
        if at == P.ANY:
            return
        if at == P.FUNC:
            if t != FUNC:
                raise Unmodelled(f"callback argument of type {t}")
            meta["func"] = reg
            return
        if at == P.STACK0:
            if not (t == STACK or (t == SCALAR and reg.is_const() and reg.var[0] == 0)):
                raise Unmodelled(f"callback context of type {t}")
            return
        if at == P.MAP:
            if t != MAP_PTR or reg.null:
                self.reject(st, errno.EACCES, f"R{rn} type={reg.type_str()} expected=map_ptr")
            meta["map"] = reg.map
            return
        if at in (P.CTX, P.CTX_OR_NULL):
            if at == P.CTX_OR_NULL and t == SCALAR and reg.is_const() and reg.var[0] == 0:
                return
            if t != CTX:
                self.reject(st, errno.EACCES, f"R{rn} type={reg.type_str()} expected=ctx")
            self.check_ctx_off(st, rn, reg)
            return
        if at in (P.SOCK_ARG, P.SOCK_RELEASE):
            if t not in SK_POINTERS or reg.null:
                self.reject(st, errno.EACCES, f"R{rn} type={reg.type_str()} expected=sock_common, sock, tcp_sock, "
                            f"xdp_sock" + (", ptr_, trusted_ptr_" if at == P.SOCK_RELEASE else ""))
            if at == P.SOCK_ARG:
                meta["obj_ref"] = reg.ref
            elif not reg.ref:
                self.reject(st, errno.EINVAL, f"R{rn} must be referenced when passed to release function")
            else:
                meta["ref"] = reg.ref
            return
        if at in (P.SIZE, P.SIZE0, P.ALLOC_SIZE0):
            if t != SCALAR:
                self.reject(st, errno.EACCES, f"R{rn} type={reg.type_str()} expected=scalar")
            if at == P.ALLOC_SIZE0:
                if not reg.is_const():
                    self.reject(st, errno.EACCES, f"R{rn} is not a known constant'", reg)
                meta["alloc"] = reg.var[0]
                return
            self.check_mem_size(st, rn, reg, at == P.SIZE0, meta)
            return
        if at == P.RINGBUF:
            if t != RINGBUF_MEM or reg.null:
                self.reject(st, errno.EACCES, f"R{rn} type={reg.type_str()} expected=ringbuf_mem")
            if reg.off:
                self.reject(st, errno.EINVAL, f"R{rn} must have zero offset when passed to release func or trusted "
                            f"arg to kfunc")
            if not T.is_const(reg.var) or reg.var[0]:
                raise Unmodelled("modified ringbuf pointer released")
            if not reg.ref:
                self.reject(st, errno.EINVAL, f"R{rn} must be referenced when passed to release function")
            meta["ref"] = reg.ref
            return
        if at == P.MEM_OR_NULL and t == SCALAR and reg.is_const() and reg.var[0] == 0:
            meta["ptr"] = (rn, reg, "read")     # NULL: only with a size of 0 (helper_mem)
            return
        # pointers to memory
        if t not in (STACK, PACKET, PACKET_META, MAP_KEY, MAP_VALUE, MEM, RINGBUF_MEM) or \
                (reg.null and at != P.MEM_OR_NULL):
            if t == SCALAR or reg.null or t in (CTX, MAP_PTR, PACKET_END, *SK_POINTERS):
                self.reject(st, errno.EACCES, f"R{rn} type={reg.type_str()} expected=fp, pkt, pkt_meta, map_key, "
                            f"map_value, mem, ringbuf_mem, buf, trusted_ptr_")
            raise Unmodelled(f"helper argument of type {t}")
        if t in (PACKET, PACKET_META) and not C.helper_pkt_access(self.prog_type, func_id in P.PKT_ACCESS):
            self.reject(st, errno.EACCES, "helper access to the packet is not allowed")
        if at == P.LONG:
            self.helper_mem(st, rn, reg, 8, False, "write")
            if t not in (STACK, MAP_VALUE):
                raise Unmodelled(f"aligned helper memory of type {t}")
            self.check_alignment(st, reg, 0, 8, "stack " if t == STACK else "value ", True)
            return
        if at in (P.KEY, P.VALUE):
            m = meta["map"]
            if m is None:
                raise Unmodelled("key without a map")
            size = m.key_size if at == P.KEY else m.value_size
            self.helper_mem(st, rn, reg, size, False, "read")
            return
        # MEM / UMEM: the size is the next argument
        meta["ptr"] = (rn, reg, "read" if at in (P.MEM, P.MEM_OR_NULL) else "write")

    def check_mem_size(self, st, rn, reg, zero_ok, meta):
        """check_mem_size_reg()."""
        if reg.smin < 0:
            self.reject(st, errno.EACCES, f"R{rn} min value is negative, either use unsigned or 'var &= const'", reg)
        if reg.umin == 0 and not zero_ok:
            self.reject(st, errno.EACCES, f"R{rn} invalid zero-sized read: u64=[{reg.umin},{reg.umax}]", reg)
        if reg.umax >= MAX_VAR_OFF:
            self.reject(st, errno.EACCES, f"R{rn} unbounded memory access, use 'var &= const' or 'if (var < const)'",
                        reg)
        prn, preg, kind = meta["ptr"]
        meta["msize"] = reg.umax
        self.helper_mem(st, prn, preg, reg.umax, zero_ok, kind)

    def helper_mem(self, st, rn, reg, size, zero_ok, kind):
        """check_helper_mem_access()."""
        t = reg.type
        if t == SCALAR:     # a NULL the prototype allows
            if size == 0 and zero_ok:
                return
            self.reject(st, errno.EACCES, f"R{rn} type=scalar expected=fp")
        if t == STACK:
            if size == 0 and zero_ok:
                return
            lo, hi = self.stack_bounds(st, rn, reg, reg.off, size, f" {kind} {'to' if kind == 'write' else 'from'}")
            if kind == "write":
                stk = self.stack_of(st, reg)
                for a in range(lo, hi):
                    self._set_byte(stk, a, "M")
            # a helper reading a spilled pointer: allowed for root, the slot stays
            return
        if t in (PACKET, PACKET_META):
            if kind == "write" and not self.may_write_packet():
                self.reject(st, errno.EACCES, "helper access to the packet is not allowed")
            self.packet_access(st, rn, reg, reg.off, size)
            return
        if t == MAP_VALUE:
            m = reg.map
            if m.special:
                raise Unmodelled("map value with BTF fields")
            self.map_access_type(st, reg, reg.off, size, kind)
            self.mem_region(st, rn, reg, reg.off, size, m.value_size, f"map value, value_size={m.value_size}",
                            zero_ok)
            return
        if t == MAP_KEY:
            self.mem_region(st, rn, reg, reg.off, size, reg.map.key_size, f"map key, key_size={reg.map.key_size}",
                            zero_ok)
            return
        self.mem_region(st, rn, reg, reg.off, size, reg.size, f"memory, mem_size={reg.size}", zero_ok)

    # ---------------------------------------------------------------- bpf-to-bpf calls
    def check_func_call(self, st, i, x):
        """__check_func_call() for a static subprogram: r1-r5 go to the
        callee, the caller's r0-r5 are clobbered, the callee has its own
        stack and r10."""
        depth = len(st.callers)
        if depth + 1 >= MAX_CALL_FRAMES:
            self.reject(st, errno.E2BIG, f"the call stack of {depth + 2} frames is too deep")
        target = i + x.imm + 1
        regs = [Reg() for _ in range(11)]
        for r in range(1, 6):
            regs[r] = st.regs[r].copy()
        fp = regs[10] = Reg(STACK)
        fp.known(0)
        fp.frame = depth + 1
        for r in range(6):
            st.regs[r] = Reg()
        st.callers.append(Frame(st.regs, st.stack, i, st.subprog))
        st.regs, st.stack, st.subprog = regs, {}, self.subprog_of[target]
        return target

    def prepare_func_exit(self, st):
        r0 = st.regs[0]
        if r0.type == STACK:
            # the kernel refuses even a caller's stack pointer here
            self.reject(st, errno.EINVAL, "cannot return stack pointer to the caller")
        f = st.callers[-1]
        if f.cb is not None:
            if r0.type != SCALAR:
                self.reject(st, errno.EACCES, "R0 not a scalar value")
            lo, hi = f.cb
            self.check_retval(st, r0, lo, hi, "callback return")
        st.callers.pop()
        st.regs, st.stack, st.subprog = f.regs, f.stack, f.subprog
        if f.cb is not None:
            return f.callsite       # the helper may call it again, or return
        f.regs[0] = r0          # whatever r0 had, initialised or not
        return f.callsite + 1

    def push_callback(self, st, i, pending, func, args):
        """A synchronous callback (bpf_loop, bpf_for_each_map_elem): a path
        that enters it from this call, with the caller's registers as they
        are at the call (its exit comes back to the call); this path goes on
        as if the helper had not called it."""
        depth = len(st.callers)
        if depth + 1 >= MAX_CALL_FRAMES:
            self.reject(st, errno.E2BIG, f"the call stack of {depth + 2} frames is too deep")
        target = func.off
        cb = st.copy()
        regs = [Reg() for _ in range(11)]
        for r, v in args.items():
            regs[r] = v.copy()
        fp = regs[10] = Reg(STACK)
        fp.known(0)
        fp.frame = depth + 1
        cb.callers.append(Frame(cb.regs, cb.stack, i, cb.subprog, (0, 1)))
        cb.regs, cb.stack, cb.subprog = regs, {}, self.subprog_of[target]
        cb.insn = target
        cb.unroll += 1
        if st.parent is not None:
            st.parent.branches += 1
        cb.parent = st.parent
        pending.append(cb)

    def check_max_stack_depth(self):
        """check_max_stack_depth(): every call chain of the static call graph
        from the main program, dead code included, within MAX_CALL_FRAMES
        frames and MAX_BPF_STACK bytes (each frame rounded up to 16, as for
        a JITed program: round_up_stack_depth())."""
        if len(self.starts) == 1:
            return
        ends = self.starts[1:] + [self.n]
        frame_size = [-(-d // 16) * 16 for d in self.stack_depth]
        tail = [any(x.code == JMP | CALL and x.src == 0 and x.imm == 12 for x in self.insns[a:b])
                for a, b in zip(self.starts, ends)]
        calls = [[k + x.imm + 1 for k in range(a, b) for x in (self.insns[k],) if self.calls_subprog(x)]
                 for a, b in zip(self.starts, ends)]
        limit_tracing = self.prog_type in PRIV_STACK_PROG_TYPES

        def walk(idx, frame, depth):
            if idx and tail[idx] and depth >= 256:
                raise Reject(errno.EACCES, f"tail_calls are not allowed when call stack of previous frames is "
                             f"{depth} bytes. Too large")
            depth += frame_size[idx]
            if depth > MAX_BPF_STACK:
                if limit_tracing:
                    raise Unmodelled("combined stack on a private stack")
                raise Reject(errno.EACCES, f"combined stack size of {frame + 1} calls is {depth}. Too large")
            for t in calls[idx]:
                if frame + 1 >= MAX_CALL_FRAMES:
                    raise Reject(errno.E2BIG, f"the call stack of {frame + 1} frames is too deep !")
                walk(self.subprog_of[t], frame + 1, depth)

        walk(0, 0, 0)

    # ---------------------------------------------------------------- exit
    def check_exit(self, st):
        if st.refs:
            for rid, at in st.refs:
                self.log(f"Unreleased reference id={rid} alloc_insn={at}")
            self.reject(st, errno.EINVAL, "BPF_EXIT instruction in main prog would lead to reference leak")
        r0 = st.regs[0]
        if r0.type == NOT_INIT:
            self.reject(st, errno.EACCES, "R0 !read_ok")
        rng = C.retval_range(self.prog_type, self.expected_attach_type)
        if rng is not None:
            if r0.type != SCALAR:
                self.reject(st, errno.EINVAL, f"At program exit the register R0 is not a known value "
                            f"({r0.type_str()})")
            self.check_retval(st, r0, *rng, "program exit")

    def check_retval(self, st, r0, lo, hi, where):
        """retval_range_within(), with verbose_invalid_scalar()'s words."""
        if not (lo <= r0.smin and r0.smax <= hi):
            desc = "".join(([f" smin={r0.smin}"] if r0.smin > -(1 << 63) else []) +
                           ([f" smax={r0.smax}"] if r0.smax < (1 << 63) - 1 else [])) or " unknown scalar value"
            self.reject(st, errno.EINVAL, f"At {where} the register R0 has{desc} should have been in [{lo}, {hi}]",
                        r0)

    # ---------------------------------------------------------------- jumps
    def check_cond_jmp(self, st, i, x, pending):
        c = x.code
        is32 = (c & 7) == JMP32
        op = c & 0xF0
        d = self.reg(st, x.dst)
        s = self.src_operand(st, x, is32)
        target = i + x.off + 1
        taken = None
        exact = d.exact and s.exact
        if d.type == SCALAR and s.type == SCALAR:
            taken = A.branch_taken(d, s, op, is32)
        elif op in (A.JEQ, A.JNE) and not is32 and self._is_null_cmp(d, s):
            ptr = d if d.is_ptr() else s
            if not ptr.null and ptr.type in (MAP_VALUE, MAP_KEY, MEM, RINGBUF_MEM, *SK_POINTERS):  # reg_not_null()
                taken = 0 if op == A.JEQ else 1
        elif d.is_ptr() and s.is_ptr() and d.type in (PACKET, PACKET_META, PACKET_END) and \
                s.type in (PACKET, PACKET_META, PACKET_END) and not is32:
            taken = self.pkt_branch_taken(d, s, op)
            if taken is not None:
                if not exact:
                    st.inexact = True
                return target if taken else i + 1
            other = st.copy()
            other.insn = target
            if not exact:
                st.inexact = other.inexact = True
            self.pkt_compare(st, other, x, op)
            self._push(st, other, pending)
            return i + 1
        elif d.is_ptr() or s.is_ptr():
            if is32:
                self.reject(st, errno.EACCES, f"R{x.dst if d.is_ptr() else x.src} pointer comparison prohibited")
            # pointer vs scalar or two pointers: no refinement (the kernel's for root)
            other = st.copy()
            other.insn = target
            if not exact:
                st.inexact = other.inexact = True
            self._push(st, other, pending)
            return i + 1
        if taken is not None:
            if not exact:
                st.inexact = True
            return target if taken else i + 1
        other = st.copy()
        other.insn = target
        if not exact:
            st.inexact = other.inexact = True
        if d.is_ptr() or s.is_ptr():
            # null check: `if (ptr == 0)`
            ptr = d if d.is_ptr() else s
            pid = ptr.id
            null_st, ok_st = (other, st) if op == A.JEQ else (st, other)
            self.mark_ptr_or_null(null_st, pid, True)
            self.mark_ptr_or_null(ok_st, pid, False)
        else:
            self.refine_regs(other, x, op, is32, True)
            self.refine_regs(st, x, op, is32, False)
        self._push(st, other, pending)
        return i + 1

    def _push(self, st, other, pending):
        """The taken branch waits (push_stack), the fall-through goes on."""
        if st.parent is not None:
            st.parent.branches += 1
        other.parent = st.parent
        pending.append(other)

    @staticmethod
    def frames(st):
        """(registers, stack slots) of every frame: what the kernel's
        bpf_for_each_reg_in_vstate() visits."""
        yield st.regs, st.stack
        for f in st.callers:
            yield f.regs, f.stack

    @staticmethod
    def _is_null_cmp(d, s):
        ptr, k = (d, s) if d.is_ptr() else (s, d)
        return ptr.is_ptr() and k.type == SCALAR and k.is_const() and k.var[0] == 0

    def mark_ptr_or_null(self, st, pid, is_null):
        if not pid:
            return
        regs = []
        for fregs, stk in self.frames(st):
            for k, sl in list(stk.items()):
                if sl.reg is not None and sl.reg.id == pid:
                    stk[k] = Slot(sl.types, sl.reg.copy())     # slots are shared with other states
            regs += fregs
            regs += [s.reg for s in stk.values() if s.reg is not None]
        for r in regs:
            if r.id == pid and r.null:
                if is_null:
                    ref = r.ref
                    r.__init__(SCALAR)
                    r.known(0)
                    if ref == pid:      # the acquired pointer itself, not a view of it
                        st.refs = [x for x in st.refs if x[0] != ref]
                else:
                    r.null = False
                    if r.type in (MAP_VALUE,):
                        r.id = 0

    def refine_regs(self, st, x, op, is32, taken):
        d = st.regs[x.dst]
        s = st.regs[x.src] if x.code & 8 else self.src_operand(st, x, is32)
        if taken:
            A.refine(d, s, op, is32)
        else:
            A.refine_not(d, s, op, is32)
        # linked scalars (same id) share the refinement
        for r in (d, s):
            if r.id and r.type == SCALAR:
                self._propagate_id(st, r)

    def _propagate_id(self, st, src):
        for fregs, stk in self.frames(st):
            for k, r in enumerate(fregs):
                if r is not src and r.type == SCALAR and r.id == src.id and r.off == src.off:
                    fregs[k] = src.copy()
            for key, sl in list(stk.items()):
                r = sl.reg
                if r is not None and r is not src and r.type == SCALAR and r.id == src.id:
                    stk[key] = Slot(sl.types, src.copy())

    def pkt_compare(self, st, other, x, op):
        """try_match_pkt_pointers(): this (fall-through) and other (taken) branches."""
        d, s = st.regs[x.dst], st.regs[x.src]
        # pkt against pkt_end, or pkt_meta against the packet's start (which ends the metadata)
        init = lambda r: r.type == PACKET and not r.id and not r.off and T.is_const(r.var) and not r.var[0]
        ends = lambda p, e: (p.type == PACKET and e.type == PACKET_END) or (p.type == PACKET_META and init(e))
        # which branch learns that the packet pointer is in range, and whether the range is right-open
        if ends(d, s) and op in PKT_LEFT:
            taken, right_open = PKT_LEFT[op]
            self.good_pkt(other if taken else st, d, right_open)
            self.mark_pkt_end(st if taken else other, x.dst, not right_open)
        elif ends(s, d) and op in PKT_RIGHT:
            taken, right_open = PKT_RIGHT[op]
            self.good_pkt(other if taken else st, s, right_open)
            self.mark_pkt_end(st if taken else other, x.src, not right_open)

    @staticmethod
    def mark_pkt_end(st, regno, beyond):
        """mark_pkt_end(): on the branch where the packet pointer is past the
        end (beyond) or at it, its range says so (BEYOND_PKT_END,
        AT_PKT_END) for is_pkt_ptr_branch_taken()."""
        r = st.regs[regno]
        if r.type == PACKET:
            r = st.regs[regno] = r.copy()
            r.range = BEYOND_PKT_END if beyond else AT_PKT_END

    @staticmethod
    def pkt_branch_taken(d, s, op):
        """is_pkt_ptr_branch_taken(): 1, 0 or None (both may be)."""
        if s.type == PACKET_END:
            pkt = d
        elif d.type == PACKET_END:
            pkt, op = s, A.SWAP.get(op, op)
        else:
            return None
        if pkt.range >= 0:
            return None
        if op in (A.JLE, A.JGT) and pkt.range == BEYOND_PKT_END:
            return int(op == A.JGT)
        if op in (A.JLT, A.JGE) and pkt.range in (BEYOND_PKT_END, AT_PKT_END):
            return int(op == A.JGE)
        return None

    def good_pkt(self, st, ref, right_open):
        """find_good_pkt_pointers()."""
        if ref.off < 0 or (ref.off == 0 and right_open):
            return
        if ref.umax > MAX_PACKET_OFF or ref.umax + ref.off > MAX_PACKET_OFF:
            return
        new = ref.off + (1 if right_open else 0)
        for fregs, stk in self.frames(st):
            for k, r in enumerate(fregs):
                if r.type == ref.type and r.id == ref.id:
                    r2 = r.copy()
                    r2.range = max(r.range, new)
                    fregs[k] = r2
            for key, sl in list(stk.items()):
                r = sl.reg
                if r is not None and r.type == ref.type and r.id == ref.id:
                    r2 = r.copy()
                    r2.range = max(r.range, new)
                    stk[key] = Slot(sl.types, r2)
