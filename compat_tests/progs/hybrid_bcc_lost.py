"""A BCC tool of compat_tests/test_hybrid.py: a uprobe (attach_uprobe on
work in TARGET, a file only this tool runs) sending one event a call
through a perf buffer of one page that is read only after the target
exited, so the kernel's buffer fills and the kernel counts what it drops:
as a PERF_RECORD_LOST in front of the next record (BCC's lost callback), so
the target runs a second time, one call, after the buffer was read. In
hybrid mode the targets (started with this tool's environment: the
library) run the uprobe's twin, whose events are forwarded into that
buffer: what arrives and what is counted lost are the kernel's. The
targets run on CPU 0 (one buffer). Prints the events received, the x of
the first and last, and the count lost.

    python3 hybrid_bcc_lost.py TARGET N
"""
import os
import sys

from bcc import BPF

TEXT = r"""
#include <uapi/linux/ptrace.h>
struct event { u64 x; u64 pad; };
BPF_PERF_OUTPUT(events);

int on_work(struct pt_regs *ctx)
{
    struct event e = { .x = (u32)PT_REGS_PARM1(ctx) };
    events.perf_submit(ctx, &e, sizeof(e));
    return 0;
}
"""


def run(target, n):
    """TARGET making n calls, on CPU 0; its exit code."""
    pid = os.fork()
    if pid == 0:
        try:
            os.sched_setaffinity(0, {0})
            os.execv(target, [target, str(n)])
        finally:
            os._exit(127)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def main():
    target, n = sys.argv[1], int(sys.argv[2])
    b = BPF(text=TEXT)
    b.attach_uprobe(name=target, sym="work", fn_name="on_work")
    got, lost = [], [0]

    def on_event(cpu, data, size):
        got.append(b["events"].event(data).x)

    def on_lost(count):
        lost[0] += count

    b["events"].open_perf_buffer(on_event, page_cnt=1, lost_cb=on_lost)
    rc = 0
    for calls in (n, 1):
        rc |= run(target, calls)
        for _ in range(3):     # what fits, then what the reads made room for
            b.perf_buffer_poll(0)
    print(f"received {len(got)} first {got[0] if got else '-'} last {got[-1] if got else '-'} lost {lost[0]}")
    sys.exit(rc)


if __name__ == "__main__":
    main()
