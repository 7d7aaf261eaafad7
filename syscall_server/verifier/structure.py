"""Load-time checks of a program, with the kernel verifier's errno and log
wording for what it rejects (kernel/bpf/verifier.c: check_subprogs,
check_cfg, resolve_pseudo_ldimm64, the per-instruction field checks of
do_check, and register initialisation).

bpfshim does not prove memory safety statically: a program that would fault
at run time is stopped by the runtime (agent/prog_run.c) and counted, and
the host goes on. What is checked here is what loaders depend on being
rejected at load time, and what the engines need to run code safely
(well-formed instructions, jumps in range, no fall-off, known helpers).
"""
import errno

from ..errors import BpfError
from .regs import MAX_VAR_OFF  # noqa: F401  (BPF_MAX_VAR_OFF, V.MAX_VAR_OFF to resolve_pseudo_ldimm64)
# the ISA under the short names the verifier reads (V.PSEUDO_MAP_FD, ...)
from ..isa import (  # noqa: F401
    BPF_LD as LD, BPF_LDX as LDX, BPF_ST as ST, BPF_STX as STX, BPF_ALU as ALU, BPF_JMP as JMP,
    BPF_JMP32 as JMP32, BPF_ALU64 as ALU64,
    BPF_W as W, BPF_H as H, BPF_B as B, BPF_DW as DW, SIZE_BYTES,
    BPF_IMM as IMM, BPF_ABS as ABS, BPF_IND as IND, BPF_MEM as MEM, BPF_MEMSX as MEMSX,
    BPF_ATOMIC as ATOMIC,
    BPF_ADD as ADD, BPF_SUB as SUB, BPF_MUL as MUL, BPF_DIV as DIV, BPF_OR as OR, BPF_AND as AND,
    BPF_LSH as LSH, BPF_RSH as RSH, BPF_NEG as NEG, BPF_MOD as MOD, BPF_XOR as XOR, BPF_MOV as MOV,
    BPF_ARSH as ARSH, BPF_END as END,
    BPF_JA as JA, BPF_JEQ as JEQ, BPF_JGT as JGT, BPF_JGE as JGE, BPF_JSET as JSET, BPF_JNE as JNE,
    BPF_JSGT as JSGT, BPF_JSGE as JSGE, BPF_CALL as CALL, BPF_EXIT as EXIT, BPF_JLT as JLT,
    BPF_JLE as JLE, BPF_JSLT as JSLT, BPF_JSLE as JSLE, BPF_TAIL_CALL as TAIL_CALL,
    BPF_K as K, BPF_X as X, BPF_FETCH as FETCH, BPF_XCHG as XCHG, BPF_CMPXCHG as CMPXCHG,
    BPF_PSEUDO_MAP_FD as PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE as PSEUDO_MAP_VALUE,
    BPF_PSEUDO_BTF_ID as PSEUDO_BTF_ID, BPF_PSEUDO_FUNC as PSEUDO_FUNC,
    BPF_PSEUDO_MAP_IDX as PSEUDO_MAP_IDX, BPF_PSEUDO_MAP_IDX_VALUE as PSEUDO_MAP_IDX_VALUE,
    BPF_PSEUDO_CALL as PSEUDO_CALL, BPF_PSEUDO_KFUNC_CALL as PSEUDO_KFUNC_CALL,
    MAX_BPF_STACK as STACK, INSN, Insn, decode,
)

# Program types whose func_proto is the networking one (sk_filter_func_proto,
# xdp_func_proto, tc_cls_act_func_proto): the tracing helpers are not theirs.
NET_PROG_TYPES = {1, 3, 4, 6, 8}   # SOCKET_FILTER, SCHED_CLS, SCHED_ACT, XDP, CGROUP_SKB
# Measured on 6.18 as root (bpf_base_func_proto gives networking programs the
# perfmon helpers: probe_read_kernel/user(_str), get_current_pid_tgid/uid_gid/
# comm/task, send_signal, ... load there); these are the ones it refuses.
TRACING_ONLY_HELPERS = {
    "bpf_probe_read", "bpf_probe_read_str", "bpf_probe_write_user", "bpf_get_stackid", "bpf_get_stack",
    "bpf_override_return", "bpf_get_func_ip", "bpf_get_attach_cookie",
}

# Helpers only some program types have: bpf_override_return is kprobe_prog_func_proto's
# (KPROBE: uprobes here); bpfshim also gives it to TRACEPOINT programs (syscall
# tracepoints: the syscall is not made), which the kernel does not.
PROG_TYPE_HELPERS = {"bpf_override_return": {2, 5}}   # KPROBE, TRACEPOINT
# ... and the packet helpers, by the func_proto of net/core/filter.c that has
# them (tc_cls_act, xdp, lwt_out/in/xmit/seg6local)
_TC, _XDP, _LWT_IN, _LWT_OUT, _LWT_XMIT, _LWT_SEG6LOCAL = {3, 4}, 6, 10, 11, 12, 19
PROG_TYPE_HELPERS.update({
    "bpf_csum_diff": {*_TC, _XDP, _LWT_IN, _LWT_OUT, _LWT_XMIT, _LWT_SEG6LOCAL},
    "bpf_csum_update": {*_TC, _LWT_XMIT},
    "bpf_skb_vlan_push": _TC,
    "bpf_skb_vlan_pop": _TC,
})
# ... and the socket helpers, by the func_proto of net/core/filter.c that has
# them (tc_cls_act, xdp, cg_skb, sk_skb, sock_addr, sock_filter, sock_ops,
# sk_msg, sk_lookup, lwt_out and the lwt ones that fall back to it); the
# sk_msg variant of get_cgroup_classid (no ctx argument) is not modelled
_SK_LOOKUP_TYPES = {3, 4, 6, 8, 14, 18}
PROG_TYPE_HELPERS.update({
    "bpf_sk_lookup_tcp": _SK_LOOKUP_TYPES, "bpf_sk_lookup_udp": _SK_LOOKUP_TYPES,
    "bpf_skc_lookup_tcp": _SK_LOOKUP_TYPES, "bpf_sk_release": _SK_LOOKUP_TYPES | {30},
    "bpf_sk_fullsock": {3, 4, 8}, "bpf_get_listener_sock": {3, 4, 8}, "bpf_tcp_sock": {3, 4, 8, 13},
    "bpf_get_socket_cookie": {1, 3, 4, 8, 9, 13, 14, 18},
    "bpf_get_netns_cookie": {9, 13, 16, 18},
    "bpf_get_cgroup_classid": {3, 4, 10, 11, 12, 19},
})
# ... and helpers the tracing program types lack (KPROBE, TRACEPOINT,
# PERF_EVENT, RAW_TRACEPOINT, RAW_TRACEPOINT_WRITABLE: is_tracing_prog_type)
TRACING_PROG_TYPES = {2, 5, 7, 17, 24}
NOT_FOR_TRACING = {"bpf_ktime_get_coarse_ns"}

MAX_INSNS = 1_000_000    # BPF_COMPLEXITY_LIMIT_INSNS
MAX_SUBPROGS = 256
LD_ABS_PROG_TYPES = {1, 3, 4}    # SOCKET_FILTER, SCHED_CLS, SCHED_ACT: the ones with gen_ld_abs


def _insntable():
    """bpf_opcode_in_insntable(): the opcodes the kernel's interpreter has."""
    ops = (ADD, SUB, AND, OR, LSH, RSH, XOR, MUL, MOV, ARSH, DIV, MOD)
    t = set()
    for cls in (ALU, ALU64):
        for op in ops:
            t.add(cls | op | K)
            t.add(cls | op | X)
        t.add(cls | NEG)
    t |= {ALU | END | 0x00, ALU | END | 0x08, ALU64 | END | 0x00}
    for cls in (JMP, JMP32):
        for op in (JEQ, JNE, JGT, JLT, JGE, JLE, JSGT, JSLT, JSGE, JSLE, JSET):
            t.add(cls | op | K)
            t.add(cls | op | X)
        t.add(cls | JA)
    t |= {JMP | CALL, JMP | EXIT, JMP | TAIL_CALL}
    for sz in (B, H, W, DW):
        t |= {LDX | MEM | sz, STX | MEM | sz, ST | MEM | sz}
    for sz in (B, H, W):
        t |= {LDX | MEMSX | sz, LD | ABS | sz, LD | IND | sz}
    t |= {STX | ATOMIC | W, STX | ATOMIC | DW, LD | IMM | DW}
    return frozenset(t)


INSNTABLE = _insntable()


class VerifierError(BpfError):
    pass


def is_ldimm64(i):
    return i.is_lddw()


class Log:
    """The verifier log: what the kernel would write for this rejection."""

    def __init__(self):
        self.lines = []

    def __call__(self, msg):
        self.lines.append(msg)

    def text(self):
        return "".join(l if l.endswith("\n") else l + "\n" for l in self.lines)


def reject(log, err, msg, loud=False):
    """The log line and the error; loud for what bpfshim lacks (errors.py)."""
    log(msg)
    raise VerifierError(err, msg.strip(), loud=loud)


class Verifier:
    """check(insns) raises VerifierError with the log filled; on success
    returns the list of subprogram start indices."""

    def __init__(self, insns, log, helper_ok, helper_name, prog_type):
        self.insns = insns
        self.log = log
        self.helper_ok = helper_ok         # func_id -> bool
        self.helper_name = helper_name     # func_id -> "bpf_map_lookup_elem" or None
        self.prog_type = prog_type
        # the calls to helpers this program type or bpfshim lacks, when the
        # caller lets do_check decide (the kernel refuses such a call only
        # where it is reachable: dead code may have one)
        self.defer_helpers = False
        self.deferred = {}          # func_id, or ("flow",) (_flow_reject) -> (errno, message)

    def _helper_reject(self, err, msg, func_id):
        if not self.defer_helpers:
            reject(self.log, err, msg)
        self.deferred.setdefault(func_id, (err, msg))

    # ---- per instruction fields (do_check / check_*_fields) ----
    def check_fields(self):
        n = len(self.insns)
        i = 0
        while i < n:
            ins = self.insns[i]
            c, cls = ins.code, ins.cls
            # check_reg_arg() after an ALU or jump insn's own field checks, before the others'
            if (ins.dst > 10 or ins.src > 10) and cls not in (ALU, ALU64, JMP, JMP32):
                self._regs_ok(ins)
            if cls in (ALU, ALU64):
                self._alu(i, ins)
            elif cls in (JMP, JMP32):
                self._jmp(i, ins)
                self._regs_ok(ins)
            elif cls == LD:
                if c == LD | IMM | DW:
                    if i + 1 >= n:
                        reject(self.log, errno.EINVAL, "invalid bpf_ld_imm64 insn")
                    nx = self.insns[i + 1]
                    if nx.code or nx.dst or nx.src or nx.off:
                        reject(self.log, errno.EINVAL, "invalid bpf_ld_imm64 insn")
                    if ins.src > PSEUDO_MAP_IDX_VALUE:
                        reject(self.log, errno.EINVAL, "unrecognized bpf_ld_imm64 insn")
                    if ins.off:     # check_ld_imm(), where do_check reaches it
                        self._flow_reject(errno.EINVAL, "BPF_LD_IMM64 uses reserved fields")
                    self._write(i, ins.dst)
                    i += 2
                    continue
                if (c & 0xE0) in (ABS, IND) and (c & 0x18) != DW:
                    # do_check's check_ld_abs() has the rules; if do_check cannot
                    # follow the program, the engines need an skb in r6 at least
                    if self.prog_type not in LD_ABS_PROG_TYPES:
                        self._flow_reject(errno.EINVAL,
                                          "BPF_LD_[ABS|IND] instructions not allowed for this program type")
                    i += 1
                    continue
                reject(self.log, errno.EINVAL, f"unknown opcode {c:02x}")
            elif cls == LDX:
                mode = c & 0xE0
                if mode not in (MEM, MEMSX) or (mode == MEMSX and (c & 0x18) == DW) or ins.imm:
                    if mode in (MEM, MEMSX) and ins.imm:
                        reject(self.log, errno.EINVAL, "BPF_LDX uses reserved fields")
                    reject(self.log, errno.EINVAL, f"unknown opcode {c:02x}")
                self._write(i, ins.dst)
            elif cls == ST:
                if (c & 0xE0) != MEM:
                    reject(self.log, errno.EINVAL, f"unknown opcode {c:02x}")
                if ins.src:
                    reject(self.log, errno.EINVAL, "BPF_ST uses reserved fields")
            elif cls == STX:
                mode = c & 0xE0
                if mode == MEM:
                    if ins.imm:
                        reject(self.log, errno.EINVAL, "BPF_STX uses reserved fields")
                elif mode == ATOMIC:
                    if (c & 0x18) not in (W, DW):
                        reject(self.log, errno.EINVAL, "invalid atomic operand size")
                    if ins.imm not in (ADD, ADD | FETCH, AND, AND | FETCH, OR, OR | FETCH, XOR, XOR | FETCH,
                                       XCHG, CMPXCHG, 0x100, 0x110):
                        reject(self.log, errno.EINVAL, f"BPF_ATOMIC uses invalid atomic opcode {ins.imm:02x}")
                    if ins.imm in (0x100, 0x110):
                        reject(self.log, errno.EINVAL, "unsupported: load-acquire/store-release atomics", loud=True)
                else:
                    reject(self.log, errno.EINVAL, f"unknown opcode {c:02x}")
            i += 1

    def _write(self, i, reg):
        if reg == 10:
            self._flow_reject(errno.EACCES, "frame pointer is read only")

    def _alu(self, i, ins):
        c = ins.code
        op, src = c & 0xF0, c & 0x08
        if op > END:
            reject(self.log, errno.EINVAL, f"invalid BPF_ALU opcode {op:x}")
        if op == END:
            if ins.src or ins.off or ins.imm not in (16, 32, 64) or (ins.cls == ALU64 and src):
                reject(self.log, errno.EINVAL, "BPF_END uses reserved fields")
        elif op == NEG:
            if src or ins.src or ins.off or ins.imm:
                reject(self.log, errno.EINVAL, "BPF_NEG uses reserved fields")
        elif op == MOV:
            if src:
                ok_off = (0, 8, 16, 32) if ins.cls == ALU64 else (0, 8, 16)
                if ins.imm or ins.off not in ok_off:
                    reject(self.log, errno.EINVAL, "BPF_MOV uses reserved fields")
            elif ins.src or ins.off:
                reject(self.log, errno.EINVAL, "BPF_MOV uses reserved fields")
        else:
            sdivmod = op in (DIV, MOD) and ins.off == 1
            if src:
                if ins.imm or (ins.off and not sdivmod):
                    reject(self.log, errno.EINVAL, "BPF_ALU uses reserved fields")
            elif ins.src or (ins.off and not sdivmod):
                reject(self.log, errno.EINVAL, "BPF_ALU uses reserved fields")
            if not src and op in (DIV, MOD) and ins.imm == 0:
                reject(self.log, errno.EINVAL, "div by zero")
            if not src and op in (LSH, RSH, ARSH):
                size = 64 if ins.cls == ALU64 else 32
                if ins.imm < 0 or ins.imm >= size:
                    reject(self.log, errno.EINVAL, f"invalid shift {ins.imm}")
        self._regs_ok(ins)
        self._write(i, ins.dst)

    def _regs_ok(self, ins):
        if ins.dst > 10 or ins.src > 10:
            reject(self.log, errno.EINVAL, f"R{max(ins.dst, ins.src)} is invalid")

    def _jmp(self, i, ins):
        c = ins.code
        op = c & 0xF0
        if op == CALL:
            if ins.cls == JMP32:
                reject(self.log, errno.EINVAL, f"unknown opcode {c:02x}")
            if c & X or ins.off or ins.dst or (ins.src not in (0, PSEUDO_CALL, PSEUDO_KFUNC_CALL)):
                reject(self.log, errno.EINVAL, "BPF_CALL uses reserved fields")
            if ins.src == PSEUDO_KFUNC_CALL:
                reject(self.log, errno.EINVAL, f"unsupported: kfunc calls (btf id {ins.imm})", loud=True)
            if ins.src == 0:
                self._helper(ins.imm)
        elif op == EXIT:
            if ins.cls == JMP32 or c & X or ins.imm or ins.off or ins.src or ins.dst:
                reject(self.log, errno.EINVAL, "BPF_EXIT uses reserved fields")
        elif op == JA:
            if c & X or ins.src or ins.dst or (ins.cls == JMP and ins.imm) or (ins.cls == JMP32 and ins.off):
                reject(self.log, errno.EINVAL, "BPF_JA uses reserved fields")
        elif op > JSLE:
            reject(self.log, errno.EINVAL, f"unknown opcode {c:02x}")
        else:
            if c & X:
                if ins.imm:
                    reject(self.log, errno.EINVAL, "BPF_JMP/JMP32 uses reserved fields")
            elif ins.src:
                reject(self.log, errno.EINVAL, "BPF_JMP/JMP32 uses reserved fields")

    def _helper(self, func_id):
        name = self.helper_name(func_id)
        if name is None:
            return self._helper_reject(errno.EINVAL, f"invalid func unknown#{func_id}", func_id)
        if not self.helper_ok(func_id):
            # A helper bpfshim does not have: the kernel's words for a helper it
            # does not know, so that loaders probing helpers (bpftrace's
            # detect_helper looks for "unknown func") see it as absent.
            return self._helper_reject(errno.EINVAL, f"unknown func {name}#{func_id}", func_id)
        types = PROG_TYPE_HELPERS.get(name)
        if (self.prog_type in NET_PROG_TYPES and name in TRACING_ONLY_HELPERS) or (types and self.prog_type not in types) \
                or (self.prog_type in TRACING_PROG_TYPES and name in NOT_FOR_TRACING):
            # check_helper_call()'s words (6.x) when the program type lacks it
            self._helper_reject(errno.EINVAL, f"program of this type cannot use helper {name}#{func_id}", func_id)

    # ---- resolve_pseudo_ldimm64's sanity pass ----
    def check_opcodes(self):
        i, n = 0, len(self.insns)
        while i < n:
            ins = self.insns[i]
            if ins.cls == LDX and (((ins.code & 0xE0) not in (MEM, MEMSX)) or ins.imm):
                reject(self.log, errno.EINVAL, "BPF_LDX uses reserved fields")
            if is_ldimm64(ins):
                if i + 1 >= n:
                    reject(self.log, errno.EINVAL, "invalid bpf_ld_imm64 insn")
                nx = self.insns[i + 1]
                if nx.code or nx.dst or nx.src or nx.off:
                    reject(self.log, errno.EINVAL, "invalid bpf_ld_imm64 insn")
                if ins.src not in (0, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, PSEUDO_BTF_ID, PSEUDO_FUNC, PSEUDO_MAP_IDX,
                                   PSEUDO_MAP_IDX_VALUE) or \
                        (ins.src in (PSEUDO_MAP_FD, PSEUDO_MAP_IDX) and nx.imm):
                    reject(self.log, errno.EINVAL, "unrecognized bpf_ld_imm64 insn")
                i += 2
                continue
            if ins.code not in INSNTABLE:
                reject(self.log, errno.EINVAL, f"unknown opcode {ins.code:02x}")
            i += 1

    # ---- check_subprogs ----
    def jump_target(self, i, ins):
        if ins.cls == JMP32 and (ins.code & 0xF0) == JA:
            return i + ins.imm + 1
        return i + ins.off + 1

    def subprogs(self):
        n = len(self.insns)
        starts = {0}
        for i, ins in enumerate(self.insns):
            if ins.code == JMP | CALL and ins.src == PSEUDO_CALL or \
                    is_ldimm64(ins) and ins.src == PSEUDO_FUNC:
                t = i + ins.imm + 1
                if t < 0 or t >= n:
                    reject(self.log, errno.EINVAL, f"function offset {ins.imm} at insn {i} is out of range"
                           if ins.code != JMP | CALL else "call to invalid destination")
                starts.add(t)
        if len(starts) > MAX_SUBPROGS:
            reject(self.log, errno.E2BIG, "too many subprograms")
        return sorted(starts)

    def check_subprogs(self, starts):
        n = len(self.insns)
        bounds = starts + [n]
        for k in range(len(starts)):
            lo, hi = bounds[k], bounds[k + 1]
            i = lo
            while i < hi:
                ins = self.insns[i]
                if ins.cls in (JMP, JMP32):
                    op = ins.code & 0xF0
                    if op not in (CALL, EXIT):
                        t = self.jump_target(i, ins)
                        if t < lo or t >= hi:
                            reject(self.log, errno.EINVAL, f"jump out of range from insn {i} to {t}")
                # every insn, an ld_imm64's second half too (resolve_pseudo_ldimm64 checks that one later)
                i += 1
            if self.insns[hi - 1].code not in (JMP | EXIT, JMP | JA, JMP32 | JA):
                reject(self.log, errno.EINVAL, "last insn is not an exit or jmp")

    # ---- check_cfg + register initialisation (a forward dataflow) ----
    def check_flow(self, starts):
        n = len(self.insns)
        for k, start in enumerate(starts):
            # subprog entry: r1-r5 are arguments (assumed set), r10 the frame
            init = {start: frozenset(range(1, 6)) | {10} if start else frozenset({1, 10})}
            # a subprogram may return r0 unset (the kernel hands it back to the
            # caller as it is); after a call this pass takes r0 as set
            self.main_exit = not start
            work = [start]
            seen = set()
            while work:
                i = work.pop()
                regs = init[i]
                ins = self.insns[i]
                seen.add(i)
                out, succ = self._step(i, ins, regs)
                for s in succ:
                    if s >= n:
                        reject(self.log, errno.EINVAL, f"jump out of range from insn {i} to {s}")
                    new = out if s not in init else init[s] & out
                    if s not in init or new != init[s]:
                        init[s] = new
                        work.append(s)
            self.reached = getattr(self, "reached", set()) | seen
        i = 0
        while i < n:
            if i not in self.reached:
                reject(self.log, errno.EINVAL, f"unreachable insn {i}")
            if is_ldimm64(self.insns[i]):
                if i + 1 in self.reached:
                    reject(self.log, errno.EINVAL, f"jump into the middle of ldimm64 insn {i}")
                i += 2
            else:
                i += 1

    def _flow_reject(self, err, msg):
        """A read of an unset register or a store past r10's frame: do_check
        refuses it where it is reached, so dead code may have one (as on
        the kernel). Deferred with the helpers, and first among them: the
        verdict if do_check does not walk the program."""
        if not self.defer_helpers:
            reject(self.log, err, msg)
        if ("flow",) not in self.deferred:
            self.deferred = {("flow",): (err, msg), **self.deferred}

    def _need(self, regs, *rs):
        for r in rs:
            if r not in regs:
                self._flow_reject(errno.EACCES, f"R{r} !read_ok")

    def _step(self, i, ins, regs):
        cls, c = ins.cls, ins.code
        if cls in (ALU, ALU64):
            op = c & 0xF0
            if op == MOV:
                if c & X:
                    self._need(regs, ins.src)
            elif op == END or op == NEG:
                self._need(regs, ins.dst)
            else:
                self._need(regs, ins.dst)
                if c & X:
                    self._need(regs, ins.src)
            return regs | {ins.dst}, [i + 1]
        if cls == LD:
            if ins.is_lddw():
                return regs | {ins.dst}, [i + 2]
            # LD_ABS/LD_IND: the skb in r6 (and the offset's register), r1-r5 clobbered, r0 set
            self._need(regs, 6, *((ins.src,) if (c & 0xE0) == IND else ()))
            return (regs - {1, 2, 3, 4, 5}) | {0}, [i + 1]
        if cls == LDX:
            self._need(regs, ins.src)
            return regs | {ins.dst}, [i + 1]
        if cls == ST:
            self._need(regs, ins.dst)
            self._stack(i, ins)
            return regs, [i + 1]
        if cls == STX:
            self._need(regs, ins.dst, ins.src)
            self._stack(i, ins)
            if (c & 0xE0) == ATOMIC:
                if ins.imm == CMPXCHG:
                    self._need(regs, 0)
                    return regs | {0}, [i + 1]
                if ins.imm & FETCH:
                    return regs | {ins.src}, [i + 1]
            return regs, [i + 1]
        op = c & 0xF0
        if op == EXIT:
            if self.main_exit:
                self._need(regs, 0)
            return regs, []
        if op == CALL:
            if ins.src == PSEUDO_CALL:
                return (regs - {1, 2, 3, 4, 5}) | {0}, [i + 1]
            return (regs - {1, 2, 3, 4, 5}) | {0}, [i + 1]
        if op == JA:
            return regs, [self.jump_target(i, ins)]
        self._need(regs, ins.dst)
        if c & X:
            self._need(regs, ins.src)
        return regs, [i + 1, self.jump_target(i, ins)]

    def _stack(self, i, ins):
        if ins.dst == 10:
            size = SIZE_BYTES[ins.code & 0x18]
            if ins.off >= 0 or ins.off < -STACK or ins.off + size > 0:
                self._flow_reject(errno.EACCES, f"invalid write to stack R10 off={ins.off} size={size}")

    def check(self):
        n = len(self.insns)
        if n == 0:
            reject(self.log, errno.EINVAL, "empty program")
        self.check_fields()
        starts = self.subprogs()
        self.check_subprogs(starts)
        self.check_flow(starts)
        return starts
