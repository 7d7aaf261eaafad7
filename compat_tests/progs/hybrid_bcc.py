"""The BCC tool of compat_tests/test_hybrid.py: a kernel tracepoint
(sys_enter_getppid, TRACEPOINT_PROBE) and a uprobe (attach_uprobe on work)
of the same target writing into one BPF_HASH, one perf buffer; the target
starts stopped so the filter knows its pid. Prints counts and event totals,
sorted, no pids or times.

    python3 hybrid_bcc.py TARGET ARGS...
"""
import os
import signal
import sys

from bcc import BPF

TEXT = r"""
#include <uapi/linux/ptrace.h>
struct event { u32 kind; s32 x; };
BPF_HASH(counts, u32, u64, 16);
BPF_HASH(last, u32, s64, 1024);
BPF_PERF_OUTPUT(events);

TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
    if (bpf_get_current_pid_tgid() >> 32 != TGID)
        return 0;
    u32 k = 0, tid = (u32)bpf_get_current_pid_tgid();
    counts.increment(k);
    s64 *x = last.lookup(&tid);      /* what the uprobe stored, by tid */
    if (x) {
        u32 s = 2;
        counts.increment(s, *x);
    }
    struct event e = { .kind = 0 };
    events.perf_submit(args, &e, sizeof(e));
    return 0;
}

int on_work(struct pt_regs *ctx)
{
    u32 k = 1, tid = (u32)bpf_get_current_pid_tgid();
    s64 x = (int)PT_REGS_PARM1(ctx);
    counts.increment(k);
    last.update(&tid, &x);
    struct event e = { .kind = 1, .x = (s32)x };
    events.perf_submit(ctx, &e, sizeof(e));
    return 0;
}
"""


def main():
    target = sys.argv[1:]
    pid = os.fork()
    if pid == 0:
        try:
            os.kill(os.getpid(), signal.SIGSTOP)
            os.execv(target[0], target)
        finally:
            os._exit(127)
    os.waitpid(pid, os.WUNTRACED)
    b = BPF(text=TEXT.replace("TGID", str(pid)))
    b.attach_uprobe(name=target[0], sym="work", fn_name="on_work")
    got = {0: 0, 1: 0}
    xsum = [0]

    def on_event(cpu, data, size):
        e = b["events"].event(data)
        got[e.kind] += 1
        xsum[0] += e.x

    b["events"].open_perf_buffer(on_event, page_cnt=64)
    os.kill(pid, signal.SIGCONT)
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        b.perf_buffer_poll(50)
    b.perf_buffer_poll(50)
    print(f"events tracepoint {got[0]} uprobe {got[1]} x_sum {xsum[0]}")
    for k, v in sorted((k.value, v.value) for k, v in b["counts"].items()):
        print(f"count {k} {v}")


if __name__ == "__main__":
    main()
