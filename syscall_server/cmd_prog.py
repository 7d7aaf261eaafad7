"""BPF_PROG_LOAD, BPF_PROG_BIND_MAP and program info.

A loaded program is published as an image in its own memfd (struct
shim_prog_image, libbpf_shim/proto.h): relocated instructions, the ids of
the maps it uses, and the AOT blob when there is one. Processes run it from
that image; the server is not involved in running programs.
"""
import errno
import hashlib
import os
import struct
import time

from . import _native
from .cmd_btf import write_log
from .cmd_map import bpf_obj_name_cpy
from .errors import BpfError, unsupported
from .objects import BpfObject, registry
from . import verifier as V
from .isa import BPF_LD_IMM64

ffi, lib = _native.ffi, _native.lib
P = _native.proto
U = _native.uapi

LOG_MASK = 1 | 2 | 4 | 8    # BPF_LOG_LEVEL1 | LEVEL2 | STATS | FIXED
PROG_FLAGS_KNOWN = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 16)
GPL_LICENSES = {"GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL"}


def _func_names():
    try:
        elems = ffi.typeof("enum bpf_func_id").elements
    except (ffi.error, KeyError, AttributeError):
        return {}
    return {v: "bpf_" + n[len("BPF_FUNC_"):] for v, n in elems.items()
            if n.startswith("BPF_FUNC_") and n != "BPF_FUNC_unspec" and not n.startswith("__")}


FUNC_NAMES = _func_names()


# Helpers the loader side of libbpfshim.so provides itself (libbpf_shim/),
# besides the runtime's table in agent/helpers/.
LOADER_HELPERS = {"BPF_FUNC_perf_event_output"}


def helper_supported(func_id):
    if FUNC_NAMES.get(func_id, "").replace("bpf_", "BPF_FUNC_", 1) in LOADER_HELPERS:
        return True
    f = getattr(lib, "bpf_helper_supported", None) if lib is not None else None
    return bool(f(func_id)) if f is not None else False


def prog_type_name(t):
    return ffi.typeof("enum bpf_prog_type").elements.get(t, f"prog_type {t}")


class ProgObject(BpfObject):
    kind = P.SHIM_OBJ_PROG
    memfd_name = "bpf-prog"

    def __init__(self):
        super().__init__()
        self.maps = []
        self.load_time = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        self.uid = os.getuid()
        self.subprogs = [0]
        self.func_info = self.line_info = b""   # struct bpf_func_info / bpf_line_info records

    def status(self):
        st = {"type": prog_type_name(self.prog_type), "name": self.name, "insns": len(self.orig) // 8,
              "jited": bool(self.jited), "maps": [m.id for m in self.maps],
              "verify_ns": getattr(self, "verify_ns", 0)}
        st.update(run_counts(self))
        if self.calls_helper(U.BPF_FUNC_override_return):
            st["override_return"] = True      # changes what its probed function or syscall returns
        return st

    def calls_helper(self, func_id):
        return any(i.code == V.JMP | V.CALL and i.src == 0 and i.imm == func_id for i in V.decode(self.orig))


def bpf_prog_calc_tag(insns):
    """bpf_prog_calc_tag(): the instructions with map fds zeroed, hashed
    (SHA-256 since the kernel computes a program digest; SHA-1 before)."""
    out = bytearray(insns)
    was_ld_map = False
    for i in range(0, len(out), 8):
        code, regs, off, imm = struct.unpack_from("<BBhi", out, i)
        src = regs >> 4
        if not was_ld_map and code == BPF_LD_IMM64 and src in (V.PSEUDO_MAP_FD, V.PSEUDO_MAP_VALUE):
            was_ld_map = True
            struct.pack_into("<i", out, i + 4, 0)
        elif was_ld_map and code == 0 and regs == 0 and off == 0:
            was_ld_map = False
            struct.pack_into("<i", out, i + 4, 0)
        else:
            was_ld_map = False
    return hashlib.sha256(bytes(out)).digest()[:8]


def _log_setup(attr):
    """bpf_vlog_init(): the kernel's checks of log_level/log_size/log_buf."""
    level, size, buf = attr.log_level, attr.log_size, attr.log_buf
    if level & ~LOG_MASK:
        raise BpfError(errno.EINVAL)
    if bool(buf) != bool(size):
        raise BpfError(errno.EINVAL)
    if size > 0xFFFFFFFF >> 2:
        raise BpfError(errno.EINVAL)
    if buf and not level:
        raise BpfError(errno.EINVAL)
    return level, size, buf


# is_tracing_prog_type(): KPROBE, TRACEPOINT, PERF_EVENT, RAW_TRACEPOINT(_WRITABLE)
TRACING_PROG_TYPES = {2, 5, 7, 17, 24}
# the types whose programs run only at a kernel function or object found by
# attach_btf_id, which user space has no way to call
BTF_ATTACHED_PROG_TYPES = {U.BPF_PROG_TYPE_TRACING, U.BPF_PROG_TYPE_STRUCT_OPS, U.BPF_PROG_TYPE_EXT,
                           U.BPF_PROG_TYPE_LSM}


def check_map_prog_compatibility(m, prog, log):
    """The verifier's check of a map against the program that uses it (the
    part about the map's bpf_spin_lock)."""
    if m.attr.spin_lock_off >= 0:
        if prog.prog_type == U.BPF_PROG_TYPE_SOCKET_FILTER:
            V.reject(log, errno.EINVAL, "socket filter progs cannot use bpf_spin_lock yet")
        if prog.prog_type in TRACING_PROG_TYPES:
            V.reject(log, errno.EINVAL, "tracing progs cannot use bpf_spin_lock yet")


def relocate(ctx, insns, attr, prog, log):
    """resolve_pseudo_ldimm64(): map fds -> indices into prog.maps."""
    fd_array = attr.fd_array
    idx_of = {}

    def use(map_obj):
        if map_obj.id not in idx_of:
            check_map_prog_compatibility(map_obj, prog, log)
            idx_of[map_obj.id] = len(prog.maps)
            prog.maps.append(map_obj)
        return idx_of[map_obj.id]

    def map_by_fd(fd, i):
        try:
            kind, oid, _fl = ctx.conn.fdget(fd)
        except BpfError:
            V.reject(log, errno.EBADF, f"fd {fd} is not pointing to valid bpf_map")
        if kind != P.SHIM_OBJ_MAP:
            V.reject(log, errno.EINVAL, f"fd {fd} is not pointing to valid bpf_map")
        return registry.get(kind, oid)

    i = 0
    while i < len(insns):
        ins = insns[i]
        if V.is_ldimm64(ins):
            src = ins.src
            if src in (V.PSEUDO_MAP_FD, V.PSEUDO_MAP_VALUE, V.PSEUDO_MAP_IDX, V.PSEUDO_MAP_IDX_VALUE):
                if src in (V.PSEUDO_MAP_IDX, V.PSEUDO_MAP_IDX_VALUE):
                    if not fd_array:
                        V.reject(log, errno.EPROTO, "fd_idx without fd_array is invalid")
                    fd = struct.unpack("<i", ctx.conn.read(fd_array + 4 * ins.imm, 4))[0]
                else:
                    fd = ins.imm
                m = map_by_fd(fd, i)
                idx = use(m)
                if src in (V.PSEUDO_MAP_VALUE, V.PSEUDO_MAP_IDX_VALUE):
                    off = insns[i + 1].imm & 0xFFFFFFFF
                    a = m.attr
                    if off >= V.MAX_VAR_OFF:
                        V.reject(log, errno.EINVAL, f"direct value offset of {off} is not allowed")
                    if a.map_type != U.BPF_MAP_TYPE_ARRAY:
                        V.reject(log, errno.EINVAL, "map_direct_value_addr is not supported for this map type")
                    if a.max_entries != 1:
                        V.reject(log, errno.EINVAL, "direct value access on map with more than one element")
                    if off >= a.value_size:
                        V.reject(log, errno.EINVAL, f"invalid access to map value pointer, value_size={a.value_size} off={off}")
                    ins.src = V.PSEUDO_MAP_IDX_VALUE
                else:
                    ins.src = V.PSEUDO_MAP_IDX
                ins.imm = idx
            elif src == V.PSEUDO_BTF_ID:
                V.reject(log, errno.EINVAL, "unsupported: ksym (BPF_PSEUDO_BTF_ID) loads", loud=True)
            i += 2
            continue
        i += 1


def prog_load(ctx, attr):
    if attr.prog_flags & ~PROG_FLAGS_KNOWN:
        raise BpfError(errno.EINVAL)
    if attr.prog_flags & (1 << 16):
        raise unsupported(errno.EINVAL, "BPF_F_TOKEN_FD (bpf tokens)")
    if attr.insn_cnt == 0 or attr.insn_cnt > V.MAX_INSNS:
        raise BpfError(errno.E2BIG)
    try:
        lic = ctx.conn.read_str(attr.license, 127).decode(errors="replace")
    except BpfError as e:
        raise BpfError(errno.EFAULT if e.errno == errno.EFAULT else errno.EINVAL)
    ptype = attr.prog_type
    if ptype not in ffi.typeof("enum bpf_prog_type").elements or ptype == 0:
        raise BpfError(errno.EINVAL)
    if attr.prog_ifindex:
        raise unsupported(errno.EOPNOTSUPP, "program offload (prog_ifindex)")
    if ptype in BTF_ATTACHED_PROG_TYPES:
        # refused at load, not at attach: loaders probe these by loading one
        # (bpftrace's kfunc and iter probes, libbpf-tools' fentry_can_attach)
        # and then take the kprobe, tracepoint or no-iterator path
        raise unsupported(errno.EINVAL, f"{prog_type_name(ptype)} programs (attached to kernel functions "
                          "through BTF: fentry/fexit, iterators, struct_ops, freplace, LSM) are not served in "
                          "user space; they need kernel eBPF (run the tool without bpfshim, as root)")
    if attr.signature or attr.signature_size or attr.keyring_id:
        raise unsupported(errno.EINVAL, "signed programs (signature, keyring_id)")
    raw = ctx.conn.read(attr.insns, attr.insn_cnt * 8)
    name = bpf_obj_name_cpy(ffi.buffer(attr.prog_name))
    level, log_size, log_buf = _log_setup(attr)

    log = V.Log()
    prog = ProgObject()
    prog.prog_type = ptype
    prog.expected_attach_type = attr.expected_attach_type
    prog.name = name
    prog.gpl = lic in GPL_LICENSES
    prog.orig = raw
    prog.tag = bpf_prog_calc_tag(raw)
    prog.btf = None
    try:
        # the kernel's order: check_subprogs, resolve_pseudo_ldimm64,
        # check_cfg, then do_check. Out of the object lock but for the maps'
        # lookup (as the compile): a program of a million instructions
        # verifies for seconds, reading only its own instructions and the
        # maps this request holds (Registry.get)
        with registry.unlocked():
            insns = V.decode(raw)
            v = V.Verifier(insns, log, helper_supported, FUNC_NAMES.get, ptype)
            starts = v.subprogs()
            v.check_subprogs(starts)
            v.check_opcodes()
        relocate(ctx, insns, attr, prog, log)
        with registry.unlocked():
            v.defer_helpers = True
            v.check_fields()
            v.check_flow(starts)
            t0 = time.perf_counter_ns()
            processed = V.do_check(insns, ptype, prog.maps, log, ffi, attr.prog_flags, attr.expected_attach_type,
                                   v.deferred)
        prog.verify_ns = time.perf_counter_ns() - t0
        if v.deferred and processed is None:
            # do_check did not follow every path: a call to a missing helper may be reachable
            V.reject(log, *next(iter(v.deferred.values())))
    except BpfError as e:
        if level:
            if not log.lines:
                log(e.strerror)
            log("processed 0 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0")
            # bpf_vlog_finalize(): a log that did not fit turns any result into ENOSPC
            if write_log(ctx, log_buf, log_size, level, log.text()):
                raise BpfError(errno.ENOSPC)
        raise
    prog.subprogs = starts
    xl = b"".join(ins.pack() for ins in insns)
    prog.xlated = xl
    if attr.prog_btf_fd:
        kind, oid, _fl = ctx.conn.fdget(attr.prog_btf_fd)
        if kind != P.SHIM_OBJ_BTF:
            raise BpfError(errno.EINVAL)
        prog.btf = registry.get(kind, oid)
    prog.func_info, prog.line_info = _btf_info(ctx, attr, starts, len(insns), log, level, log_buf, log_size)
    with registry.unlocked():     # compiling may take seconds: other callers go on
        prog.jited = compile_aot(xl, log)
    _publish(prog, xl)
    registry.add(prog)
    for m in prog.maps:
        prog.hold_child(m)
    if prog.btf is not None:
        prog.hold_child(prog.btf)
    _rewrite_image_id(prog)
    prog.verified_insns = processed or len(insns)
    if level:
        log(f"processed {prog.verified_insns} insns (limit 1000000) max_states_per_insn 0 total_states 0 "
            f"peak_states 0 mark_read 0")
        err = write_log(ctx, log_buf, log_size, level, log.text())
        if err:
            registry.drop(prog)
            raise BpfError(err)
    return ctx.new_fd(prog)


FUNC_INFO_SIZE = ffi.sizeof("struct bpf_func_info")
LINE_INFO_SIZE = ffi.sizeof("struct bpf_line_info")
MAX_INFO_REC_SIZE = 252      # MAX_FUNCINFO_REC_SIZE, MAX_LINEINFO_REC_SIZE


def _info_records(ctx, what, uptr, cnt, urec, ksize):
    """The records of func_info / line_info, each cut to the kernel's size
    (a longer user record must have a zero tail)."""
    if urec < ksize or urec > MAX_INFO_REC_SIZE or urec % 4:
        raise BpfError(errno.EINVAL, f"invalid {what} info rec size {urec}")
    raw = bytes(ctx.conn.read(uptr, urec * cnt))
    recs = []
    for i in range(cnt):
        r = raw[i * urec:(i + 1) * urec]
        if any(r[ksize:]):
            raise BpfError(errno.E2BIG, f"nonzero tailing record in {what} info")
        recs.append(r[:ksize])
    return recs


def _btf_info(ctx, attr, starts, insn_cnt, log, level, log_buf, log_size):
    """check_btf_func() / check_btf_line(): the func_info and line_info
    records kept for OBJ_GET_INFO_BY_FD (bpftool prints the program's
    function names and source lines from them)."""
    if not attr.func_info_cnt and not attr.line_info_cnt:
        return b"", b""
    try:
        if not attr.prog_btf_fd:
            raise BpfError(errno.EBADF)
        funcs = lines = []
        if attr.func_info_cnt:
            funcs = _info_records(ctx, "func", attr.func_info, attr.func_info_cnt, attr.func_info_rec_size,
                                  FUNC_INFO_SIZE)
            offs = [struct.unpack_from("<I", r)[0] for r in funcs]
            if offs[0]:
                raise BpfError(errno.EINVAL, f"nonzero insn_off {offs[0]} for the first func info record")
            for a, b in zip(offs, offs[1:]):
                if b <= a:
                    raise BpfError(errno.EINVAL, f"same or smaller insn offset ({b}) than previous func info record ({a})")
            if len(funcs) != len(starts):
                raise BpfError(errno.EINVAL, "number of funcs in func_info doesn't match number of subprogs")
            if offs != list(starts):
                raise BpfError(errno.EINVAL, "func_info BTF section doesn't match subprog layout in BPF program")
        if attr.line_info_cnt:
            lines = _info_records(ctx, "line", attr.line_info, attr.line_info_cnt, attr.line_info_rec_size,
                                  LINE_INFO_SIZE)
            prev = -1
            for i, r in enumerate(lines):
                off = struct.unpack_from("<I", r)[0]
                if (i == 0 and off) or off <= prev or off >= insn_cnt:
                    raise BpfError(errno.EINVAL, f"Invalid insn_off {off} in line_info[{i}]" if i else
                                   f"nonzero insn_off {off} for the first line info record")
                prev = off
    except BpfError as e:
        if level and e.strerror:
            log(e.strerror)
            write_log(ctx, log_buf, log_size, level, log.text())
        raise BpfError(e.errno)
    return b"".join(funcs), b"".join(lines)


def compile_aot(xl, log):
    """The AOT blob, or b"" (interpreter) when AOT is off or unavailable."""
    if os.environ.get("BPFSHIM_ENGINE", "aot") != "aot":
        return b""
    try:
        from .aot import compile_program
    except ImportError:
        return b""
    try:
        return compile_program(xl)
    except OSError as e:
        print(f"bpfshim: AOT compile failed, using the interpreter: {e}", flush=True)
        return b""


def _publish(prog, xl):
    img_size = ffi.sizeof("struct shim_prog_image")
    insns_off = (img_size + 7) & ~7
    maps_off = insns_off + len(xl)
    jited_off = (maps_off + 4 * len(prog.maps) + 15) & ~15
    stats_off = (jited_off + len(prog.jited) + STATS_PAGE - 1) & ~(STATS_PAGE - 1)
    total = stats_off + STATS_PAGE
    prog.open_fd(total)
    img = ffi.new("struct shim_prog_image *")
    img.magic = P.SHIM_PROG_MAGIC
    img.version = 1
    img.prog_type = prog.prog_type
    img.expected_attach_type = prog.expected_attach_type
    img.insn_cnt = len(xl) // 8
    img.nr_maps = len(prog.maps)
    img.jited_len = len(prog.jited)
    img.insns_off, img.maps_off, img.jited_off = insns_off, maps_off, jited_off
    img.stats_off = prog.stats_off = stats_off
    nm = prog.name.encode()
    ffi.memmove(img.name, nm, len(nm))
    img.gpl = int(prog.gpl)
    data = bytearray(total)
    data[:img_size] = bytes(ffi.buffer(img))
    data[insns_off:maps_off] = xl
    data[maps_off:maps_off + 4 * len(prog.maps)] = b"".join(struct.pack("<I", m.id) for m in prog.maps)
    data[jited_off:jited_off + len(prog.jited)] = prog.jited
    os.pwrite(prog.fd, bytes(data), 0)


# The page of struct bpf_prog_counts (agent/bpf_rt.h) at the image's stats_off.
STATS_PAGE = 4096
COUNTS = struct.Struct("<QQ")


def run_counts(prog):
    """Runs stopped early, over every process that ran the program: by a
    fault, or by the run budget (over time, or detached while running)."""
    off = getattr(prog, "stats_off", 0)
    try:
        faults, overruns = COUNTS.unpack(os.pread(prog.fd, COUNTS.size, off)) if off else (0, 0)
    except (OSError, TypeError, struct.error):    # no fd: nothing counted yet
        faults = overruns = 0
    return {"faults": faults, "overruns": overruns}


def _rewrite_image_id(prog):
    os.pwrite(prog.fd, struct.pack("<I", prog.id), ffi.offsetof("struct shim_prog_image", "id"))


def prog_bind_map(ctx, attr):
    if attr.prog_bind_map.flags:
        raise BpfError(errno.EINVAL)
    kind, oid, _ = ctx.conn.fdget(attr.prog_bind_map.prog_fd)
    if kind != P.SHIM_OBJ_PROG:
        raise BpfError(errno.EINVAL)
    prog = registry.get(kind, oid)
    kind, oid, _ = ctx.conn.fdget(attr.prog_bind_map.map_fd)
    if kind != P.SHIM_OBJ_MAP:
        raise BpfError(errno.EINVAL)
    m = registry.get(kind, oid)
    if m not in prog.maps and m not in prog.children:
        prog.hold_child(m)
        prog.bound = getattr(prog, "bound", []) + [m]
    return 0


def prog_get_info(ctx, prog, uinfo, info_len):
    """bpf_prog_get_info_by_fd(): the counts-then-arrays pattern. What the
    caller passed (array pointers, record sizes) is kept; each count becomes
    the program's and min(its, the caller's) records are copied."""
    size = ffi.sizeof("struct bpf_prog_info")
    ctx.check_uarg_tail_zero(uinfo, size, info_len)
    info_len = min(size, info_len)
    out = ffi.new("struct bpf_prog_info *")
    ffi.memmove(out, ctx.conn.read(uinfo, info_len), info_len)

    def array(count_field, ptr_field, data, rec):
        ulen = getattr(out, count_field)
        setattr(out, count_field, len(data) // rec)
        if ulen and data:
            ctx.conn.write(getattr(out, ptr_field), data[:min(ulen * rec, len(data))])

    for nr, rs, want in (("nr_func_info", "func_info_rec_size", FUNC_INFO_SIZE),
                         ("nr_line_info", "line_info_rec_size", LINE_INFO_SIZE),
                         ("nr_jited_line_info", "jited_line_info_rec_size", 8)):
        if (getattr(out, nr) or getattr(out, rs)) and getattr(out, rs) != want:
            raise BpfError(errno.EINVAL)
    out.func_info_rec_size = FUNC_INFO_SIZE
    out.line_info_rec_size = LINE_INFO_SIZE
    out.jited_line_info_rec_size = 8
    out.type = prog.prog_type
    out.id = prog.id
    ffi.memmove(out.tag, prog.tag, 8)
    nm = prog.name.encode()
    ffi.memmove(out.name, nm.ljust(16, b"\0"), 16)
    out.load_time = prog.load_time
    out.created_by_uid = prog.uid
    out.gpl_compatible = 1 if prog.gpl else 0
    out.verified_insns = getattr(prog, "verified_insns", 0)
    maps = [m.id for m in prog.maps] + [m.id for m in getattr(prog, "bound", [])]
    array("nr_map_ids", "map_ids", b"".join(struct.pack("<I", x) for x in maps), 4)
    ulen = out.xlated_prog_len
    xl = _xlated_dump(prog)
    out.xlated_prog_len = len(xl)
    if ulen and xl:
        ctx.conn.write(out.xlated_prog_insns, xl[:min(ulen, len(xl))])
    ulen = out.jited_prog_len
    out.jited_prog_len = len(prog.jited)
    if ulen and prog.jited:
        ctx.conn.write(out.jited_prog_insns, prog.jited[:min(ulen, len(prog.jited))])
    # One image for all subprograms and no kernel addresses: the kernel's
    # answer when raw addresses are not shown (pointers zeroed).
    for nr, ptr in (("nr_jited_ksyms", "jited_ksyms"), ("nr_jited_func_lens", "jited_func_lens")):
        ulen = getattr(out, nr)
        setattr(out, nr, len(prog.subprogs) if prog.jited else 0)
        if ulen and prog.jited:
            setattr(out, ptr, 0)
    array("nr_func_info", "func_info", prog.func_info, FUNC_INFO_SIZE)
    array("nr_line_info", "line_info", prog.line_info, LINE_INFO_SIZE)
    out.nr_jited_line_info = 0
    ulen = out.nr_prog_tags
    out.nr_prog_tags = len(prog.subprogs)
    if ulen:
        ctx.conn.write(out.prog_tags, b"".join(_subprog_tags(prog)[:ulen]))
    out.btf_id = prog.btf.id if prog.btf is not None else 0
    out.run_time_ns = out.run_cnt = out.recursion_misses = 0
    out.attach_btf_obj_id = out.attach_btf_id = 0
    ctx.conn.write(uinfo, bytes(ffi.buffer(out))[:info_len])
    ctx.put_info_len(info_len)
    return 0


def _subprog_tags(prog):
    """The tag of each subprogram (the program's own when there is one)."""
    if len(prog.subprogs) == 1:
        return [bytes(prog.tag)]
    ends = prog.subprogs[1:] + [len(prog.orig) // 8]
    return [bytes(bpf_prog_calc_tag(prog.orig[a * 8:b * 8])) for a, b in zip(prog.subprogs, ends)]


def _xlated_dump(prog):
    """bpf_insn_prepare_dump(): map references shown as map ids."""
    out = bytearray(prog.xlated)
    i = 0
    while i < len(out):
        code, regs, off, imm = struct.unpack_from("<BBhi", out, i)
        src = regs >> 4
        if code == BPF_LD_IMM64 and src in (V.PSEUDO_MAP_IDX, V.PSEUDO_MAP_IDX_VALUE):
            mid = prog.maps[imm].id
            newsrc = V.PSEUDO_MAP_FD if src == V.PSEUDO_MAP_IDX else V.PSEUDO_MAP_VALUE
            struct.pack_into("<BBhi", out, i, code, (regs & 0xF) | (newsrc << 4), off, mid)
            i += 16
            continue
        i += 8
    return bytes(out)


def fdinfo(prog, f_flags):
    return (f"pos:\t0\nflags:\t{f_flags:08o}\nmnt_id:\t15\nino:\t{prog.id + 2000}\n"
            f"prog_type:\t{prog.prog_type}\nprog_jited:\t{1 if prog.jited else 0}\n"
            f"prog_tag:\t{prog.tag.hex()}\nmemlock:\t4096\nprog_id:\t{prog.id}\n"
            f"run_time_ns:\t0\nrun_cnt:\t0\nrecursion_misses:\t0\nverified_insns:\t{getattr(prog, 'verified_insns', 0)}\n")
