"""A BCC tool of compat_tests/test_hybrid.py: a kernel tracepoint
(sys_enter_getppid, TRACEPOINT_PROBE) and a uprobe (attach_uprobe on work)
of two processes, one started with the environment this tool has (the
library, in a hybrid run), one without LD_PRELOAD, counting into one
BPF_HASH and sending events through one perf buffer (BPF_PERF_OUTPUT). The
uprobe only adds to its map: in hybrid mode it has a user-space twin in the
process with the library, whose events are forwarded into the kernel's perf
buffer. Both start stopped so the filters know their pids. Prints event
totals by kind and process, whether each process's uprobe events came in
the order of its calls, and the counts: no pids or times.

    python3 hybrid_bcc_events.py TARGET N_LIB N_PLAIN
"""
import os
import signal
import sys

from bcc import BPF

TEXT = r"""
#include <uapi/linux/ptrace.h>
struct event { u32 kind; u32 who; s64 x; };
BPF_HASH(counts, u32, u64, 16);
BPF_PERF_OUTPUT(events);

static inline int who(void)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    return tgid == PID0 ? 0 : tgid == PID1 ? 1 : -1;
}

TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
    int w = who();
    if (w < 0)
        return 0;
    u32 k = w;
    counts.atomic_increment(k);
    struct event e = { .kind = 0, .who = w };
    events.perf_submit(args, &e, sizeof(e));
    return 0;
}

int on_work(struct pt_regs *ctx)
{
    int w = who();
    if (w < 0)
        return 0;
    u32 k = 2 + w;
    counts.atomic_increment(k);
    struct event e = { .kind = 1, .who = w, .x = (u32)PT_REGS_PARM1(ctx) };
    events.perf_submit(ctx, &e, sizeof(e));
    return 0;
}
"""


def start(target, n, plain):
    pid = os.fork()
    if pid == 0:
        try:
            if plain:
                os.environ.pop("LD_PRELOAD", None)
            os.kill(os.getpid(), signal.SIGSTOP)
            os.execve(target, [target, n], os.environ)
        finally:
            os._exit(127)
    os.waitpid(pid, os.WUNTRACED)
    return pid


def main():
    target, n_lib, n_plain = sys.argv[1:4]
    pids = [start(target, n_lib, False), start(target, n_plain, True)]
    b = BPF(text=TEXT.replace("PID0", str(pids[0])).replace("PID1", str(pids[1])))
    b.attach_uprobe(name=target, sym="work", fn_name="on_work")
    got = [[0, 0], [0, 0]]
    in_order, next_x = [1, 1], [0, 0]

    def on_event(cpu, data, size):
        e = b["events"].event(data)
        got[e.kind][e.who] += 1
        if e.kind == 1:
            if e.x != next_x[e.who]:
                in_order[e.who] = 0
            next_x[e.who] = e.x + 1

    # one CPU's buffer is read at a time: order across CPUs is not the
    # kernel's to keep either, so the targets run on CPU 0 (taskset)
    b["events"].open_perf_buffer(on_event, page_cnt=64)
    for p in pids:
        os.sched_setaffinity(p, {0})
        os.kill(p, signal.SIGCONT)
    left, ok = 2, True
    while left:
        b.perf_buffer_poll(50)
        p, st = os.waitpid(-1, os.WNOHANG)
        if p:
            left -= 1
            ok = ok and os.waitstatus_to_exitcode(st) == 0
    b.perf_buffer_poll(0)
    print(f"tracepoint lib {got[0][0]} plain {got[0][1]} uprobe lib {got[1][0]} plain {got[1][1]} "
          f"in_order {in_order[0]} {in_order[1]}")
    print("count", *(v.value for _, v in sorted(b["counts"].items(), key=lambda kv: kv[0].value)))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
