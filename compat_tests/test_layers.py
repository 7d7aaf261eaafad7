"""The layers of libbpfshim.so (ARCHITECTURE.md, "Layers"): the loader side
(libbpf_shim/) and the agent (agent/'s hooks, attach-table follower and
syscall tracepoints) sit on the runtime (agent/rt/, the engines, helpers and
maps), and neither references the other; the runtime references neither.
Read from the objects `make` built (their undefined symbols against what each
layer defines) and from the sources' includes. Not a kernel behaviour: what
bpfshim's own structure must keep."""
import re
import subprocess
from pathlib import Path

import pytest

from compat_tests.env import ROOT

BUILD = ROOT / "build"
AGENT_FILES = {"uprobe"}                                    # agent/*.c of the agent layer
AGENT_DIRS = {"hook", "syscall"}                            # and agent/hook/, agent/syscall/
FORBIDDEN = {("shim", "agent"), ("agent", "shim"), ("runtime", "shim"), ("runtime", "agent")}
LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")


def layer_of(path):
    """shim, agent or runtime, for a source or object path under the tree."""
    rel = Path(path).relative_to(ROOT)
    parts = rel.parts[1:] if rel.parts[0] == "build" else rel.parts
    if parts[0] == "libbpf_shim":
        return "shim"
    if parts[0] == "agent":
        if (len(parts) == 2 and Path(parts[1]).stem in AGENT_FILES) or (len(parts) > 2 and parts[1] in AGENT_DIRS):
            return "agent"
        return "runtime"
    return None


def _nm(args, path):
    return subprocess.run(["nm", *args, str(path)], capture_output=True, text=True, check=True).stdout


def objects():
    objs = [p for p in sorted(BUILD.glob("agent/**/*.o")) + sorted(BUILD.glob("libbpf_shim/*.o"))
            if (ROOT / p.relative_to(BUILD).with_suffix(".c")).exists()]
    if not objs:
        pytest.skip("no objects under build/: run make")
    return objs


def test_no_symbol_crosses_the_layers():
    defined = {}
    for o in objects():
        for line in _nm(["--defined-only", "-g"], o).splitlines():
            defined.setdefault(line.split()[-1], layer_of(o))
    # libc functions the shim interposes are the process's libc to everyone
    libc = {l.split()[-1].split("@")[0] for l in _nm(["-D", "--defined-only"], LIBC).splitlines()} \
        if LIBC.exists() else set()
    bad = []
    for o in objects():
        me = layer_of(o)
        for line in _nm(["-u"], o).splitlines():
            sym = line.split()[-1]
            other = defined.get(sym)
            if other and (me, other) in FORBIDDEN and sym not in libc:
                bad.append(f"{o.relative_to(BUILD)} ({me}) uses {sym} ({other})")
    assert not bad, "\n".join(bad)


INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def test_no_include_crosses_the_layers():
    headers = {}
    for h in list(ROOT.glob("agent/**/*.h")) + list(ROOT.glob("libbpf_shim/*.h")):
        if "tests" not in h.parts and "boot" not in h.parts:
            headers.setdefault(h.name, layer_of(h))
            headers.setdefault(str(h.relative_to(h.parents[1])), layer_of(h))   # "hook/hook.h"
    bad = []
    for src in list(ROOT.glob("agent/**/*.[ch]")) + list(ROOT.glob("libbpf_shim/*.[ch]")):
        if "tests" in src.parts or "boot" in src.parts:
            continue
        me = layer_of(src)
        for inc in INCLUDE.findall(src.read_text()):
            other = headers.get(inc) or headers.get(Path(inc).name)
            if other and (me, other) in FORBIDDEN:
                bad.append(f"{src.relative_to(ROOT)} ({me}) includes {inc} ({other})")
    assert not bad, "\n".join(bad)


def test_no_weak_runtime_paths():
    """A path is defined once, by the layer that owns it: nothing falls back
    on a weak definition or a weak reference."""
    weak = re.compile(r"__attribute__\s*\(\(\s*weak")
    bad = [str(p.relative_to(ROOT)) for p in list(ROOT.glob("agent/**/*.c")) + list(ROOT.glob("libbpf_shim/*.c"))
           if "tests" not in p.parts and weak.search(p.read_text())]
    assert not bad, bad


def test_one_start_up_sequence():
    """Each library starts in one constructor (libbpf_shim/start/preload.c, agent/start/core.c)
    that runs every part's start-up steps in order; no other code of the
    libraries is a constructor (the map engine's fork handler excepted: it is
    also built into programs of its own, agent/maps/tests)."""
    ctor = re.compile(r"__attribute__\s*\(\(\s*constructor")
    found = sorted(str(p.relative_to(ROOT)) for p in list(ROOT.glob("agent/**/*.c")) + list(ROOT.glob("libbpf_shim/*.c"))
                   + list(ROOT.glob("libbpf_shim/start/*.c"))
                   if "tests" not in p.parts and "boot" not in p.parts and ctor.search(p.read_text()))
    assert found == ["agent/maps/shm_lock.c", "agent/start/core.c", "libbpf_shim/start/preload.c"], found
