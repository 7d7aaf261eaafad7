"""`bpfshim conformance-plugin`: the bpf_conformance plugin protocol.

The program's bytes as hex on stdin, the input memory as hex in the first
argument (optional); r0 is printed in hex on stdout. An error goes to stderr
with a non-zero exit. r1 = a copy of the memory (or 0), r2 = its length,
helper 5 = "unwind" (agent/conformance.c).
"""
import argparse
import struct
import sys

from ._native import ffi, lib


def run(code, mem, engine):
    jit = ffi.NULL
    if engine == "aot":
        from .aot import compile_program
        # r2 = len(mem): a `mov64 r2, len` first (jumps and calls are relative)
        code = struct.pack("<BBhi", 0xB7, 2, 0, len(mem)) + code
        blob = compile_program(code)
        jit = lib.bpf_jit_load(blob, len(blob))
        if jit == ffi.NULL:
            raise OSError("bpf_jit_load failed")
    insns = ffi.new("char[]", code)
    cmem = ffi.new("char[]", mem) if mem else ffi.NULL
    r0 = ffi.new("uint64_t *")
    if lib.bpf_conformance_run(insns, len(code) // 8, cmem, len(mem), jit, r0):
        raise OSError("the program faulted")
    return r0[0]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bpfshim conformance-plugin")
    ap.add_argument("memory", nargs="?", default="")
    ap.add_argument("--engine", choices=("interp", "aot"), default=None)
    args = ap.parse_args(argv)
    engine = args.engine
    if engine is None:
        try:
            from .aot import compile_program  # noqa: F401
            engine = "aot"
        except ImportError:
            engine = "interp"
    try:
        code = bytes.fromhex("".join(sys.stdin.read().split()))
        mem = bytes.fromhex("".join(args.memory.split()))
        if not code or len(code) % 8:
            raise ValueError("program length is not a multiple of 8 bytes")
        print(f"{run(code, mem, engine):x}")
    except Exception as e:  # the protocol: a message and a non-zero exit
        print(f"bpfshim conformance-plugin: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
