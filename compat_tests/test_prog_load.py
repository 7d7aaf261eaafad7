"""BPF_PROG_LOAD error cases (and the loads loaders probe with) on the kernel
and through bpfshim: same errno, and a log that names the cause in the same
terms as the kernel's.

Every case runs in one child process per backend (this file run as a script:
`python3 test_prog_load.py run` prints JSON), so the bpfshim side runs under
LD_PRELOAD in a process of its own, and once more as uid 65534. The script
part is stdlib only (/usr/bin/python3 as uid 65534).
"""
import ctypes
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import progs_gen as G  # noqa: E402
from progs_gen import insn  # noqa: E402

SOCKET_FILTER = G.BPF_PROG_TYPE_SOCKET_FILTER
R0_0 = insn(G.ALU64 | G.MOV | G.K, 0, 0, 0, 0)
EXIT = insn(G.JMP | G.EXIT)
OK = R0_0 + EXIT
ATTR_SIZE = 144          # up to log_true_size; what libbpf passes today


def helper_call(func_id):
    return insn(G.JMP | G.CALL, 0, 0, 0, func_id)


def ld_map_fd(dst, fd):
    return insn(G.LD | G.IMM | G.DW, dst, G.PSEUDO_MAP_FD, 0, fd) + insn(0)


# A helper the kernel gives socket filters but bpfshim does not provide:
# chosen at run time in the bpfshim process from what its runtime reports
# (bpf_get_socket_cookie, bpf_get_socket_uid, bpf_skb_load_bytes_relative,
# ...); the kernel side uses the same id.
LACKING_CANDIDATES = (46, 47, 68, 6, 8, 7)


# name -> (insns builder, options). Builders get the process state (fds).
def cases(st):
    long_fail = R0_0 * 60 + insn(G.ALU64 | G.MOV | G.X, 0, 2) + EXIT   # R2 read after a long path
    return {
        "bad_opcode": dict(insns=R0_0 + insn(0xE7, 0, 0, 0, 0) + EXIT, phrase="unknown opcode"),
        "bad_opcode_ld_abs_dw": dict(insns=R0_0 + insn(G.LD | 0x20 | G.DW, 0, 0, 0, 0) + EXIT, phrase="unknown opcode"),
        "jump_out_of_range_fwd": dict(insns=insn(G.JMP | G.JA, 0, 0, 5) + OK, phrase="jump out of range"),
        "jump_out_of_range_back": dict(insns=R0_0 + insn(G.JMP | G.JA, 0, 0, -3) + EXIT,
                                       phrase="jump out of range"),
        "jump_out_of_range_cond": dict(insns=R0_0 + insn(G.JMP | G.JEQ | G.K, 0, 0, 7, 0) + EXIT,
                                       phrase="jump out of range"),
        "unknown_helper_10000": dict(insns=helper_call(10000) + EXIT, phrase="invalid func unknown#10000"),
        "helper_bpfshim_lacks": dict(insns=helper_call(st["lacking"]) + EXIT, phrase=None, lacking=True),
        # bpf_probe_read: a tracing helper the kernel refuses to networking programs
        "helper_wrong_prog_type": dict(insns=helper_call(4) + EXIT, phrase="program of this type cannot use helper"),
        # bpf_get_current_pid_tgid: a perfmon helper root's socket filters do get
        "perfmon_helper_in_socket_filter": dict(insns=helper_call(14) + EXIT, ok=True),
        "write_r10": dict(insns=insn(G.ALU64 | G.MOV | G.K, 10, 0, 0, 0) + OK, phrase="frame pointer is read only"),
        "write_r10_ldx": dict(insns=insn(G.LDX | G.MEM | G.DW, 10, 1, 0) + OK, phrase="frame pointer is read only"),
        "missing_exit": dict(insns=R0_0 + R0_0, phrase="last insn is not an exit or jmp"),
        "fall_off_into_subprog": dict(insns=insn(G.JMP | G.CALL, 0, G.PSEUDO_CALL, 0, 1) + R0_0 + OK,
                                      phrase="last insn is not an exit or jmp"),
        "too_many_insns": dict(insns=OK, insn_cnt=1_000_001),
        "insn_cnt_0": dict(insns=OK, insn_cnt=0),
        "bad_license_ptr": dict(insns=OK, license_ptr=1),
        "null_license_ptr": dict(insns=OK, license_ptr=0),
        "bad_name_chars": dict(insns=OK, name=b"bad name!"),
        "name_not_terminated": dict(insns=OK, name=b"a" * 16),
        "unknown_prog_type": dict(insns=OK, prog_type=1000),
        "unknown_prog_flags": dict(insns=OK, prog_flags=1 << 20),
        "log_level_without_buf": dict(insns=OK, log_level=1, log_size=0),
        "log_buf_without_level": dict(insns=OK, log_level=0, log_size=65536),
        # the kernel keeps the end of a log that does not fit and fails with ENOSPC
        "tiny_log_failing": dict(insns=long_fail, log_size=48, tiny_log=True),
        "tiny_log_failing_64": dict(insns=long_fail, log_size=64, tiny_log=True),
        "ldimm64_bad_map_fd": dict(insns=ld_map_fd(1, 999) + OK, phrase="fd 999 is not pointing to valid bpf_map"),
        "ldimm64_non_map_fd": dict(insns=ld_map_fd(1, st["devnull"]) + OK, phrase="is not pointing to valid bpf_map"),
        "ldimm64_truncated": dict(insns=R0_0 + insn(G.LD | G.IMM | G.DW, 0, 0, 0, 1), phrase=None),
        "garbage_past_attr": dict(insns=OK, attr_size=4096, poke=200),
        "garbage_in_attr_pad": dict(insns=OK, attr_size=ATTR_SIZE, poke=100),
        "uninit_reg_read": dict(insns=insn(G.ALU64 | G.MOV | G.X, 0, 2) + EXIT, phrase="R2 !read_ok"),
        "uninit_r0_exit": dict(insns=EXIT, phrase="R0 !read_ok"),
        "div_by_zero_imm": dict(insns=R0_0 + insn(G.ALU64 | G.DIV | G.K, 0, 0, 0, 0) + EXIT, phrase="div by zero"),
        "bad_shift_imm": dict(insns=R0_0 + insn(G.ALU64 | G.LSH | G.K, 0, 0, 0, 64) + EXIT, phrase="invalid shift 64"),
        "unreachable_insn": dict(insns=R0_0 + EXIT + R0_0 + EXIT, phrase="unreachable insn 2"),
        "reserved_field": dict(insns=insn(G.ALU64 | G.MOV | G.K, 0, 1, 0, 0) + EXIT, phrase="BPF_MOV uses reserved fields"),
        # what loaders probe with: must load
        "libbpf_probe_ktime_coarse": dict(insns=helper_call(160) + EXIT, attr_size=116, log_level=0, log_size=0,
                                          ok=True),
        "libbpf_nametest": dict(insns=OK, name=b"libbpf_nametest", attr_size=64, log_level=0, log_size=0, ok=True),
        "ok_with_log": dict(insns=OK, ok=True),
    }


def run_case(c):
    data = c["insns"]
    ib = ctypes.create_string_buffer(data, max(len(data), 8))
    lic = ctypes.create_string_buffer(b"GPL")
    log_size = c.get("log_size", 65536)
    log = ctypes.create_string_buffer(log_size) if log_size else None
    size = c.get("attr_size", ATTR_SIZE)
    a = ctypes.create_string_buffer(max(size, ATTR_SIZE))
    struct.pack_into("<IIQQIIQ", a, 0, c.get("prog_type", SOCKET_FILTER), c.get("insn_cnt", len(data) // 8),
                     ctypes.addressof(ib), c.get("license_ptr", ctypes.addressof(lic)),
                     c.get("log_level", 1), log_size, ctypes.addressof(log) if log else 0)
    struct.pack_into("<I", a, 44, c.get("prog_flags", 0))
    name = c.get("name", b"")
    a[48:48 + len(name)] = name
    if "poke" in c:
        a[c["poke"]] = 0x5A
    ret, err = G.bpf(G.BPF_PROG_LOAD, a, size)
    if ret >= 0:
        os.close(ret)
    text = log.raw.split(b"\0", 1)[0].decode(errors="replace") if log else ""
    return {"ok": ret >= 0, "errno": err, "log": text, "log_len": len(log.raw.split(b"\0", 1)[0]) if log else 0}


def lacking_helper():
    """The first candidate helper this process's bpf() refuses with EINVAL
    for a socket filter (the kernel accepts all of them)."""
    for h in LACKING_CANDIDATES:
        r = run_case(dict(insns=helper_call(h) + EXIT))
        if not r["ok"]:
            return h
    return None


def run_all(lacking, names=None):
    """One JSON line per case, flushed: a case that kills the process
    leaves the results before it."""
    st = {"devnull": os.open("/dev/null", os.O_RDONLY), "lacking": lacking or 0}
    for name, c in cases(st).items():
        if names and name not in names:
            continue
        print(json.dumps({name: run_case(c)}), flush=True)
    os.close(st["devnull"])


def main(argv):
    if argv[1:2] == ["lacking"]:
        print(json.dumps(lacking_helper()), flush=True)
        return 0
    if argv[1:2] == ["run"]:
        lacking = int(argv[2]) if len(argv) > 2 and argv[2] != "None" else None
        run_all(lacking, argv[3:])
        return 0
    return 2


# ---------------------------------------------------------------- pytest side
def _child(args, shim=False, nobody=False):
    """Runs this file as a script; returns (parsed JSON lines merged, exit status)."""
    from compat_tests import unpriv
    py, extra = sys.executable, []
    if shim:
        extra = [("BPFSHIM_ENGINE", os.environ.get("BPFSHIM_ENGINE", "interp"))]
    if nobody:
        assert shim, "the kernel side runs as root"
        py = G.NOBODY_PYTHON
        extra += list(G.nobody_env(os.environ, True).items())
    side = unpriv.KERNEL if not shim else unpriv.BPFSHIM_UNPRIV if nobody else unpriv.BPFSHIM
    p, _log = unpriv.run_side(side, [py, os.path.abspath(__file__)] + args, extra, prefix="bpfshim-progload-",
                              timeout=300)
    out = {}
    for line in p.stdout.decode(errors="replace").splitlines():
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if isinstance(v, dict):
            out.update(v)
        else:
            out["value"] = v
    return out, p.returncode, p.stderr.decode(errors="replace")[-2000:]


def _run_side(lacking, **kw):
    """All cases, in as few processes as the crashes allow: after a case
    that kills the process, the next process starts at the case after it."""
    res = {}
    todo = list(CASE_NAMES)
    while todo:
        out, rc, err = _child(["run", str(lacking)] + todo, **kw)
        res.update(out)
        todo = [n for n in todo if n not in res]
        if rc == 0 or not todo:
            for n in todo:
                res[n] = {"crash": rc, "stderr": err}
            break
        res[todo.pop(0)] = {"crash": rc, "stderr": err}
    return res


if __name__ == "__main__":
    sys.exit(main(sys.argv))

import pytest  # noqa: E402

from compat_tests.env import kernel_bpf_reason  # noqa: E402

_cache = {}


def results():
    if not _cache:
        if not G.kernel_ok():
            pytest.skip(f"kernel side: {kernel_bpf_reason()}")
        out, rc, err = _child(["lacking"], shim=True)
        assert rc == 0 and "value" in out, err
        lacking = out["value"]
        _cache["lacking"] = lacking
        _cache["kernel"] = _run_side(lacking)
        _cache["bpfshim"] = _run_side(lacking, shim=True)
        _cache["bpfshim@65534"] = _run_side(lacking, shim=True, nobody=True)
    return _cache


CASE_NAMES = list(cases({"devnull": 0, "lacking": 0}))


@pytest.mark.parametrize("side", ["bpfshim", "bpfshim@65534"])
@pytest.mark.parametrize("name", CASE_NAMES)
def test_prog_load(name, side):
    r = results()
    c = cases({"devnull": 0, "lacking": r["lacking"] or 0})[name]
    k, s = r["kernel"][name], r[side][name]
    assert "crash" not in k, k
    assert "crash" not in s, f"the {side} process died (signal {-s['crash']}) on this case: {s}"
    info = f"\nkernel:  {json.dumps(k)[-1500:]}\n{side}: {json.dumps(s)[-1500:]}"
    if c.get("lacking"):
        # the kernel accepts the helper; bpfshim refuses it at load time, in
        # the words loaders probe helpers with (libbpf, bpftrace: "unknown func")
        if r["lacking"] is None:
            pytest.skip("bpfshim provides every candidate helper")
        assert k["ok"], info
        assert not s["ok"] and s["errno"] == 22, info
        assert "unknown func" in s["log"], info
        return
    if c.get("ok"):
        assert k["ok"], "the kernel refused a load loaders rely on" + info
    assert (s["ok"], s["errno"]) == (k["ok"], k["errno"]), info
    if c.get("tiny_log"):
        # a truncated log: the buffer is filled to its last byte on both
        assert s["log_len"] == k["log_len"], info
        return
    if k["log"] and not k["ok"]:
        assert s["log"], "bpfshim wrote no log where the kernel did" + info
    phrase = c.get("phrase")
    if phrase and phrase in k["log"]:
        assert phrase in s["log"], info
