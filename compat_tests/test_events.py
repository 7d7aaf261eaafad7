"""Event loss is always accounted: every record a program sends is either
delivered to the consumer or counted as lost, exactly, on the kernel and
through bpfshim (root and uid 65534).

- bpftrace: `printf` from 4 threads of progs/events_target.c with a small
  perf buffer (BPFTRACE_PERF_RB_PAGES), so the kernel's rings overflow as
  well: lines printed + "Lost N events" == calls made. The kernel reports
  drops (PERF_RECORD_LOST) only in front of the next record that fits, so
  the target ends with one call on each CPU after the consumer drained
  ("flush"); bpfshim also reports drops without those calls (its consumer's
  poll writes the PERF_RECORD_LOST once there is room), but drops after
  the consumer's last wait (bpftrace reads, sees its child gone and ends)
  stay unreported, as on the kernel: without a later record only as many
  lines + lost as calls at most.
- libbpf (progs/events_loader.c): 2 target processes x 4 threads racing on
  the same rings; perf buffer (perf_buffer__new with a lost callback): the
  records delivered + the lost callback's counts == calls, and the lost
  count == the sends the program saw fail; ringbuf (ring_buffer__poll):
  delivered + the program's failed bpf_ringbuf_output calls == calls. No
  record arrives damaged or twice.
- wake-ups: producers that pause after each record, a consumer that polls
  with no timeout until it has every record: a wake-up lost (bpfshim
  signals a ring's eventfd once until the consumer takes it) hangs it.
"""
import os
import re
import shutil
import subprocess

import pytest

from compat_tests.env import clang_bpf, kernel_bpf_reason, unpriv_reason
from compat_tests.unpriv import Runtime, readable_tmpdir, run

PROGS = os.path.join(os.path.dirname(__file__), "progs")
BPFTRACE = shutil.which("bpftrace")
SIDES = ["kernel", "bpfshim", "bpfshim uid 65534"]


@pytest.fixture(scope="module")
def setup():
    d = readable_tmpdir("bpfshim-events-")
    p = {k: os.path.join(d, k) for k in ("target", "loader", "events.o")}
    subprocess.run(["cc", "-O1", "-Wall", "-pthread", "-o", p["target"], os.path.join(PROGS, "events_target.c")],
                   check=True)
    have_libbpf = os.path.exists("/usr/include/bpf/libbpf.h") and shutil.which("clang")
    if have_libbpf:
        subprocess.run(["cc", "-O1", "-Wall", "-o", p["loader"], os.path.join(PROGS, "events_loader.c"), "-lbpf"],
                       check=True)
        clang_bpf(os.path.join(PROGS, "events_loader.bpf.c"), p["events.o"])
    for f in p.values():
        if os.path.exists(f):
            os.chmod(f, 0o755)
    rts = {"bpfshim": Runtime(prefix="bpfshim-events-")}
    if unpriv_reason() is None:
        rts["bpfshim uid 65534"] = Runtime(unpriv=True, prefix="bpfshim-events-u-")
    yield p, rts, have_libbpf
    for rt in rts.values():
        rt.close()
    shutil.rmtree(d, ignore_errors=True)


def side_cmd(side, rts, argv, env=()):
    """argv run on side (the kernel: as is), or None with the reason it cannot run here."""
    if side == "kernel":
        why = kernel_bpf_reason()
        return (None, f"kernel side not run: {why}") if why else (["env", *[f"{k}={v}" for k, v in env]] + argv, None)
    if side not in rts:
        return None, f"{side}: {unpriv_reason()}"
    return rts[side].cmd(argv, extra_env=env), None


BT_SCRIPT = 'uprobe:{T}:ev { printf("%d %d\\n", arg0, arg1); }'
BT_LINE = re.compile(r"^-?\d+ \d+$", re.M)
BT_LOST = re.compile(r"^Lost (\d+) events$", re.M)
PRODUCED = re.compile(r"^produced (\d+)$", re.M)


@pytest.mark.parametrize("flush", ["flush", "no_flush"])
@pytest.mark.parametrize("side", SIDES)
def test_bpftrace_printf(side, flush, setup):
    p, rts, _ = setup
    if not BPFTRACE:
        pytest.skip("bpftrace is not installed")
    if side == "kernel" and flush == "no_flush":
        pytest.skip("the kernel counts drops only in front of a later record on the same ring")
    target = f"{p['target']} 4 50000 0" + (" flush" if flush == "flush" else "")
    argv, why = side_cmd(side, rts, [BPFTRACE, "-e", BT_SCRIPT.replace("{T}", p["target"]), "-c", target],
                         env=[("BPFTRACE_PERF_RB_PAGES", "4")])
    if argv is None:
        pytest.skip(why)
    rc, out, err = run(argv, timeout=120)
    text = out + err
    produced = PRODUCED.search(text)
    assert rc == 0 and produced, f"rc={rc}\n{text[-3000:]}"
    lines, lost = len(BT_LINE.findall(text)), sum(int(n) for n in BT_LOST.findall(text))
    if flush == "flush":
        assert lines + lost == int(produced.group(1)), \
            f"{side}: {lines} lines + {lost} lost != {produced.group(1)} calls"
    else:
        assert lines + lost <= int(produced.group(1)), \
            f"{side}: {lines} lines + {lost} lost > {produced.group(1)} calls"
    if side != "kernel":
        assert lost > 0, f"{side}: the buffer never overflowed ({lines} lines): the case tests nothing"


def run_loader(side, setup, mode, procs, threads, calls, extra=(), env=(), timeout=120):
    """events_loader on side: (delivered, lost, failed, bad, produced, its stdout); skips
    when the side cannot run here."""
    p, rts, have_libbpf = setup
    if not have_libbpf:
        pytest.skip("libbpf-dev or clang is not installed")
    argv, why = side_cmd(side, rts, [p["loader"], p["events.o"], mode, "2", p["target"], str(procs), str(threads),
                                     str(calls), *extra], env=env)
    if argv is None:
        pytest.skip(why)
    rc, out, err = run(argv, timeout=timeout)
    res = re.search(r"^delivered (\d+) lost (\d+) failed (\d+) bad (\d+) ns \d+$", out, re.M)
    assert rc == 0 and res, f"{side}: rc={rc} (-14, SIGALRM: a -wait mode timed out)\n{out}\n{err}"
    assert len(PRODUCED.findall(out)) == procs, out
    produced = sum(int(n) for n in PRODUCED.findall(out))
    return (*map(int, res.groups()), produced, out)


@pytest.mark.parametrize("flush", ["flush", "no_flush"])
@pytest.mark.parametrize("mode", ["perf", "ringbuf"])
@pytest.mark.parametrize("side", SIDES)
def test_libbpf(side, mode, flush, setup):
    if side == "kernel" and flush == "no_flush" and mode == "perf":
        pytest.skip("the kernel counts drops only in front of a later record on the same ring")
    delivered, lost, failed, bad, produced, out = run_loader(side, setup, mode, 2, 4, 100000,
                                                             ["flush"] if flush == "flush" else [])
    assert bad == 0, f"{side}: {bad} records damaged or delivered twice\n{out}"
    if mode == "perf":
        assert delivered + lost == produced, f"{side}: {delivered} delivered + {lost} lost != {produced}\n{out}"
        assert lost == failed, f"{side}: {lost} reported lost, {failed} sends failed\n{out}"
    else:
        assert lost == 0 and delivered + failed == produced, \
            f"{side}: {delivered} delivered + {failed} failed != {produced}\n{out}"
    if side != "kernel":
        assert failed > 0, f"{side}: the buffer never overflowed: the case tests nothing\n{out}"


@pytest.mark.parametrize("mode", ["perf-wait", "ringbuf-wait"])
@pytest.mark.parametrize("side", SIDES)
def test_wakeup(side, mode, setup):
    delivered, lost, failed, bad, produced, out = run_loader(side, setup, mode, 2, 2, 300,
                                                             env=[("EVENTS_PAUSE_US", "300")], timeout=60)
    assert bad == 0 and produced == 600 and delivered + (lost if mode == "perf-wait" else failed) == produced, out


@pytest.mark.parametrize("mode", ["perf-first", "ringbuf-first"])
@pytest.mark.parametrize("side", SIDES)
def test_first_event(side, mode, setup):
    """Targets already running when the tool starts, calling once right after
    the tool filled its perf event array (libbpf-tools: attach, fill, then the
    first event may come): every call is delivered, none lost, as on the
    kernel, whose update is seen by the next event."""
    delivered, lost, failed, bad, produced, out = run_loader(side, setup, mode, 2, 1, 3, timeout=60)
    assert bad == 0 and produced == 6 and (delivered, lost, failed) == (6, 0, 0), out
