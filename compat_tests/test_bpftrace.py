"""bpftrace one-liners: the same script on the kernel (root) and through
bpfshim (root, and uid 65534), against deterministic sample programs started
with `bpftrace -c`, so every probe sees every call. Outputs are compared
after normalising what legitimately differs (map print order, which follows
the kernel's randomised hash; bpftrace's RLIMIT_MEMLOCK warning, which only
the kernel run prints).
"""
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from compat_tests import golden
from compat_tests.env import SHIM_LIB, hook_modes, kernel_bpf_reason, unpriv_cmd, unpriv_reason
from compat_tests.unpriv import readable_tmpdir
from compat_tests.victims import build_usdt_victim, build_victims, func_offset

BPFTRACE = shutil.which("bpftrace")

V = "{V}"
L = "{L}"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
SCRIPTS = {
    "count": "uprobe:{V}:work { @ = count(); }",
    "count_by_key": "uprobe:{V}:work { @[arg0 % 4] = count(); }",
    "sum": "uprobe:{V}:work { @s = sum(arg0); }",
    "avg": "uprobe:{V}:work { @a = avg(arg0); }",
    "min_max": "uprobe:{V}:work { @mn = min(arg0); @mx = max(arg0); }",
    "stats": "uprobe:{V}:work { @st = stats(arg0); }",
    "hist": "uprobe:{V}:work { @h = hist(arg0); }",
    "lhist": "uprobe:{V}:work { @l = lhist(arg0, 0, 100, 10); }",
    "uretprobe_hist": "uretprobe:{V}:work { @r = hist(retval); }",
    "uretprobe_recursive": "uretprobe:{V}:fib { @n = count(); @r = sum(retval); }",
    "recursive_args": "uprobe:{V}:fib { @d[arg0] = count(); }",
    "six_args": 'uprobe:{V}:six { printf("%d %d %d %d %d %d\\n", arg0, arg1, arg2, arg3, arg4, arg5); }',
    "str": 'uprobe:{V}:greet { printf("%s\\n", str(arg0)); }',
    "str_key": "uprobe:{V}:greet { @names[str(arg0)] = count(); }",
    "signed_retval": "uretprobe:{V}:neg { @v[(int32)retval] = count(); }",
    "predicate": 'uprobe:{V}:work /arg0 > 95/ { printf("big %d\\n", arg0); }',
    "print_clear": "uprobe:{V}:work { @x = arg0; } END { print(@x); clear(@x); }",
    "begin_end": 'BEGIN { printf("begin\\n"); } uprobe:{V}:work { @ = count(); } END { printf("end\\n"); }',
    "comm": "uprobe:{V}:work { @[comm] = count(); }",
    "probe": "uprobe:{V}:work { @[probe] = count(); }",
    "func": "uprobe:{V}:work,uprobe:{V}:fib { @[func] = count(); }",
    "threads_by_arg": "uprobe:{V}:worker { @[arg0] = count(); }",
    "threads_total": "uprobe:{V}:worker { @t = count(); @s = sum(arg1); }",
    "shared_lib": "uprobe:{L}:lib_add { @s = sum(arg0 + arg1); @n = count(); }",
    "shared_lib_ret": "uretprobe:{L}:lib_add { @r = lhist(retval, 100, 110, 1); }",
    "multi_key": "uprobe:{V}:work { @m[arg0 % 3, arg0 % 2] = count(); }",
    "delete": "uprobe:{V}:work { @x[arg0 % 5] = arg0; if (arg0 % 5 == 4) { delete(@x[arg0 % 5]); } }",
    "wildcard": "uprobe:{V}:w* { @[func] = count(); }",
    "exit_in_probe": 'uprobe:{V}:work /arg0 == 10/ { printf("ten\\n"); exit(); }',
    "tuple_key_sum": "uprobe:{V}:six { @[arg0, arg1] = sum(arg5); }",
    "locals_if_else": "uprobe:{V}:work { $x = arg0 * 2; if ($x > 100) { @big = count(); } else { @small = count(); } }",
    "printf_formats": 'uprobe:{V}:neg { printf("%d %u %x %5d|%-5d| %s %c\\n", (int32)arg0, arg0, arg0, (int32)arg0, (int32)arg0, "s", 65); }',
    "hist_print_end": "uprobe:{V}:work { @h = hist(arg0); } END { print(@h); clear(@h); }",
    "zero": "uprobe:{V}:work { @c = count(); } END { zero(@c); }",
    "str_len": 'uprobe:{V}:greet { printf("%s\\n", str(arg0, 3)); }',
    "unroll": "uprobe:{V}:work { unroll(3) { @u = count(); } }",
    "strncmp": 'uprobe:{V}:greet /strncmp(str(arg0), "be", 2) == 0/ { @b = count(); }',
    "nsecs_elapsed": "uprobe:{V}:work { @t[nsecs > 0, elapsed > 0] = count(); }",
    "cpid_filter": "uprobe:{V}:work /pid == cpid/ { @ = count(); }",
    "cpu": "uprobe:{V}:work { @[cpu < 4096] = count(); }",
    "buf": 'uprobe:{V}:greet { printf("%r\\n", buf(arg0, 4)); }',
    "while_sizeof": 'BEGIN { $i = 0; while ($i < 5) { $i++; @w = count(); } printf("%d\\n", sizeof(int64)); exit(); }',
    "print_top": "uprobe:{V}:work { @[arg0 % 10] = sum(arg0); } END { print(@, 3); clear(@); }",
    "avg_by_key": "uprobe:{V}:work { @a[arg0 % 3] = avg(arg0); }",
    "uretprobe_func": "uretprobe:{V}:work,uretprobe:{V}:neg { @[func] = count(); }",
    "usym_ip": 'uprobe:{V}:work { @[usym(reg("ip"))] = count(); }',
    "reg_di": 'uprobe:{V}:six { @[reg("di"), reg("si")] = count(); }',
    "map_comm_str": "uprobe:{V}:greet { @n[comm, str(arg0)] = count(); }",
    "libc_pthread_create": "uprobe:{C}:pthread_create /pid == cpid/ { @ = count(); }",
    "offset": "uprobe:{V}:work+0 { @ = count(); }",
    "begin_exit": 'BEGIN { @a = 1; @b = "x"; printf("%d %s\\n", 42, "str"); exit(); }',
}


@pytest.fixture(scope="module")
def victims():
    if not BPFTRACE:
        pytest.skip("bpftrace is not installed")
    d = readable_tmpdir("bpfshim-victims-")
    yield build_victims(d)
    shutil.rmtree(d, ignore_errors=True)


NOISE = re.compile(r"couldn't set RLIMIT_MEMLOCK|^$")
ADDR = re.compile(r"0x[0-9a-f]{6,}")


def normalise(out):
    """Lines as a sorted list (map entries print in hash order), addresses
    (ASLR) masked."""
    return sorted(ADDR.sub("0xADDR", l) for l in out.splitlines() if not NOISE.search(l))


def run_bpftrace(script, exe, runtime_dir=None, unpriv=False):
    env = dict(os.environ)
    cmd = [BPFTRACE, "-e", script, "-c", exe]
    if runtime_dir:
        env["BPFSHIM_RUNTIME_DIR"] = runtime_dir
        # preload after the switch of user: setpriv itself is not traced
        cmd = (unpriv_cmd() if unpriv else []) + ["env", f"LD_PRELOAD={SHIM_LIB}"] + cmd
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


@pytest.fixture(scope="module")
def runtime_dirs():
    d = tempfile.mkdtemp(prefix="bpfshim-bt-")
    os.chmod(d, 0o755)
    root_rt = os.path.join(d, "root")
    unpriv_rt = os.path.join(d, "unpriv")
    os.mkdir(unpriv_rt, 0o700)
    if os.getuid() == 0:
        os.chown(unpriv_rt, 65534, 65534)
    yield root_rt, unpriv_rt
    subprocess.run(["pkill", "-f", "--", f"--runtime-dir {d}"], check=False)
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_bpftrace_one_liner(name, victims, runtime_dirs):
    exe, lib = victims
    compare_sides(SCRIPTS[name].replace(V, exe).replace(L, lib).replace("{C}", LIBC), exe, runtime_dirs)


def compare_sides(script, exe, runtime_dirs, norm=normalise):
    """`bpftrace -e script -c exe` through bpfshim (root, then uid 65534)
    against the kernel's run, or without kernel eBPF against the kernel's
    recorded result (compat_tests/golden/, the victim's directory masked);
    returns bpfshim's output."""
    rc_s, out_s = run_bpftrace(script, exe, runtime_dirs[0])
    test, case = golden.current()
    def result(rc, out):
        return golden.jsonable([rc, golden.masked(norm(out), os.path.dirname(exe.split()[0]), "{DIR}")])
    why = kernel_bpf_reason()
    rec = None
    if why is None:
        rc_k, out_k = run_bpftrace(script, exe)
        golden.live(test, {case: result(rc_k, out_k)})     # recorded even when bpfshim differs
        assert (rc_s, norm(out_s)) == (rc_k, norm(out_k)), f"kernel:\n{out_k}\nbpfshim:\n{out_s}"
    else:
        rec = golden.recorded(test, case)
        if rec is not None:
            assert result(rc_s, out_s) == rec, f"kernel (recorded):\n{rec}\nbpfshim:\n{out_s}"
        assert rc_s == 0, out_s
    if unpriv_reason() is None:
        rc_u, out_u = run_bpftrace(script, exe, runtime_dirs[1], unpriv=True)
        assert (rc_u, norm(out_u)) == (rc_s, norm(out_s)), f"root:\n{out_s}\nuid 65534:\n{out_u}"
    if why is not None and rec is None:
        pytest.skip(f"kernel side not run: {why}, and no recorded result")
    return out_s


# ---- user stacks: ustack, ustack(n), ustack(perf), kstack, usym(reg("ip")) ----

# Built without PIE (frame addresses stay put between runs) and with frame
# pointers; the entry instructions differ on purpose (-fcf-protection=branch):
# the kernel adds the return address at [sp] for a probe on `push %rbp` only.
STACK_VICTIM_C = r"""
#include <unistd.h>
volatile long sink;
/* entry instructions: leaf, top, rec endbr64; mid push %rbp; bare a mov */
__attribute__((noinline)) long leaf(long x) { sink += x; return x + 1; }
__attribute__((noinline, nocf_check)) long bare(long x) { sink -= x; return x; }
__attribute__((noinline, nocf_check)) long mid(long x) { return leaf(x) + bare(x) + 1; }
__attribute__((noinline)) long top(long x) { return mid(x) * 2; }
__attribute__((noinline)) long rec(int n) { return n ? rec(n - 1) + 1 : leaf(n); }
__attribute__((noinline)) void marker(void) { sink++; }
int main(void)
{
    for (int i = 0; i < 3; i++)
        sink += top(i);
    sink += rec(4);
    marker();
    usleep(300000);   /* alive while bpftrace resolves symbols */
    return 0;
}
"""

S = "{S}"
EXIT = " uprobe:{S}:marker { exit(); }"
STACK_SCRIPTS = {
    "ustack_endbr64": "uprobe:{S}:leaf { @[ustack] = count(); }" + EXIT,
    "ustack_mov": "uprobe:{S}:bare { @[ustack] = count(); }" + EXIT,
    "ustack_push_perf": 'uprobe:{S}:mid { printf("%s|%s\\n", usym(reg("ip")), ustack(perf)); }',
    "ustack_n_uretprobe": "uretprobe:{S}:mid { @[ustack(2)] = count(); }" + EXIT,
    "ustack_under_uretprobe": "uretprobe:{S}:top { @n = count(); } uprobe:{S}:leaf { @[ustack] = count(); }" + EXIT,
    "ustack_recursive": 'uprobe:{S}:rec { printf("%d %s\\n", arg0, ustack(3)); }',
    "kstack_from_uprobe": "uprobe:{S}:leaf { @[kstack] = count(); @k[kstack(3)] = count(); }" + EXIT,
    # a syscall tracepoint: the user regs at the syscall (usleep at the end of main)
    "ustack_syscall_tracepoint": "tracepoint:syscalls:sys_enter_clock_nanosleep /pid == cpid/ "
                                 "{ @[ustack] = count(); @u[ustack(1)] = count(); }",
}

LIBC_ADDR = re.compile(r"\b(0x)?7[0-9a-f]{11}\b")   # shared libraries, stacks: 0x7xxxxxxxxxxx


def normalise_stacks(out):
    """Output blocks (a map entry, an event: a line and its indented frames)
    sorted, frames kept in order; shared-library addresses (ASLR) masked."""
    blocks = []
    for line in out.splitlines():
        if NOISE.search(line):
            continue
        line = LIBC_ADDR.sub("LIBADDR", line)
        if blocks and (line[:1].isspace() or line.startswith("]")):
            blocks[-1].append(line)
        else:
            blocks.append([line])
    return sorted(blocks)


@pytest.fixture(scope="module")
def stack_victim():
    if not BPFTRACE:
        pytest.skip("bpftrace is not installed")
    d = tempfile.mkdtemp(prefix="bpfshim-stackvictim-")
    os.chmod(d, 0o755)
    exe = os.path.join(d, "stackvictim")
    with open(exe + ".c", "w") as f:
        f.write(STACK_VICTIM_C)
    subprocess.run(["cc", "-O1", "-fno-inline", "-fno-omit-frame-pointer", "-fcf-protection=branch", "-no-pie",
                    "-o", exe, exe + ".c"], check=True)
    os.chmod(exe, 0o755)
    yield exe
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("name", sorted(STACK_SCRIPTS))
def test_bpftrace_stack(name, stack_victim, runtime_dirs):
    script = STACK_SCRIPTS[name].replace(S, stack_victim)
    rc_s, out_s = run_bpftrace(script, stack_victim, runtime_dirs[0])
    assert rc_s == 0 and "\n@" in out_s or "+0" in out_s, out_s
    compare_sides(script, stack_victim, runtime_dirs, normalise_stacks)


# ---- USDT: probes with arguments and semaphores (the uprobe PMU's ref_ctr_offset) ----

U = "{U}"
USDT_SCRIPTS = {
    "usdt_args": "usdt:{U}:app:tick { @[arg0 % 5] = sum(arg1); }",
    "usdt_plain": "usdt:{U}:app:plain { @s = sum(arg0); @n = count(); }",
    # the semaphores enable the gated code and the two-site probe; the
    # victim prints them at exit (1 for tick, 2 for twice's two sites)
    "usdt_semaphores": "usdt:{U}:app:tick { @t = count(); } usdt:{U}:app:twice { @w = sum(arg0); } "
                       "uprobe:{U}:gated { @g = count(); }",
    "usdt_wildcard": "usdt:{U}:app:* { @[probe] = count(); }",
    "usdt_two_probes_one_site": "usdt:{U}:app:tick { @a = count(); } usdt:{U}:app:tick { @b = count(); }",
}


@pytest.fixture(scope="module")
def usdt_victim(victims):
    exe = build_usdt_victim(os.path.dirname(victims[0]))
    if not exe:
        pytest.skip("sys/sdt.h is not installed (systemtap-sdt-dev)")
    return exe


@pytest.mark.parametrize("name", sorted(USDT_SCRIPTS))
def test_bpftrace_usdt(name, usdt_victim, runtime_dirs):
    out = compare_sides(USDT_SCRIPTS[name].replace(U, usdt_victim), usdt_victim, runtime_dirs)
    assert "\n@" in out, out


def semaphore_while_traced(runtime_dir=None, unpriv=False):
    """The victim in watch mode, `bpftrace -p` on its `watched` probe for a
    moment, then bpftrace gone: the changes of the semaphore it saw."""
    exe = semaphore_while_traced.exe
    env = dict(os.environ)
    pre = []
    if runtime_dir:
        env["BPFSHIM_RUNTIME_DIR"] = runtime_dir
        pre = (unpriv_cmd() if unpriv else []) + ["env", f"LD_PRELOAD={SHIM_LIB}"]
    victim = subprocess.Popen(pre + [exe, "watch"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert victim.stdout.readline() == "ready\n"
        script = f"usdt:{exe}:app:watched {{ @ = count(); }} interval:ms:300 {{ exit(); }}"
        bt = subprocess.run(pre + [BPFTRACE, "-e", script, "-p", str(victim.pid)], env=env, capture_output=True,
                            text=True, timeout=60)
        assert bt.returncode == 0, bt.stdout + bt.stderr
        out, _ = victim.communicate(timeout=30)
    finally:
        victim.kill()
        victim.wait()
    return out


def test_usdt_semaphore_released(usdt_victim, runtime_dirs):
    """The semaphore goes up while a tracer is attached and back to 0 after."""
    semaphore_while_traced.exe = usdt_victim
    got = {"bpfshim": semaphore_while_traced(runtime_dirs[0])}
    if unpriv_reason() is None:
        got["bpfshim uid 65534"] = semaphore_while_traced(runtime_dirs[1], unpriv=True)
    ref = "semaphore 1\nsemaphore 0\n"
    if kernel_bpf_reason() is None:
        ref = got["kernel"] = semaphore_while_traced()
    for name, out in got.items():
        assert out == ref, f"{name}: {out!r}, reference {ref!r}"


def test_hook_modes(usdt_victim, runtime_dirs):
    """Which patch each probed site gets (BPFSHIM_DEBUG_HOOKS): a function
    entry the 5-byte jump (the tens-of-ns path), a USDT site a patch of
    some kind (test_libbpf_uprobe.py test_hook_mode has entries without a
    symbol size, which bpftrace refuses)."""
    script = f"uprobe:{usdt_victim}:gated {{ @g = count(); }} usdt:{usdt_victim}:app:tick {{ @t = count(); }}"
    env = dict(os.environ, BPFSHIM_RUNTIME_DIR=runtime_dirs[0], BPFSHIM_DEBUG_HOOKS="1")
    out = subprocess.run(["env", f"LD_PRELOAD={SHIM_LIB}", BPFTRACE, "-e", script, "-c", usdt_victim], env=env,
                         capture_output=True, text=True, timeout=120)
    modes = dict(hook_modes(out.stderr))
    gated = next((m for site, m in modes.items() if site.startswith(usdt_victim)), None)
    assert out.returncode == 0 and gated, out.stdout + out.stderr
    entry = f"{usdt_victim}+{hex(func_offset(usdt_victim, 'gated'))}"
    assert modes.get(entry) == "jmp", (entry, modes)
    assert len([s for s in modes if s.startswith(usdt_victim)]) == 2, modes   # and the tick site

