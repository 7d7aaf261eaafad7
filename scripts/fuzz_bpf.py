#!/usr/bin/env python3
"""Run the bpf() fuzzer (scripts/bench.d/bpf_fuzz.c) through bpfshim and say
what it found: `fuzz_bpf.py [SEED] [COUNT] [--unpriv]` prints calls, crashes,
hangs, internal errors and leaked objects, one per line.

The calls are split into runs of CHUNK calls, each a fresh process with its
own seed (SEED * 100000 + run), so a crash or a hang (a run that outlives its
timeout) costs one run. One server serves them all (its own runtime
directory). Afterwards no fuzzing process is alive, so every object the
server still has beyond those it had before the first run is either pinned
(a mutated pin path the fuzzer could not know to unlink: unlinked here) or
leaked; leaked counts those, and whatever stays once the pins are gone.

Used by compat_tests/test_fuzz.py (a short pass) and `scripts/bench fuzz`.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from compat_tests.env import unpriv_cmd  # noqa: E402
from compat_tests.unpriv import Runtime  # noqa: E402

PY = ROOT / ".venv" / "bin" / "python"
SRC = ROOT / "scripts" / "bench.d" / "bpf_fuzz.c"
KINDS = ("maps", "progs", "links", "btf")


def build(out_dir):
    exe = Path(out_dir) / "bpf_fuzz"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(SRC)], check=True)
    os.chmod(exe, 0o755)
    return exe


class Side(Runtime):
    """One user's server in a fresh runtime directory (compat_tests/unpriv.py),
    and what the fuzz needs to ask it."""

    def __init__(self, unpriv):
        super().__init__(unpriv=unpriv and os.getuid() == 0, prefix="bpfshim-fuzz-")

    def status(self):
        """The server's live objects, {(kind, id): entry} (starts it if needed)."""
        argv = (unpriv_cmd() if self.unpriv else []) + [
            "env", f"BPFSHIM_RUNTIME_DIR={self.dir}", f"PYTHONPATH={ROOT}",
            str(PY), "-m", "syscall_server.cli", "status", "--json"]
        p = subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=60, cwd="/")
        if p.returncode:
            raise RuntimeError(f"bpfshim status failed: {p.stderr.strip()}")
        st = json.loads(p.stdout)
        return {(k, o["id"]): o for k in KINDS for o in st.get(k, [])}

    def unlink(self, paths):
        if paths:
            code = "import os, sys\nfor p in sys.argv[1:]:\n    os.unlink(os.fsencode(p))\n"
            subprocess.run(self.cmd(["/usr/bin/python3", "-c", code, *paths]), env=self.env(), timeout=60,
                           capture_output=True)

    def server_log(self):
        try:
            return Path(self.dir, "server.log").read_text(errors="replace")
        except OSError:
            return ""


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def run(seed=1, count=3000, chunk=1000, unpriv=False, timeout=60, work=None, say=None):
    """The fuzzer's findings as a dict (see the module doc)."""
    work = work or tempfile.mkdtemp(prefix="bpfshim-fuzzbuild-")
    os.chmod(work, 0o755)
    exe = build(work)
    side = Side(unpriv)
    res = {"calls": 0, "ok": 0, "crashes": 0, "hangs": 0, "internal_errors": 0, "leaked": 0,
           "server_alive": False, "server_tracebacks": 0, "details": []}
    try:
        before = set(side.status())
        runs = (count + chunk - 1) // chunk
        for k in range(runs):
            n = min(chunk, count - k * chunk)
            rseed = seed * 100000 + k
            p = subprocess.Popen(side.cmd([str(exe), str(rseed), str(n)]), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=side.env(), cwd="/", start_new_session=True)
            try:
                out, err = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                out, err = p.communicate()
                res["hangs"] += 1
                res["details"].append(f"run seed {rseed} ({n} calls): no end after {timeout} s")
                continue
            err = err.decode(errors="replace")
            res["internal_errors"] += err.count("internal error")
            for line in err.splitlines():
                if "internal error" in line and len(res["details"]) < 20:
                    res["details"].append(f"run seed {rseed}: {line.strip()}")
            if p.returncode < 0:
                res["crashes"] += 1
                res["details"].append(f"run seed {rseed} ({n} calls): killed by signal {-p.returncode}")
                res["calls"] += n
                continue
            if p.returncode:
                res["details"].append(f"run seed {rseed}: exit {p.returncode}: {err.strip()[-300:]}")
            m = re.search(rb"calls (\d+) ok (\d+)", out)
            if m:
                res["calls"] += int(m.group(1))
                res["ok"] += int(m.group(2))
            if say:
                say(f"  run {k + 1}/{runs}: {out.decode().strip()}")
        pids = side.server_pids()
        res["server_alive"] = bool(pids) and alive(pids[-1])
        after = side.status()
        left = {key: o for key, o in after.items() if key not in before}
        side.unlink(sorted({p for o in left.values() for p in o.get("pins", [])}))
        stays = {key: o for key, o in side.status().items() if key not in before}
        res["leaked"] = len(stays)
        for (kind, oid), o in sorted(stays.items())[:10]:
            res["details"].append(f"left: {kind} {oid} {json.dumps(o)[:200]}")
        log = side.server_log()
        res["server_tracebacks"] = log.count("Traceback")
        if res["server_tracebacks"]:
            res["details"].append("server log: " + log[log.index("Traceback"):][:1500])
    finally:
        side.close()
    return res


def main():
    ap = argparse.ArgumentParser(prog="scripts/bench fuzz")
    ap.add_argument("seed", nargs="?", type=int, default=1)
    ap.add_argument("count", nargs="?", type=int, default=100000)
    ap.add_argument("--chunk", type=int, default=2000)
    ap.add_argument("--timeout", type=int, default=120)
    ap.add_argument("--unpriv", action="store_true", help="as uid 65534 (when root)")
    a = ap.parse_args()
    print(f"== fuzz: {a.count} random bpf() calls through bpfshim, seed {a.seed}, runs of {a.chunk} ==", flush=True)
    r = run(a.seed, a.count, a.chunk, a.unpriv, a.timeout, say=lambda s: print(s, flush=True))
    for k in ("calls", "ok", "crashes", "hangs", "internal_errors", "leaked", "server_tracebacks", "server_alive"):
        print(f"{k:<18} {r[k]}")
    for d in r["details"]:
        print("  " + d)
    sys.exit(0 if not (r["crashes"] or r["hangs"] or r["leaked"] or r["internal_errors"]) else 1)


if __name__ == "__main__":
    main()
