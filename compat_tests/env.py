"""What the differential tests need to know about this machine: where the
preload library is, whether the kernel side can run (probed: a program load
and a map create on the kernel), and how to run something as an
unprivileged user (probed: a switch to it)."""
import ctypes
import errno
import functools
import os
import shutil
import struct
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIM_LIB = ROOT / "syscall_server" / "_native" / "libbpfshim.so"
UNPRIV_UID = 65534


def _kernel_bpf(cmd, attr):
    """bpf(2) on the kernel (SYS_bpf, x86-64): (fd, errno)."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(attr + bytes(128 - len(attr)))
    return libc.syscall(321, cmd, buf, 128), ctypes.get_errno()


@functools.lru_cache(None)
def kernel_bpf_reason():
    """None when kernel eBPF works here, else why the kernel side is skipped:
    what the kernel sides need (a tracepoint program: CAP_BPF and
    CAP_PERFMON; a map) is tried, not inferred from the uid."""
    if os.environ.get("BPFSHIM_TEST_KERNEL") == "0":
        return "BPFSHIM_TEST_KERNEL=0 (the bpfshim sides only, as on a machine without kernel eBPF)"
    if os.environ.get("LD_PRELOAD"):
        return "LD_PRELOAD is set in the test process"
    insns = ctypes.create_string_buffer(bytes.fromhex("b700000000000000" "9500000000000000"))  # r0 = 0; exit
    lic = ctypes.create_string_buffer(b"GPL")
    probes = (("BPF_PROG_LOAD of a tracepoint program", 5,
               struct.pack("<IIQQ", 5, 2, ctypes.addressof(insns), ctypes.addressof(lic))),
              ("BPF_MAP_CREATE of an array", 0, struct.pack("<IIII", 2, 4, 4, 1)))
    for what, cmd, attr in probes:
        fd, err = _kernel_bpf(cmd, attr)
        if fd < 0:
            return f"kernel eBPF unavailable: {what} fails with {errno.errorcode.get(err, err)} ({os.strerror(err)})"
        os.close(fd)
    return None


@functools.lru_cache(None)
def unpriv_reason():
    """None when tests can run commands as uid 65534 (the switch is tried)."""
    if not shutil.which("setpriv"):
        return "setpriv is not installed"
    switch = subprocess.run(unpriv_cmd() + ["true"], capture_output=True, text=True)
    if switch.returncode != 0:
        why = switch.stderr.strip().splitlines()
        return f"cannot switch to uid {UNPRIV_UID}: {why[-1] if why else f'setpriv exited with {switch.returncode}'}"
    # the preload library and the server's interpreter must be usable by it
    py = ROOT / ".venv" / "bin" / "python"
    probe = subprocess.run(unpriv_cmd() + ["sh", "-c", f'test -r "{SHIM_LIB}" && test -x "{py}"'],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"uid {UNPRIV_UID} cannot read {SHIM_LIB} or run {py} (scripts/setup makes the tree readable)"
    return None


def unpriv_cmd():
    return ["setpriv", f"--reuid={UNPRIV_UID}", f"--regid={UNPRIV_UID}", "--clear-groups"]


def denylist(test):
    """{case: reason} of compat_tests/DENYLIST for `test`. A line is
    `<test> <case>: reason`; the case may contain spaces."""
    path = ROOT / "compat_tests" / "DENYLIST"
    out = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if line.startswith("#") or ":" not in line:
            continue
        head, _, why = line.partition(": ")
        t, _, c = head.partition(" ")
        if t == test:
            out.setdefault(c, why.strip())
    return out


def denied(test, case):
    """The reason compat_tests/DENYLIST gives for `<test> <case>`, or None."""
    return denylist(test).get(case)


def clang_bpf(src, out, *flags):
    """Build an eBPF object as libbpf loaders expect it (clang -target bpf
    -O2 -g, asm/ headers from the multiarch include directory)."""
    import subprocess
    multiarch = subprocess.run(["cc", "-print-multiarch"], capture_output=True, text=True).stdout.strip()
    argv = ["clang", "-target", "bpf", "-O2", "-g", "-D__TARGET_ARCH_x86", *flags]
    if multiarch:
        argv.append(f"-I/usr/include/{multiarch}")   # asm/types.h
    subprocess.run(argv + ["-c", str(src), "-o", str(out)], check=True)
    os.chmod(out, 0o755)


def hook_modes(stderr):
    """(site, "jmp" | "int3") for each site a process under
    BPFSHIM_DEBUG_HOOKS=1 patched, from its stderr (agent/uprobe.c)."""
    import re
    return re.findall(r"bpfshim: probe (\S+): (jmp|int3)", stderr)
