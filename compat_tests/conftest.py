"""Suite-wide guards, so that a run cut short still says what went wrong:

- a failure or error is printed (short traceback) the moment it happens, not
  only in the summary a killed run never reaches;
- each test has a deadline (BPFSHIM_TEST_TIMEOUT seconds, 300 by default):
  at the deadline the stacks of every thread are dumped and the test fails,
  so one hang costs one test, not the whole run.
"""
import faulthandler
import os
import signal
import sys

import pytest

TEST_TIMEOUT = int(os.environ.get("BPFSHIM_TEST_TIMEOUT", "300"))


class TestTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    raise TestTimeout(f"test exceeded {TEST_TIMEOUT} s (BPFSHIM_TEST_TIMEOUT)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if TEST_TIMEOUT <= 0:
        yield
        return
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(TEST_TIMEOUT)      # covers setup, call and teardown of the item
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def pytest_runtest_logreport(report):
    if report.failed:
        sys.stderr.write(f"\n==== {report.when} of {report.nodeid} failed ({report.duration:.1f} s)\n")
        sys.stderr.write(str(report.longrepr)[-6000:] + "\n")
        sys.stderr.flush()


def pytest_sessionstart(session):
    """One line on what this machine can run, for reading a CI log."""
    from .env import kernel_bpf_reason, unpriv_reason
    kern = kernel_bpf_reason() or "yes"
    unpriv = unpriv_reason() or "yes"
    sys.stderr.write(f"compat_tests: {os.uname().release}, uid {os.getuid()}, {os.cpu_count()} cpus, "
                     f"kernel side: {kern}, uid 65534 side: {unpriv}\n")


def pytest_terminal_summary(terminalreporter):
    """How many cases were compared with the kernel's recorded results
    (compat_tests/golden.py) and which records the live kernel contradicts."""
    from . import golden
    if golden.COMPARED:
        terminalreporter.write_line(f"golden: {len(golden.COMPARED)} cases compared with the kernel's recorded "
                                    f"results (compat_tests/golden/), kernel eBPF not available here")
    if golden.STALE:
        terminalreporter.write_line(f"golden: {len(golden.STALE)} records differ from the live kernel (stale, not "
                                    f"failed; BPFSHIM_RECORD_GOLDEN=1 rewrites them): {', '.join(golden.STALE[:10])}")
