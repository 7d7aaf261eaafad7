"""Hybrid mode (`bpfshim run --kernel`, BPFSHIM_KERNEL=1): the loader's maps,
programs and kernel attachments are the kernel's. Each case runs the same
tool on the kernel (root, no library) and under `bpfshim run --kernel`, and
compares the outputs normalised as test_bpftrace.py does; the refusal of an
ordinary user and `bpfshim status`'s modes go beyond the kernel and are
asserted directly. Root only: hybrid mode needs kernel eBPF.
"""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from compat_tests import hang
from compat_tests.env import SHIM_LIB, ROOT, clang_bpf, kernel_bpf_reason, unpriv_cmd, unpriv_reason
from compat_tests.test_bpftrace import NOISE, normalise
from compat_tests.unpriv import Runtime, readable_tmpdir
from compat_tests.victims import build_usdt_victim

BPFTRACE = shutil.which("bpftrace")
BPFTOOL = shutil.which("bpftool")
BPFSHIM = str(ROOT / ".venv" / "bin" / "bpfshim")

# work(x) = x * 2 + 1; -DSAVED=1 / 3: it starts with push %rbx / push %r13
WORK_C = r"""
#if SAVED == 1     /* work() starts with push %rbx (x kept across a call) */
__attribute__((noipa)) long keep(long x) { sink += x; return x; }
__attribute__((noinline)) int work(int x) { keep(x); return x * 2 + 1; }
#elif SAVED == 3   /* with push %r13 (three values kept) */
__attribute__((noipa)) long keep(long x) { sink += x; return x; }
__attribute__((noinline)) int work(int x)
{
    long a = keep(x), b = keep(x + 1), c = keep(x + 2);
    keep(a * b);
    keep(b * c);
    return (int)(a * c - b * b + 1) + x * 2 + 1 - 0 * (int)keep(a);   /* x * 2 + 1 */
}
#else
__attribute__((noinline)) int work(int x) { sink += x; return x * 2 + 1; }
#endif
"""

# getppid() then work(i), N times (100): a kernel tracepoint and a uprobe of
# the same thread, in a known order; then sleep SLEEP ms, spin SPIN ms; with
# a 4th argument, as uid 65534 (started as root: the library's connection is root's)
VICTIM_C = r"""
#define _GNU_SOURCE
#include <grp.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
volatile long sink;
""" + WORK_C + r"""static long ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}
int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100;
    /* a 5th argument: be uid/gid 65534 from here on (bpf() is refused) */
    if (argc > 4 && (setgroups(0, NULL) || setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534)))
        return 3;
    for (int i = 0; i < n; i++) {
        sink += getppid();
        sink += work(i);
    }
    if (argc > 2)
        usleep(atoi(argv[2]) * 1000);
    for (long end = ms() + (argc > 3 ? atoi(argv[3]) : 0); ms() < end;)
        sink++;
    return 0;
}
"""
PROGS = os.path.join(os.path.dirname(__file__), "progs")

V = "{V}"
TP = "tracepoint:syscalls:sys_enter_getppid /pid == cpid/"
SCRIPTS = {
    # kernel tracepoint and uprobe counting into one map
    "count_same_map": TP + " { @[probe] = count(); } uprobe:{V}:work { @[probe] = count(); }",
    "count_same_key": TP + " { @n = count(); } uprobe:{V}:work { @n = count(); @s = sum(arg0); }",
    "hist_same_map": TP + " { @h = hist(1000); } uprobe:{V}:work { @h = hist(arg0); }",
    # a start time stored by the kernel probe, read by the user probe of the thread
    "tp_start_uprobe_reads": TP + " { @start[tid] = nsecs; } "
                             "uprobe:{V}:work /@start[tid]/ { @ok[nsecs >= @start[tid]] = count(); delete(@start[tid]); }",
    # and the reverse: stored by the uprobe, read by the exit tracepoint
    "uprobe_stores_tp_reads": "uprobe:{V}:work { @arg[tid] = arg0 + 1; } "
                              "tracepoint:syscalls:sys_exit_getppid /pid == cpid && @arg[tid]/ "
                              "{ @seen = count(); @sum = sum(@arg[tid]); } END { clear(@arg); }",
    "uretprobe_and_tp": "uretprobe:{V}:work { @r = sum(retval); } "
                        "tracepoint:syscalls:sys_exit_getppid /pid == cpid/ { @x = count(); }",
    # a sched tracepoint (served only by the kernel) beside a uprobe; the main
    # thread's: the kernel also sees the agent's thread exit (ARCHITECTURE.md)
    "sched_exit_and_uprobe": "tracepoint:sched:sched_process_exit /pid == cpid && tid == pid/ { @exit = count(); } "
                             "uprobe:{V}:work { @w = count(); }",
    "interval_and_begin": 'BEGIN { @b = 1; } interval:ms:50 { @i = count(); if (@i == 2) { exit(); } }',
    # a CPU_CLOCK sampling event of the kernel: the target spins 300 ms
    "profile_and_uprobe": "profile:hz:99 /pid == cpid/ { @sampled = 1; } uprobe:{V}:work { @w = count(); }",
    # stack ids: the kernel's stack map (a twin's ids follow the kernel's)
    "ustack_uprobe": "uprobe:{V}:work { @[ustack] = count(); }",
    "ustack_tp_and_uprobe": TP + " { @[ustack] = count(); } uprobe:{V}:work { @[ustack] = count(); }",
}
ARGS = {"profile_and_uprobe": " 100 0 300"}


@pytest.fixture(scope="module")
def hybrid():
    why = kernel_bpf_reason()
    if why is not None:
        pytest.skip(f"hybrid mode needs kernel eBPF: {why}")
    if not BPFTRACE:
        pytest.skip("bpftrace is not installed")
    d = readable_tmpdir("bpfshim-hybrid-")
    exe = os.path.join(d, "hvictim")
    with open(exe + ".c", "w") as f:
        f.write(VICTIM_C)
    subprocess.run(["cc", "-O1", "-fno-inline", "-o", exe, exe + ".c"], check=True)
    rt = Runtime(prefix="bpfshim-hybrid-rt-")
    yield exe, rt
    rt.close()
    shutil.rmtree(d, ignore_errors=True)


def hybrid_cmd(rt, argv):
    return [BPFSHIM, "run", "--kernel", "--"] + list(argv)


def run(argv, env=None, timeout=60):
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def compare(rt, argv):
    """argv on the kernel, then under `bpfshim run --kernel`; bpftrace's
    output normalised. Returns the hybrid run's output."""
    rc_k, out_k = run(argv, env=rt.env())
    rc_h, out_h = run(hybrid_cmd(rt, argv), env=rt.env())
    assert (rc_h, normalise(out_h)) == (rc_k, normalise(out_k)), f"kernel:\n{out_k}\nhybrid:\n{out_h}"
    return out_h


# work()'s first instruction: compiler flags, what objdump shows, the victim's name
VICTIM_PROLOGUES = {"endbr64": (["-O1", "-fcf-protection=branch"], "endbr64", "_endbr"),
                    "push": (["-O0", "-fcf-protection=none"], "push   %rbp", "_push"),
                    "push_rbx": (["-O1", "-fcf-protection=none", "-DSAVED=1"], "push   %rbx", "_rbx"),
                    "push_r13": (["-O1", "-fcf-protection=none", "-DSAVED=3"], "push   %r13", "_r13")}


def endbr_victim(exe, prologue="endbr64"):
    """The victim with work() starting with endbr64 (or push %rbp), where
    hybrid mode serves its uprobe in user space in processes with the
    library (bpfshim's jump after that instruction, the kernel's breakpoint
    in byte 0)."""
    flags, want, suffix = VICTIM_PROLOGUES[prologue]
    victim = exe + suffix
    if not os.path.exists(victim):
        subprocess.run(["cc", *flags, "-fno-inline", "-o", victim + ".tmp", exe + ".c"], check=True)
        dis = subprocess.run(["objdump", "-d", victim + ".tmp"], capture_output=True, text=True).stdout
        assert want in dis.split("<work>:")[1].splitlines()[1], dis.split("<work>:")[1][:200]
        os.rename(victim + ".tmp", victim)
    return victim


def work_offset(path):
    """The file offset of work() in path (its symbol's value: text is mapped
    at its file offset here)."""
    out = subprocess.run(["nm", path], capture_output=True, text=True, check=True).stdout
    return next(int(l.split()[0], 16) for l in out.splitlines() if l.endswith(" work"))


def libbpf_tool(exe, name):
    """compat_tests/progs/NAME.bpf.c and its loader NAME.c, built once
    beside the victim: (object, loader)."""
    d = os.path.dirname(exe)
    obj, loader = os.path.join(d, name + ".o"), os.path.join(d, name)
    if not os.path.exists(loader):
        clang_bpf(os.path.join(PROGS, name + ".bpf.c"), obj)
        subprocess.run(["cc", "-O2", "-o", loader, os.path.join(PROGS, name + ".c"), "-lbpf"], check=True)
    return obj, loader


def twin_line(victim):
    """What the agent of a process with the library says when it serves
    work() in user space (BPFSHIM_DEBUG_HOOKS)."""
    return f"bpfshim: probe {victim}+0x{work_offset(victim):x}: jmp"


def kernel_and_debug(rt, argv):
    """argv on the kernel, then under `bpfshim run --kernel` with
    BPFSHIM_DEBUG_HOOKS: (rc, output) of each, the hybrid run's without
    bpfshim's lines, and those lines (beyond the kernel)."""
    rc_k, out_k = run(argv, env=rt.env())
    env = rt.env()
    env["BPFSHIM_DEBUG_HOOKS"] = "1"
    rc_h, out_h = run(hybrid_cmd(rt, argv), env=env)
    said = [l for l in out_h.splitlines() if l.startswith("bpfshim:")]
    rest = "\n".join(l for l in out_h.splitlines() if not l.startswith("bpfshim:"))
    return (rc_k, out_k), (rc_h, rest), said


def compare_twin(rt, argv, victim):
    """compare() where the hybrid run's uprobe of work() in `victim` is to be
    served in user space: the agents say how they hooked it
    (BPFSHIM_DEBUG_HOOKS, beyond the kernel: asserted, then left out of the
    comparison). Returns the hybrid run's output."""
    (rc_k, out_k), (rc_h, rest), said = kernel_and_debug(rt, argv)
    said = sorted(set(said))
    assert (rc_h, normalise(rest)) == (rc_k, normalise(out_k)), f"kernel:\n{out_k}\nhybrid:\n{rest}"
    assert [l.split("/")[-1] for l in said] == [twin_line(victim).split("/")[-1]], said
    return rest


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_hybrid_bpftrace(name, hybrid):
    exe, rt = hybrid
    out = compare(rt, [BPFTRACE, "-e", SCRIPTS[name].replace(V, exe), "-c", exe + ARGS.get(name, "")])
    assert "@" in out, out     # the maps were printed: the probes ran


# USDT probes (with and without a semaphore) beside a kernel syscall
# tracepoint, into one map: in the victim (bpftrace -c, with the library)
# served in user space, the jump after the site's nop (the kernel's int3 in
# its byte), where no branch lands after the nop
USDT_SCRIPTS = {
    "usdt_and_tp": "usdt:{U}:app:tick { @[probe] = count(); @s = sum(arg1); } "
                   "usdt:{U}:app:plain { @[probe] = count(); } "
                   "tracepoint:syscalls:sys_enter_exit_group /pid == cpid/ { @[probe] = count(); }",
}
USDT_SITES = {"usdt_and_tp": ["jmp"]}


@pytest.mark.parametrize("name", sorted(USDT_SCRIPTS))
def test_hybrid_bpftrace_usdt(name, hybrid):
    exe, rt = hybrid
    usdt = build_usdt_victim(os.path.dirname(exe))
    if usdt is None:
        pytest.skip("sys/sdt.h is not installed (systemtap-sdt-dev)")
    argv = [BPFTRACE, "-e", USDT_SCRIPTS[name].replace("{U}", usdt), "-c", usdt]
    (rc_k, out_k), (rc_h, out), said = kernel_and_debug(rt, argv)
    assert (rc_h, normalise(out)) == (rc_k, normalise(out_k)), f"kernel:\n{out_k}\nhybrid:\n{out}"
    assert "usdt:" in out and "tracepoint:" in out, out
    # beyond the kernel: how the victim's agent took each USDT site
    sites = sorted(set(l.rsplit(": ", 1)[-1] for l in said if l.startswith(f"bpfshim: probe {usdt}+")))
    assert sites == USDT_SITES[name], said


def semaphore_seen(exe, rt, hybrid):
    """The USDT victim in watch mode, bpftrace -p on its `watched` probe for
    a moment, then bpftrace gone: the semaphore changes the victim saw, and
    (hybrid: bpftrace under `bpfshim run --kernel`, the victim with the
    library) how its agent took the site."""
    env = rt.env()
    err = exe + ".watch.err"
    pre = ["env", f"LD_PRELOAD={SHIM_LIB}", "BPFSHIM_DEBUG_HOOKS=1"] if hybrid else ["env", "-u", "LD_PRELOAD"]
    with open(err, "w") as ef:
        victim = subprocess.Popen(pre + [exe, "watch"], env=env, stdout=subprocess.PIPE, stderr=ef, text=True)
    try:
        assert victim.stdout.readline() == "ready\n"
        argv = [BPFTRACE, "-e", f"usdt:{exe}:app:watched {{ @ = count(); }} interval:ms:300 {{ exit(); }}",
                "-p", str(victim.pid)]
        rc, out = run(hybrid_cmd(rt, argv) if hybrid else argv, env=env)
        assert rc == 0, out
        seen, _ = victim.communicate(timeout=30)
    finally:
        victim.kill()
        victim.wait()
    # bpftrace -p names the file as /proc/PID/root/...
    return seen, sorted(set(l.rsplit(": ", 1)[-1] for l in open(err).read().splitlines()
                            if l.startswith("bpfshim: probe ") and f"{exe}+" in l))


def test_hybrid_usdt_semaphore(hybrid):
    """A USDT probe with a semaphore, served in user space in a process with
    the library: the semaphore reads what the kernel's run gives (the
    kernel's uprobe holds it in every process that maps the file; the twin
    adds nothing), up while traced and back to 0 after."""
    exe, rt = hybrid
    usdt = build_usdt_victim(os.path.dirname(exe))
    if usdt is None:
        pytest.skip("sys/sdt.h is not installed (systemtap-sdt-dev)")
    kernel, _ = semaphore_seen(usdt, rt, False)
    got, sites = semaphore_seen(usdt, rt, True)
    assert got == kernel and "semaphore 1" in kernel, (kernel, got)
    assert sites == ["jmp"], sites     # beyond the kernel: the twin took the site


# served in user space in the victim on an endbr64 work(): what counts into
# hash maps the loader folds into the kernel's (libbpf_shim/hybrid_fold.c)
TWIN_SCRIPTS = ("count_same_map", "count_same_key", "hist_same_map", "uretprobe_and_tp", "ustack_uprobe",
                "ustack_tp_and_uprobe")


TWIN_CASES = [(n, "endbr64") for n in TWIN_SCRIPTS] + [("uretprobe_and_tp", "push_r13"), ("hist_same_map", "push_rbx")]


@pytest.mark.parametrize("name,prologue", TWIN_CASES)
def test_hybrid_bpftrace_twin(name, prologue, hybrid):
    """The scripts above whose uprobe only adds to its maps, on a work() that
    starts with endbr64 (or a push of a register): in hybrid mode the victim
    (started by bpftrace -c, with the library) runs the uprobe in user space,
    counting into bpfshim maps that bpftrace's reads fold into the kernel's;
    the output is the kernel's."""
    exe, rt = hybrid
    victim = endbr_victim(exe, prologue)
    out = compare_twin(rt, [BPFTRACE, "-e", SCRIPTS[name].replace(V, victim), "-c", victim], victim)
    assert "@" in out, out
    if "ustack" in name:     # the stacks were found (the victim is gone at the print: addresses)
        assert out.count("@[\n    ") == name.count("_and_") + 1, out


# uprobes whose map uses are not only additions: no twin, the kernel's
# breakpoint serves them in every process (and the loader says why)
NO_TWIN_SCRIPTS = {"tp_start_uprobe_reads": "a decision depends on its value",
                   "uprobe_stores_tp_reads": "it updates or deletes other than by adding"}


@pytest.mark.parametrize("name", sorted(NO_TWIN_SCRIPTS))
def test_hybrid_bpftrace_no_twin(name, hybrid):
    """On an endbr64 work() too, a uprobe that reads a value a kernel probe
    stored, or stores one, gets no user-space twin (it would see or make
    only user space's part): output as on the kernel, and with
    BPFSHIM_DEBUG_HOOKS the loader's line naming why (beyond the kernel)."""
    exe, rt = hybrid
    victim = endbr_victim(exe)
    argv = [BPFTRACE, "-e", SCRIPTS[name].replace(V, victim), "-c", victim]
    (rc_k, out_k), (rc_h, rest), said = kernel_and_debug(rt, argv)
    assert (rc_h, normalise(rest)) == (rc_k, normalise(out_k)), f"kernel:\n{out_k}\nhybrid:\n{rest}"
    assert len(said) == 1 and "served by the kernel's breakpoint" in said[0] and \
        NO_TWIN_SCRIPTS[name] in said[0], said


def test_hybrid_libbpf_tool(hybrid):
    """A libbpf tool whose kernel tracepoint program and uprobe program share
    a hash map (a timestamp stored by tid on one side, read on the other,
    counts) and a ringbuf."""
    exe, rt = hybrid
    obj, loader = libbpf_tool(exe, "hybrid_loader")
    out = compare(rt, [loader, obj, exe])
    assert "events tracepoint 100 uprobe 100 seen_start 100" in out, out


def test_hybrid_bcc_tool(hybrid):
    """A BCC tool (TRACEPOINT_PROBE and attach_uprobe) writing into one
    BPF_HASH and one perf buffer."""
    if subprocess.run(["/usr/bin/python3", "-c", "import bcc"], capture_output=True).returncode:
        pytest.skip("BCC's python module is not installed")
    exe, rt = hybrid
    out = compare(rt, ["/usr/bin/python3", os.path.join(PROGS, "hybrid_bcc.py"), exe])
    assert "events tracepoint 100 uprobe 100" in out, out


def percpu_sums(dump):
    """Each entry of a bpftool -j dump of a per-CPU map without BTF: the sum
    of its CPUs' little-endian values."""
    return [sum(int.from_bytes(bytes(int(b, 16) for b in v["value"]), "little") for v in e["values"])
            for e in dump]


def live_dump_then_gone(argv, env, name):
    """Run argv; while it runs, the kernel's bpftool (no library) dumps map
    `name`; after it exits, whether a map of that name is left."""
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(100):
            rc, out = run([BPFTOOL, "-j", "map", "dump", "name", name])
            if rc == 0 and percpu_sums(json.loads(out)) == [50]:
                break
            time.sleep(0.05)
        dump = json.loads(out) if rc == 0 else out
    finally:
        p.wait(timeout=60)
    # the kernel frees a map after an RCU grace period once its last holder
    # (a program) is gone: a short wait, the same on both sides
    for _ in range(100):
        left = any(m.get("name") == name for m in json.loads(run([BPFTOOL, "-j", "map", "list"])[1]))
        if not left:
            break
        time.sleep(0.02)
    return percpu_sums(dump) if rc == 0 else dump, left


@pytest.mark.parametrize("probe", ["tracepoint", "uprobe"])
def test_hybrid_bpftool_during_and_after(probe, hybrid):
    """bpftool without the library dumps a running tool's map (its count
    there while the tool runs) and finds it gone after the tool exits. The
    uprobe: served in user space in the victim (endbr64), its counts folded
    into the kernel's map every 10 ms: bpftool sees them while the victim
    sleeps its 1.5 s after the calls."""
    if not BPFTOOL:
        pytest.skip("bpftool is not installed")
    exe, rt = hybrid
    name = f"AT_hy{os.getpid() % 100000}{probe[0]}"
    victim = endbr_victim(exe) if probe == "uprobe" else exe
    where = TP if probe == "tracepoint" else f"uprobe:{victim}:work"
    argv = [BPFTRACE, "-e", f"{where} {{ @{name[3:]} = count(); }}", "-c", f"{victim} 50 1500"]
    kernel = live_dump_then_gone(argv, rt.env(), name)
    hybrid_side = live_dump_then_gone(hybrid_cmd(rt, argv), rt.env(), name)
    assert hybrid_side == kernel == ([50], False), (kernel, hybrid_side)


@pytest.mark.parametrize("prologue", ["plain", "endbr64", "push", "push_rbx", "push_r13"])
def test_hybrid_processes_with_and_without_library(prologue, hybrid):
    """One uprobe, two processes at once: one runs the library (the agent),
    one does not; each call is counted once in each. endbr64, push of a
    register: the process with the library serves it in user space (the
    kernel's breakpoint taken away there, the byte under it read from the
    file), the other through the kernel's."""
    exe, rt = hybrid
    if prologue != "plain":
        exe = endbr_victim(exe, prologue)
    lib_exe = exe + "_lib"
    if not os.path.exists(lib_exe):
        os.link(exe, lib_exe)      # same file (one uprobe), another comm
    both = exe + "_both.sh"        # bpftrace -c does not parse quotes
    with open(both, "w") as f:
        f.write(f"#!/bin/sh\nenv LD_PRELOAD={SHIM_LIB} BPFSHIM_RUNTIME_DIR={rt.dir} {lib_exe} 300 &\n"
                f"env -u LD_PRELOAD {exe} 200 &\nwait\n")
    os.chmod(both, 0o755)
    argv = [BPFTRACE, "-e", f"uprobe:{exe}:work {{ @[comm] = count(); }}", "-c", f"/bin/sh {both}"]
    out = compare(rt, argv) if prologue == "plain" else compare_twin(rt, argv, exe)
    comm = os.path.basename(exe)[:15]
    assert f"{(comm + '_lib')[:15]}]: 300" in out and f"{comm}]: 200" in out, out


def array_values(dump):
    """The u64 values of a bpftool -j dump of an array, by key order."""
    out = []
    for e in dump:
        v = e.get("formatted", e).get("value", e.get("value")) if isinstance(e, dict) else None
        out.append(v if isinstance(v, int) else int.from_bytes(bytes(int(b, 16) for b in v), "little"))
    return out


@pytest.mark.parametrize("drop", ["root", "uid65534"])
def test_hybrid_array_twin(drop, hybrid):
    """A libbpf tool: a uprobe and a kernel tracepoint counting into one
    array and one hash map (an atomic add, or an insert when the key is new:
    in user space counted in shared memory, folded by the loader), two
    processes at once, one with the library (its agent serves the
    uprobe in user space, on the kernel's array) and one without (the
    kernel's uprobe): exact counts in each, as on the kernel, and the
    kernel's bpftool (no library) dumps them from the array during the run
    (no staleness: the user-space program's stores are the kernel memory's).
    That the process with the library was patched, and took the site from
    the kernel's breakpoint, goes beyond the kernel: its agent's line, and
    its count not doubled. uid65534: that process makes its calls as uid
    65534 (bpf() refused to it), after the library started as root."""
    exe, rt = hybrid
    if not BPFTOOL:
        pytest.skip("bpftool is not installed")
    obj, loader = libbpf_tool(exe, "hybrid_array")
    victim = endbr_victim(exe)
    want = [300, 200, 500, 0]
    results = []
    tool = [loader, obj, victim, "300", "200", "1500"] + (["drop"] if drop == "uid65534" else [])
    for argv in (tool, hybrid_cmd(rt, tool)):
        env = rt.env()
        env["BPFSHIM_DEBUG_HOOKS"] = "1"
        p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = p.stdout.readline()
            assert first.startswith("map_id "), first + p.stderr.read()
            seen = None
            for _ in range(100):        # the victims sleep 1.5 s after their calls
                rc, out = run([BPFTOOL, "-j", "map", "dump", "id", first.split()[1]])
                seen = array_values(json.loads(out)) if rc == 0 else out
                if seen == want:
                    break
                time.sleep(0.01)
            rest, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        results.append((p.returncode, rest, seen))
        lines = [l for l in err.splitlines() if l.startswith("bpfshim:")]
    assert results[1] == results[0] == (0, "lib 300 plain 200 tracepoint 500 other 0\nhash 300 200 500 0\n", want), \
        results
    assert lines == [twin_line(victim)], lines


def test_hybrid_array_twin_after_server_restart(hybrid):
    """The tool's programs and maps are made, then the server is killed
    (SIGKILL), then the uprobe is attached: the restarted server recovered
    the twin's maps but not the kernel maps' fds behind them, so the process
    with the library does not run the twin (beyond the kernel: no agent
    line) and the kernel's breakpoint counts there; the counts are exact,
    as on the kernel, instead of going to a segment beside the kernel's map."""
    exe, rt = hybrid
    obj, loader = libbpf_tool(exe, "hybrid_array")
    victim = endbr_victim(exe)
    tool = [loader, obj, victim, "300", "200", "0", "wait"]
    outs = []
    for argv in (tool, hybrid_cmd(rt, tool)):
        env = rt.env()
        env["BPFSHIM_DEBUG_HOOKS"] = "1"
        p = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        try:
            first = p.stdout.readline()
            assert first.startswith("map_id "), first + p.stderr.read()
            if argv is not tool:
                assert rt.server_pids(), "no server ran"
                rt.stop_servers(signal.SIGKILL)
            p.stdin.write("go\n")
            p.stdin.flush()
            out, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        outs.append((p.returncode, out, [l for l in err.splitlines() if l.startswith("bpfshim:")]))
    assert outs[1] == outs[0] == (0, "lib 300 plain 200 tracepoint 500 other 0\nhash 300 200 500 0\n", []), outs


def test_hybrid_bpftool_sees_kernel_maps(hybrid):
    """A map made and filled under the library is the kernel's: bpftool run
    without the library shows and dumps it as it shows one made on the kernel."""
    if not BPFTOOL:
        pytest.skip("bpftool is not installed")
    _exe, rt = hybrid
    outs = []
    for side, wrap in (("kernel", lambda a: a), ("hybrid", lambda a: hybrid_cmd(rt, a))):
        pin = f"/sys/fs/bpf/bpfshim_hybrid_{os.getpid()}_{side}"
        try:
            for argv in (["map", "create", pin, "type", "hash", "key", "4", "value", "8", "entries", "16",
                          "name", "hy_counts"],
                         ["map", "update", "pinned", pin, "key", "1", "0", "0", "0", "value", "7", "0", "0", "0",
                          "0", "0", "0", "0"]):
                rc, out = run(wrap([BPFTOOL] + argv), env=rt.env())
                assert rc == 0, out
            assert os.path.exists(pin)              # the real bpffs
            rc, show = run([BPFTOOL, "-j", "map", "show", "pinned", pin])
            assert rc == 0, show
            info = json.loads(show)
            rc, dump = run([BPFTOOL, "-j", "map", "dump", "pinned", pin])
            assert rc == 0, dump
            outs.append(({k: info[k] for k in ("type", "name", "flags", "bytes_key", "bytes_value", "max_entries")},
                         json.loads(dump)))
        finally:
            if os.path.exists(pin):
                os.unlink(pin)
    assert outs[1] == outs[0]


# A loader of two arrays, one it makes BPF_F_MMAPABLE: what it reads back
# (info, an element, its mmap of each); pins them for bpftool
ARRAYS_PY = r"""
import ctypes, errno, mmap, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    r = libc.syscall(ctypes.c_long(321), ctypes.c_long(cmd), buf, ctypes.c_long(128))
    return r, errno.errorcode.get(ctypes.get_errno(), "?") if r < 0 else "-"

for i, flags in enumerate((0, 0x400)):      # BPF_F_MMAPABLE
    fd, err = bpf(0, struct.pack("IIIII", 2, 4, 12, 10, flags))          # MAP_CREATE of an array
    info = ctypes.create_string_buffer(88)
    r, e = bpf(15, struct.pack("IIQ", fd, 88, ctypes.addressof(info)))   # OBJ_GET_INFO_BY_FD
    key, val = ctypes.create_string_buffer(struct.pack("I", 3)), ctypes.create_string_buffer(b"abcdefghijkl")
    u, ue = bpf(2, struct.pack("IIQQQ", fd, 0, ctypes.addressof(key), ctypes.addressof(val), 0))
    try:
        mm = mmap.mmap(fd, 4096)[16 * 3:16 * 3 + 12]
    except OSError as x:
        mm = errno.errorcode[x.errno]
    path = ctypes.create_string_buffer(f"{sys.argv[1]}_{i}".encode())
    p, pe = bpf(6, struct.pack("QI", ctypes.addressof(path), fd))       # OBJ_PIN
    print(flags, fd >= 0, err, r, e, struct.unpack_from("IxxxxIIII", info.raw), u, ue, mm, p, pe)
"""


def test_hybrid_arrays_mmapable(hybrid):
    """Arrays are the kernel's mmapable arrays (what user-space programs map,
    ARCHITECTURE.md): the loader reads back what it asked for (info's
    map_flags, an element, EINVAL for an mmap of an array it did not make
    mmapable), as on the kernel; bpftool without the library sees the flag
    bpfshim added (beyond the kernel: asserted)."""
    _exe, rt = hybrid
    d = os.path.dirname(_exe)
    script = os.path.join(d, "arrays.py")
    with open(script, "w") as f:
        f.write(ARRAYS_PY)
    outs, flags = [], []
    for side, wrap in (("kernel", lambda a: a), ("hybrid", lambda a: hybrid_cmd(rt, a))):
        pin = f"/sys/fs/bpf/bpfshim_hyarr_{os.getpid()}_{side}"
        try:
            rc, out = run(wrap(["/usr/bin/python3", script, pin]), env=rt.env())
            outs.append((rc, out))
            if BPFTOOL:
                flags.append([json.loads(run([BPFTOOL, "-j", "map", "show", "pinned", f"{pin}_{i}"])[1])["flags"]
                              for i in (0, 1)])
        finally:
            for i in (0, 1):
                if os.path.exists(f"{pin}_{i}"):
                    os.unlink(f"{pin}_{i}")
    assert outs[1] == outs[0] and outs[0][0] == 0, outs
    assert "EINVAL" in outs[0][1].splitlines()[0] and "abcdefghijkl" in outs[0][1].splitlines()[1], outs
    if BPFTOOL:
        assert flags == [[0, 0x400], [0x400, 0x400]], flags


def test_hybrid_status_modes(hybrid):
    """bpfshim status names each process's mode (beyond the kernel: asserted)."""
    _exe, rt = hybrid
    env = rt.env()
    procs = [subprocess.Popen(hybrid_cmd(rt, ["sleep", "3"]), env=env),
             subprocess.Popen([BPFSHIM, "run", "--", "sleep", "3"], env=env)]
    try:
        want = {p.pid: m for p, m in zip(procs, ("kernel", "user"))}
        for _ in range(50):
            rc, out = run([BPFSHIM, "status", "--json"], env=env)
            assert rc == 0, out
            got = {pr["pid"]: pr["mode"] for pr in json.loads(out[out.index("{"):])["processes"]}
            if all(pid in got for pid in want):
                break
        assert {pid: got.get(pid) for pid in want} == want, got
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_hybrid_refused_for_ordinary_user(hybrid):
    """uid 65534 has no kernel eBPF: the command fails before it runs, with
    one line naming what is missing; the same with BPFSHIM_KERNEL=1."""
    why = unpriv_reason()
    if why is not None:
        pytest.skip(why)
    urt = Runtime(unpriv=True, prefix="bpfshim-hybrid-u-")
    try:
        for argv in (unpriv_cmd() + ["env", f"BPFSHIM_RUNTIME_DIR={urt.dir}", BPFSHIM, "run", "--kernel", "--",
                                     "sh", "-c", "echo ran"],
                     urt.cmd(["sh", "-c", "echo ran"], extra_env=[("BPFSHIM_KERNEL", "1")])):
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            assert p.returncode == 1 and p.stdout == "", (p.returncode, p.stdout, p.stderr)
            lines = p.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("bpfshim: hybrid mode") and \
                "CAP_BPF and CAP_PERFMON are missing" in lines[0], p.stderr
    finally:
        urt.close()


# ---- a kernel uprobe and bpfshim's on one function of one process ----

# work() starts with endbr64 (-fcf-protection=branch), push %rbp (frame
# pointers) or push %r13 (registers kept across calls): bpfshim's jump goes after it and the kernel's breakpoint stays in
# byte 0 (agent/hook/hook.c site_after_first)
BOTH_C = r"""
#include <unistd.h>
volatile long sink;
""" + WORK_C + r"""int main(void)
{
    char c;
    for (int phase = 0; phase < 2; phase++) {
        /* the test attaches or detaches a tool (the agent's thread runs) */
        if (write(1, "w\n", 2) != 2 || read(0, &c, 1) != 1)
            return 1;
        for (int i = 0; i < 50; i++)
            sink += work(i);
    }
    return 0;
}
"""


def wait_for(pred, what, timeout=20):
    for _ in range(int(timeout / 0.02)):
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Tool:
    """bpftrace counting calls of work(): on the kernel, or through bpfshim
    in user space (its probe applied in the victim, which runs the agent)."""

    def __init__(self, exe, name, rt, shim, victim_err):
        argv = [BPFTRACE, "-B", "line", "-e", f"uprobe:{exe}:work {{ @{name} = count(); }}"]
        env = rt.env()
        if shim:
            env.update(LD_PRELOAD=str(SHIM_LIB))
        self.p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: "Attaching" in self.p.stdout.readline(), f"{name} to attach")
        if shim:      # the victim's agent says when the site is patched
            wait_for(lambda: "bpfshim: probe " in open(victim_err).read(), "the agent's patch")
        else:
            time.sleep(0.2)

    def stop(self):
        out = hang.interrupt(self.p, 30)
        return [l for l in out.splitlines() if l.startswith("@")]


def both_tools(exe, rt, first, second, detach, d):
    """Attach `first` then `second` ((name, shim) pairs), run 50 calls,
    detach the tool named `detach`, run 50 more: the victim's exit status and
    each tool's count."""
    err = os.path.join(d, "victim.err")
    env = rt.env()
    env.update(LD_PRELOAD=str(SHIM_LIB), BPFSHIM_DEBUG_HOOKS="1")
    with open(err, "w") as ef:
        v = subprocess.Popen([exe], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=ef)
    try:
        assert v.stdout.readline() == b"w\n"
        tools = {n: Tool(exe, n, rt, shim, err) for n, shim in (first, second)}
        v.stdin.write(b"g")
        v.stdin.flush()
        assert v.stdout.readline() == b"w\n"   # the first 50 calls made
        out = {detach: tools.pop(detach).stop()}
        v.stdin.write(b"g")
        v.stdin.flush()
        rc = v.wait(timeout=30)
        (rest,) = tools
        out[rest] = tools[rest].stop()
        return rc, out
    finally:
        if v.poll() is None:
            v.kill()
            v.wait()


PROLOGUES = {"endbr64": ["-fcf-protection=branch"], "push": ["-fcf-protection=none", "-O0"],   # gcc drops a leaf's frame above -O0
             "push_r13": ["-fcf-protection=none", "-DSAVED=3"]}
ORDERS = {"shim_on_shim_off": ("shim", "shim"), "shim_on_kernel_off": ("shim", "kernel"),
          "kernel_on_kernel_off": ("kernel", "kernel")}
CASES = [(pro, o) for pro in PROLOGUES for o in ORDERS]


@pytest.mark.parametrize("prologue,order", CASES)
def test_kernel_uprobe_beside_bpfshim(prologue, order, hybrid):
    """bpftrace on the kernel and bpftrace through bpfshim probe the same
    function of one process, attached in either order, either detached
    first: the process lives and each tool counts every call it was attached
    for, as two kernel tools do. With the jump at the entry, the kernel's
    removal of its breakpoint (shim_on_kernel_off) killed the process,
    bpfshim's removal took the kernel's breakpoint away (shim_on_shim_off)
    and a site under the kernel's breakpoint was refused (kernel_on_kernel_off;
    for push %rbp the byte under it is read from the file now)."""
    exe, rt = hybrid
    on, off = ORDERS[order]
    d = os.path.dirname(exe)
    both = os.path.join(d, f"both_{prologue}")
    if not os.path.exists(both):
        with open(both + ".c", "w") as f:
            f.write(BOTH_C)
        subprocess.run(["cc", "-O1", "-fno-inline", *PROLOGUES[prologue], "-o", both + ".tmp", both + ".c"],
                       check=True)
        dis = subprocess.run(["objdump", "-d", both + ".tmp"], capture_output=True, text=True).stdout
        want = {"endbr64": "endbr64", "push": "push   %rbp", "push_r13": "push   %r13"}[prologue]
        assert want in dis.split("<work>:")[1].splitlines()[1], dis.split("<work>:")[1][:200]
        os.rename(both + ".tmp", both)
    first, second = (("u", True), ("k", False)) if on == "shim" else (("k", False), ("u", True))
    detach = "u" if off == "shim" else "k"
    got = both_tools(both, rt, first, second, detach, d)
    # the kernel's reference: two kernel tools through the same steps
    want = both_tools(both, rt, (first[0], False), (second[0], False), detach, d)
    other = "k" if detach == "u" else "u"
    assert got == want == (0, {detach: [f"@{detach}: 50"], other: [f"@{other}: 100"]}), (got, want)


# ---- events of user-space twins, forwarded into the kernel's buffers ----

def compare_events(rt, argv, victim):
    """argv on the kernel, then under `bpfshim run --kernel`: exit status
    and output the kernel's, but for the agent's line that the process with
    the library served work() in user space (beyond the kernel: asserted).
    Returns the output."""
    (rc_k, out_k), (rc_h, rest), said = kernel_and_debug(rt, argv)
    assert (rc_h, rest.splitlines()) == (rc_k, out_k.splitlines()), (out_k, rest)
    assert said == [twin_line(victim)], said
    return rest + "\n"


@pytest.mark.parametrize("drop", ["root", "uid65534"])
def test_hybrid_twin_ringbuf_libbpf(drop, hybrid):
    """A libbpf tool whose kernel tracepoint program and uprobe program share
    a hash map and a ringbuf, two processes at once, one with the library
    (its agent runs the uprobe's twin: counts folded, events written to
    bpfshim's ringbuf by bpf_ringbuf_output, reserve + submit, reserve +
    discard, and forwarded into the kernel's ringbuf by the loader) and one
    without (the kernel's uprobe): exact event counts per kind and process,
    each process's uprobe events in the order of its calls, counts as on
    the kernel. uid65534: the process with the library makes its calls as
    uid 65534 (bpf() refused to it)."""
    exe, rt = hybrid
    obj, loader = libbpf_tool(exe, "hybrid_events")
    victim = endbr_victim(exe)
    tool = [loader, obj, victim, "300", "200"] + (["drop"] if drop == "uid65534" else [])
    out = compare_events(rt, tool, victim)
    assert out == ("tracepoint lib 300 plain 200 uprobe lib 300 plain 200 in_order 1 1 x_sum 64750\n"
                   "count 300 200 300 200\n"), out


def test_hybrid_twin_perf_buffer_bcc(hybrid):
    """A BCC tool: TRACEPOINT_PROBE and attach_uprobe counting into one
    BPF_HASH (atomic_increment) and sending through one BPF_PERF_OUTPUT,
    two processes at once (one with the library: the uprobe's twin, its
    perf_submit forwarded into the kernel's perf buffer of its CPU; one
    without), both on CPU 0: exact counts, order per process."""
    if subprocess.run(["/usr/bin/python3", "-c", "import bcc"], capture_output=True).returncode:
        pytest.skip("BCC's python module is not installed")
    exe, rt = hybrid
    victim = endbr_victim(exe)
    out = compare_events(rt, ["/usr/bin/python3", os.path.join(PROGS, "hybrid_bcc_events.py"), victim, "300", "200"],
                         victim)
    assert out == "tracepoint lib 300 plain 200 uprobe lib 300 plain 200 in_order 1 1\ncount 300 200 300 200\n", out


def by_first_word(out):
    """Output lines grouped by their first word, each group in its order:
    a twin's events come in order, but after a kernel program's output
    at the same time (ARCHITECTURE.md "Hybrid mode", events)."""
    groups = {}
    for l in out.splitlines():
        if not NOISE.search(l):
            groups.setdefault(l.split(" ")[0], []).append(l)
    return groups


def test_hybrid_twin_bpftrace_printf(hybrid):
    """bpftrace printf from a uprobe (served in user space in the victim, its
    perf output forwarded) next to a kernel tracepoint's printf; the victim
    on CPU 0 (one perf buffer: order is the kernel's to keep too). Each
    probe's lines as on the kernel, in order."""
    exe, rt = hybrid
    victim = endbr_victim(exe)
    script = (TP + ' { printf("tp %d\\n", @n); @n = @n + 1; } '
              f'uprobe:{victim}:work {{ printf("up %d %s\\n", arg0, comm); }}')
    argv = [BPFTRACE, "-e", script, "-c", f"/usr/bin/taskset -c 0 {victim} 200"]
    (rc_k, out_k), (rc_h, rest), said = kernel_and_debug(rt, argv)
    assert (rc_h, by_first_word(rest)) == (rc_k, by_first_word(out_k)), f"kernel:\n{out_k}\nhybrid:\n{rest}"
    assert len(by_first_word(out_k)["up"]) == 200 and len(by_first_word(out_k)["tp"]) == 200, out_k
    assert said == [twin_line(victim)], said


def test_hybrid_twin_perf_buffer_full(hybrid):
    """A BCC tool whose one-page perf buffer is read only after the target's
    1000 calls: the kernel's buffer takes what fits and counts the rest
    lost (reported in front of the next record, the second target's one
    call). In hybrid mode both targets run the uprobe's twin, its events
    forwarded into that buffer: the same events arrive and the same count
    is lost, as the kernel counts it."""
    if subprocess.run(["/usr/bin/python3", "-c", "import bcc"], capture_output=True).returncode:
        pytest.skip("BCC's python module is not installed")
    exe, rt = hybrid
    victim = endbr_victim(exe)
    argv = ["/usr/bin/python3", os.path.join(PROGS, "hybrid_bcc_lost.py"), victim, "1000"]
    (rc_k, out_k), (rc_h, rest), said = kernel_and_debug(rt, argv)
    assert (rc_h, rest.splitlines()) == (rc_k, out_k.splitlines()), (out_k, rest)
    assert out_k.startswith("received ") and not out_k.endswith(" lost 0\n"), out_k
    assert said == [twin_line(victim)] * 2, said
