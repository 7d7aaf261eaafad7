"""Prints the table of scripts/bench jit from the harness outputs in OUT
(native.txt, aot.txt, interp.txt, kernel.txt when present) and times the AOT
compiler on each program's loaded instructions (OUT/xlated)."""
import math
import os
import statistics
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from syscall_server.aot.codegen import get_codegen  # noqa: E402
from syscall_server.isa import (  # noqa: E402
    BPF_LD_IMM64, BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE, BPF_PSEUDO_MAP_IDX, BPF_PSEUDO_MAP_IDX_VALUE,
)


def load(path):
    """name -> (ns per call, retval, load ms, native ns per call timed in the
    same rounds); None for a program that did not load."""
    out = {}
    if not path.exists():
        return out
    for line in path.read_text().split("\n"):
        f = line.split()
        if len(f) == 5:
            out[f[0]] = None if f[1] == "-" else (float(f[1]), int(f[2]), float(f[3]), float(f[4]))
    return out


def server_form(xlated, map_ids):
    """The dump shows maps by id (bpf_insn_prepare_dump); the compiler takes
    them by index in the program's map table, as PROG_LOAD relocated them."""
    out = bytearray(xlated)
    i = 0
    while i < len(out):
        code, regs, off, imm = struct.unpack_from("<BBhi", out, i)
        src = regs >> 4
        if code == BPF_LD_IMM64 and src in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE):
            idx = map_ids.index(imm & 0xffffffff)
            nsrc = BPF_PSEUDO_MAP_IDX if src == BPF_PSEUDO_MAP_FD else BPF_PSEUDO_MAP_IDX_VALUE
            struct.pack_into("<BBhi", out, i, code, (regs & 0xF) | (nsrc << 4), off, idx)
            i += 16
            continue
        i += 8
    return bytes(out)


def compile_ms(xdir, name, reps=5):
    xl = (xdir / f"{name}.xlated").read_bytes()
    raw = (xdir / f"{name}.maps").read_bytes()
    ids = list(struct.unpack(f"<{len(raw) // 4}I", raw))
    insns = server_form(xl, ids)
    cg = get_codegen()
    best = math.inf
    for _ in range(reps):
        # CPU time of this thread (LLVM runs in it): the machine may be shared
        t0 = time.thread_time()
        cg.library(insns).finalize()
        best = min(best, time.thread_time() - t0)
    return best * 1e3, len(insns) // 8


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def main():
    out = Path(sys.argv[1])
    native, aot, interp, kern = (load(out / f"{k}.txt") for k in ("native", "aot", "interp", "kernel"))
    names = (out / "names").read_text().split()
    # LLVM's set-up (target machines, pass builders) is once per server: not counted
    get_codegen().library(struct.pack("<BBhiBBhi", 0xb7, 0, 0, 0, 0x95, 0, 0, 0)).finalize()
    rows, ra, ri, comp = [], [], [], []
    for n in names:
        nat, a, i, k = native.get(n), aot.get(n), interp.get(n), kern.get(n)
        cms, ninsn = compile_ms(out / "xlated", n) if a else (float("nan"), 0)
        comp.append(cms)
        r_a = a[0] / a[3] if a else float("nan")
        r_i = i[0] / i[3] if i else float("nan")
        ra.append(r_a)
        ri.append(r_i)
        same = len({x[1] for x in (nat, a, i, k) if x}) == 1
        rows.append((n, ninsn, a[3] if a else math.nan, a[0] if a else math.nan,
                     i[0] if i else math.nan, k[0] if k else math.nan, r_a, r_i, cms,
                     "" if same else " retval differs!"))
    print("== jit: ns per call (BPF_PROG_TEST_RUN repeat=N in the caller; native: a loop of calls, "
          "timed in alternation with each engine; ratios to that) ==")
    hdr = f"{'program':<16} {'insns':>5} {'native':>10} {'aot':>10} {'interp':>11} {'kernel jit':>10} " \
          f"{'aot/nat':>8} {'int/nat':>8} {'compile ms':>10}"
    print(hdr)
    for r in rows:
        print(f"{r[0]:<16} {r[1]:>5} {r[2]:>10.1f} {r[3]:>10.1f} {r[4]:>11.1f} {r[5]:>10.1f} "
              f"{r[6]:>8.2f} {r[7]:>8.2f} {r[8]:>10.1f}{r[9]}")
    print(f"{'geomean':<16} {'':>5} {'':>10} {'':>10} {'':>11} {'':>10} {geomean(ra):>8.2f} "
          f"{geomean(ri):>8.2f} {'median':>4} {statistics.median(comp):.1f}")
    if not kern:
        print("(kernel column skipped: needs root and kernel eBPF)")
    print("targets: aot/native geomean <= 1.5, interp/native <= 15, median compile <= 10 ms")


if __name__ == "__main__":
    main()
