"""Where the run budget (agent/bpf_rt.h) is charged in a function's code.

The runtime bounds a run by counting the times round its loops: the budget
counter goes down by at least one each time round and is checked when it
reaches 0 (the interpreter takes one off at every taken back edge, a jump to
its own pc or before). A count on the back edge puts a call on the loop's way
round, which keeps LLVM from vectorizing or fully unrolling it. So a loop
whose trip count a constant bounds (what bounded `for` loops compile to) is
charged its bound once, on each edge that enters it, and its own back edges
cost nothing: the count is paid before the times round are run, never after,
so checks come no later than with a charge each time round, and between two
checks at most BPF_RT_BACKEDGE_CHUNK + MAX_CHARGE times round run.

The loops are the natural loops of the function's control flow graph (a header
that dominates its body, so the body is entered only through the header). A
loop is charged at its entry when
- one register r is written in its body by one instruction only, d: `r += k`
  or `r -= k` with a constant k, run once on every way round (d dominates
  every edge back to the header and lies on no cycle that misses the header);
- one conditional jump t compares r (or a copy of r, or of its low 32 bits,
  made in t's block) with a constant, leaves the body on one side, stays in it
  on the other, and is run on every way round (it dominates every edge back to
  the header);
- the number of consecutive values r takes at t that keep the loop going is
  bounded by a constant no larger than MAX_CHARGE, in t's width and
  signedness, wrap-around included: from r's value on entry when the code
  before the loop sets it to a constant, else from any value (only for a
  bound that holds from every start: r < K unsigned, counting up).
Such a loop runs at most that many times round plus one per entry. Its back
edges that lie on no cycle of the body other than through the header (those
each way round takes at most once) need no count; back edges of loops nested
inside it are counted by their own loops. Every other back edge, and every
back edge of code that is not a natural loop (irreducible flow), keeps its
charge of one.
"""
from .insn import (
    BPF_LD, BPF_LDX, BPF_ALU, BPF_ALU64, BPF_JMP, BPF_JMP32, BPF_STX, BPF_ATOMIC, BPF_X,
    BPF_ADD, BPF_SUB, BPF_MOV, BPF_LSH, BPF_RSH, BPF_JA, BPF_JEQ, BPF_JNE, BPF_JGT, BPF_JGE, BPF_JLT, BPF_JLE,
    BPF_JSGT, BPF_JSGE, BPF_JSLT, BPF_JSLE, BPF_CALL, BPF_EXIT, BPF_FETCH, BPF_CMPXCHG,
    jump_target,
)

# BPF_RT_BACKEDGE_CHUNK in agent/bpf_rt.h: the largest charge at one loop entry,
# so that no more than two chunks of iterations run between two checks.
MAX_CHARGE = 65536
# how many blocks of a loop are checked for being on every way round
MAX_WALKS = 16

# (op, signed) of the condition on r that keeps the loop going, by jump op
_COND = {BPF_JEQ: ("eq", False), BPF_JNE: ("ne", False), BPF_JGT: ("gt", False),
         BPF_JGE: ("ge", False), BPF_JLT: ("lt", False), BPF_JLE: ("le", False),
         BPF_JSGT: ("gt", True), BPF_JSGE: ("ge", True), BPF_JSLT: ("lt", True),
         BPF_JSLE: ("le", True)}
_NEGATE = {"eq": "ne", "ne": "eq", "gt": "le", "le": "gt", "ge": "lt", "lt": "ge"}


class BudgetPlan:
    """How one function pays the run budget. charge: loop header pc -> what
    each entry into that loop is charged; body: header pc -> the pcs of the
    loop (a jump from any other pc into the header enters it)."""

    def __init__(self, cfg, loops):
        self.charge = {head: n for head, n, _, _ in loops}
        self.body = {head: cfg.pcs(blocks) for head, _, blocks, _ in loops}
        self._cfg = cfg
        self._loops_of = {}       # block -> the charged loops it is in
        for loop in loops:
            for b in loop[2]:
                self._loops_of.setdefault(b, []).append(loop)

    def counted(self, pc, target):
        """Whether the back edge from pc to target pays its own count: not when
        it closes a way round a charged loop that each way round takes at most
        once (it lies on no cycle of the body that misses the header)."""
        b = self._cfg.block_of[pc]
        for head, _, blocks, comp in self._loops_of.get(b, ()):
            if target in blocks:
                if target == head or comp.get(b) is None or comp.get(b) != comp.get(target):
                    return False
        return True


def defs(ins):
    """The registers an instruction writes."""
    cls = ins.cls
    if cls in (BPF_ALU, BPF_ALU64, BPF_LDX) or (cls == BPF_LD and ins.is_lddw()):
        return (ins.dst,)
    if cls == BPF_LD or (cls == BPF_JMP and ins.op == BPF_CALL):
        return (0, 1, 2, 3, 4, 5)       # calls, and legacy packet loads as the kernel runs them
    if cls == BPF_STX and ins.mode == BPF_ATOMIC:
        if ins.imm == BPF_CMPXCHG:
            return (0,)
        return (ins.src,) if ins.imm & BPF_FETCH else ()
    return ()


class _Cfg:
    """The basic blocks of one function (by start pc) and their edges; rpo and
    preds only for the blocks reachable from the start."""

    def __init__(self, prog, f):
        self.prog = prog
        self.f = f
        leaders = sorted(f.leaders)
        self.end = {}          # block -> the pc after it
        self.last = {}         # block -> its last instruction
        self.succ = {}
        self.block_of = {}
        for i, start in enumerate(leaders):
            end = leaders[i + 1] if i + 1 < len(leaders) else f.end
            insns = [prog[pc] for pc in range(start, end) if prog[pc] is not None]
            if not insns:
                continue
            last = insns[-1]
            self.end[start], self.last[start] = end, last
            for pc in range(start, end):
                self.block_of[pc] = start
            t = jump_target(last)
            if last.cls in (BPF_JMP, BPF_JMP32) and last.op == BPF_EXIT:
                succ = []
            elif last.cls in (BPF_JMP, BPF_JMP32) and last.op == BPF_JA:
                succ = [t]
            else:
                succ = [t] if t is not None else []
                if end < f.end and end not in succ:
                    succ.append(end)
            self.succ[start] = succ
        self._order()

    def insns(self, b):
        return [ins for ins in self.prog[b:self.end[b]] if ins is not None]

    def pcs(self, blocks):
        return {pc for b in blocks for pc in range(b, self.end[b])}

    def _order(self):
        """Reverse postorder of a depth-first walk from the start, and the
        predecessors of the blocks it reaches."""
        entry = self.f.start
        order, seen, stack = [], {entry}, [(entry, iter(self.succ[entry]))]
        while stack:
            b, it = stack[-1]
            s = next(it, None)
            if s is None:
                stack.pop()
                order.append(b)
            elif s not in seen:
                seen.add(s)
                stack.append((s, iter(self.succ[s])))
        order.reverse()
        self.rpo = {b: i for i, b in enumerate(order)}
        self.preds = {b: [] for b in order}
        for b in order:
            for s in self.succ[b]:
                self.preds[s].append(b)

    def loops(self):
        """header -> (its latches, its body): the natural loops. An edge to a
        header that dominates its source goes back in the walk's order; the
        blocks that reach such edges' sources without the header are a loop
        when nothing else enters them (else the flow is irreducible there and
        the loop is left out)."""
        heads = {}
        rpo = self.rpo
        for b in rpo:
            for s in self.succ[b]:
                if rpo[s] <= rpo[b]:
                    heads.setdefault(s, []).append(b)
        out = {}
        for head, latches in heads.items():
            body, work = {head}, list(latches)
            while work:
                b = work.pop()
                if b not in body:
                    body.add(b)
                    work.extend(self.preds[b])
            if all(p in body for b in body if b != head for p in self.preds[b]):
                out[head] = (latches, body)
        return out

    def every_time_round(self, head, latches, body, b):
        """Whether every way round the loop at head passes block b (b dominates
        its latches): no latch is reached from the header without it."""
        if b == head:
            return True
        if head in latches:
            return False        # the way round from the header to itself
        seen, work = {head, b}, [head]
        while work:
            for s in self.succ[work.pop()]:
                if s in body and s not in seen:
                    if s in latches:
                        return False
                    seen.add(s)
                    work.append(s)
        return True

    def cycles(self, nodes):
        """block -> an id its strongly connected component in the subgraph on
        nodes, for the blocks on a cycle of it (Tarjan)."""
        index, low, on, st, comp = {}, {}, set(), [], {}
        for root in nodes:
            if root in index:
                continue
            index[root] = low[root] = len(index)
            st.append(root)
            on.add(root)
            work = [(root, iter(self.succ[root]))]
            while work:
                v, it = work[-1]
                w = next(it, None)
                if w is not None:
                    if w not in nodes:
                        continue
                    if w not in index:
                        index[w] = low[w] = len(index)
                        st.append(w)
                        on.add(w)
                        work.append((w, iter(self.succ[w])))
                    elif w in on:
                        low[v] = min(low[v], index[w])
                    continue
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    members = []
                    while True:
                        w = st.pop()
                        on.discard(w)
                        members.append(w)
                        if w == v:
                            break
                    if len(members) > 1 or v in self.succ[v]:
                        for w in members:
                            comp[w] = v
        return comp

    def entry_value(self, b, r):
        """r's value at the end of block b when the code before sets it to a
        constant (followed back through blocks with a single predecessor)."""
        for _ in range(16):
            for ins in reversed(self.insns(b)):
                if r not in defs(ins):
                    continue
                if ins.cls in (BPF_ALU, BPF_ALU64) and ins.op == BPF_MOV and not ins.code & BPF_X \
                        and not ins.off:
                    return ins.imm % (1 << (64 if ins.cls == BPF_ALU64 else 32))
                if ins.is_lddw() and ins.src == 0:
                    return ins.imm64
                return None
            if b == self.f.start or len(self.preds[b]) != 1:
                return None
            b = self.preds[b][0]
        return None


def _trips(cond, signed, bits, u, step, k):
    """How many consecutive values of u, u + step, u + 2 * step ... (mod
    2**bits, compared signed or unsigned) satisfy `v cond k`; None when that is
    not bounded, or not without knowing u (None: any start)."""
    mod = 1 << bits
    lo, hi = (-(mod >> 1), (mod >> 1) - 1) if signed else (0, mod - 1)

    def view(x):
        x %= mod
        return x - mod if signed and x > hi else x

    k = view(k)
    step %= mod
    if step >= mod >> 1:
        step -= mod       # a displacement: its sign is the direction
    if step == 0:
        return None
    if u is not None:
        u = view(u)
    if cond == "le":
        if k == hi:
            return None
        cond, k = "lt", k + 1
    elif cond == "ge":
        if k == lo:
            return None
        cond, k = "gt", k - 1
    if cond == "eq":
        return 1                            # u + step != u
    if cond == "ne":
        if u is None:
            return None
        d = k - u                           # u and k in range: so is every value between
        return d // step if d % step == 0 and d // step >= 0 else None
    if cond == "lt":
        if step < 0 or k - 1 + step > hi:   # it would wrap round before leaving
            return None
        u = lo if u is None else u
        return max(0, -(-(k - u) // step))
    if step > 0 or k + 1 + step < lo:       # gt
        return None
    u = hi if u is None else u
    return max(0, -(-(u - k) // -step))


def _tested(cfg, t):
    """(r, zext): t compares register r, or r's low 32 bits zero-extended, when
    its operand is a copy made in its block (`x = r`, `w x = w r`, or
    `x = r; x <<= 32; x >>= 32` as u32 counters compile without alu32)."""
    before = cfg.insns(cfg.block_of[t.pc])[:-1]
    x, shifts = t.dst, []
    for i in range(len(before) - 1, -1, -1):
        ins = before[i]
        if x not in defs(ins):
            continue
        if ins.cls == BPF_ALU64 and ins.op in (BPF_LSH, BPF_RSH) and not ins.code & BPF_X \
                and ins.imm == 32 and len(shifts) < 2:
            shifts.append(ins.op)
            continue
        if ins.cls in (BPF_ALU, BPF_ALU64) and ins.op == BPF_MOV and ins.code & BPF_X and not ins.off \
                and ins.src != x and not any(ins.src in defs(j) for j in before[i + 1:]):
            if shifts == [BPF_RSH, BPF_LSH] and ins.cls == BPF_ALU64:
                return ins.src, True
            if not shifts:
                return ins.src, ins.cls == BPF_ALU
        break
    return (t.dst, False) if not shifts else (None, False)


def _charge(cfg, head, latches, body, comp):
    """One more than the most times round the loop at head per entry, or None
    when no induction register bounds it by a constant up to MAX_CHARGE."""
    reg_defs = {}
    for b in body:
        for ins in cfg.insns(b):
            for r in defs(ins):
                reg_defs.setdefault(r, []).append(ins)

    passes = {}

    def every_time_round(b):
        # each answer walks the body: a few candidates are enough (a loop
        # with many tests on its counter is left to the charge per back edge)
        if b not in passes:
            passes[b] = len(passes) < MAX_WALKS and cfg.every_time_round(head, latches, body, b)
        return passes[b]

    best = None
    for tb in body:
        t = cfg.last[tb]
        if t.cls not in (BPF_JMP, BPF_JMP32) or t.op not in _COND or t.code & BPF_X:
            continue
        target = jump_target(t)
        if (target in body) == (t.pc + 1 in body):
            continue
        r, zext = _tested(cfg, t)
        ds = reg_defs.get(r, ())
        d = ds[0] if len(ds) == 1 else None
        if d is None or d.cls not in (BPF_ALU, BPF_ALU64) or d.op not in (BPF_ADD, BPF_SUB) \
                or d.code & BPF_X or d.off:
            continue
        db = cfg.block_of[d.pc]
        if db in comp or not every_time_round(tb) or not every_time_round(db):
            continue
        step = d.imm if d.op == BPF_ADD else -d.imm
        cond, signed = _COND[t.op]
        if target not in body:
            cond = _NEGATE[cond]
        k = t.imm
        bits = 64 if d.cls == BPF_ALU64 and t.cls == BPF_JMP and not zext else 32
        if t.cls == BPF_JMP and bits == 32:
            # a 32-bit value compared in 64 bits: an unsigned 32-bit compare
            # when the constant is below 2**31
            if not 0 <= k < 1 << 31:
                continue
            signed = False
        starts = [cfg.entry_value(p, r) for p in cfg.preds[head] if p not in body]
        if head == cfg.f.start:
            starts.append(None)     # entered from the function's start
        worst = 0
        for r0 in starts:
            n = _trips(cond, signed, bits, None if r0 is None else r0 + step, step, k)
            if n is None:
                break
            worst = max(worst, n)
        else:
            if best is None or worst + 1 < best:
                best = worst + 1
    return best if best is not None and best <= MAX_CHARGE else None


def plan(prog, f):
    """The BudgetPlan of function f."""
    cfg = _Cfg(prog, f)
    loops = []
    for head, (latches, body) in cfg.loops().items():
        comp = cfg.cycles(body - {head})
        n = _charge(cfg, head, latches, body, comp)
        if n is not None:
            loops.append((head, n, body, comp))
    return BudgetPlan(cfg, loops)
