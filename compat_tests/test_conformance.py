"""The bpf_conformance ISA suite (313 programs, written elsewhere) on the
interpreter, in-process, and through `bpfshim conformance-plugin`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from syscall_server._native import ffi, lib

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "bpf_conformance" / "assembled.json"


def cases():
    if not CORPUS.exists():
        return []
    return json.loads(CORPUS.read_text())


CASES = cases()


def run_interp(code_hex, mem_hex):
    code = bytes.fromhex(code_hex)
    insns = ffi.new("char[]", code)
    mem = ffi.new("char[]", bytes.fromhex(mem_hex)) if mem_hex else ffi.NULL
    r0 = ffi.new("uint64_t *")
    rc = lib.bpf_conformance_run(insns, len(code) // 8, mem, len(mem_hex) // 2, ffi.NULL, r0)
    assert rc == 0
    return r0[0]


@pytest.mark.skipif(not CASES, reason=f"{CORPUS} is absent")
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_interpreter(case):
    assert run_interp(case["code"], case["mem"]) == case["result"] & (2**64 - 1)


@pytest.mark.skipif(not CASES, reason=f"{CORPUS} is absent")
@pytest.mark.parametrize("engine", ["interp", "aot"])
def test_plugin_command(engine):
    """A sample through the plugin protocol: hex program on stdin, memory as
    the argument, r0 in hex on stdout."""
    for case in CASES[::29]:
        p = subprocess.run([sys.executable, "-m", "syscall_server.conformance", "--engine", engine] +
                           ([case["mem"]] if case["mem"] else []),
                           input=case["code"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert int(p.stdout.strip(), 16) == case["result"] & (2**64 - 1), case["name"]
