"""The BCC loader of compat_tests/test_override.py: the programs of
override_loader.bpf.c written for BCC (kprobe-type functions attached with
attach_uprobe/attach_uretprobe, TRACEPOINT_PROBEs), the same victim
started the same way, the same lines printed.

    python3 override_bcc.py VICTIM ARGS...
"""
import os
import sys
import time

from bcc import BPF

FUNCS = ("ov_endbr", "ov_push", "ov_tiny")
TEXT = r"""
#include <uapi/linux/ptrace.h>
#define OVERRIDE_RC -7777
#define OPEN_FLAGS (00 | 02000000 | 0400 | 04000)
BPF_ARRAY(counts, u64, 16);
BPF_ARRAY(cfg, u64, 1);

static int every_2nd(struct pt_regs *ctx, int f)
{
    int h = f, o = 3 + f;
    u64 *hits = counts.lookup(&h), *ovs = counts.lookup(&o);
    if (!hits || !ovs)
        return 0;
    if ((__sync_fetch_and_add(hits, 1) + 1) % 2 == 0) {
        bpf_override_return(ctx, OVERRIDE_RC);
        __sync_fetch_and_add(ovs, 1);
    }
    return 0;
}
int on_endbr(struct pt_regs *ctx) { return every_2nd(ctx, 0); }
int on_push(struct pt_regs *ctx) { return every_2nd(ctx, 1); }
int on_tiny(struct pt_regs *ctx) { return every_2nd(ctx, 2); }

int every_call(struct pt_regs *ctx)
{
    int s = 10;
    u64 *hits = counts.lookup(&s);
    if (hits)
        __sync_fetch_and_add(hits, 1);
    return 0;
}

int on_return(struct pt_regs *ctx)
{
    int r = 8, c = 9;
    u64 *rets = counts.lookup(&r), *rc = counts.lookup(&c);
    if (!rets || !rc)
        return 0;
    __sync_fetch_and_add(rets, 1);
    if (PT_REGS_RC(ctx) == OVERRIDE_RC)
        __sync_fetch_and_add(rc, 1);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
    int zero = 0, h = 6, o = 7;
    u64 *tgid = cfg.lookup(&zero), *hits = counts.lookup(&h), *ovs = counts.lookup(&o);
    if (!tgid || !hits || !ovs || bpf_get_current_pid_tgid() >> 32 != *tgid || args->flags != OPEN_FLAGS)
        return 0;
    if ((__sync_fetch_and_add(hits, 1) + 1) % 3 == 0) {
        bpf_override_return((struct pt_regs *)args, -2);
        __sync_fetch_and_add(ovs, 1);
    }
    return 0;
}

TRACEPOINT_PROBE(raw_syscalls, sys_enter)
{
    int zero = 0, h = 11, o = 12;
    u64 *tgid = cfg.lookup(&zero), *hits = counts.lookup(&h), *ovs = counts.lookup(&o);
    if (!tgid || !hits || !ovs || bpf_get_current_pid_tgid() >> 32 != *tgid || args->id != 110)
        return 0;
    if ((__sync_fetch_and_add(hits, 1) + 1) % 2 == 0) {
        bpf_override_return((struct pt_regs *)args, 4242);
        __sync_fetch_and_add(ovs, 1);
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_getppid)
{
    int zero = 0;
    u64 *tgid = cfg.lookup(&zero);
    if (tgid && bpf_get_current_pid_tgid() >> 32 == *tgid && args->ret != 4242)
        bpf_override_return((struct pt_regs *)args, 4343);
    return 0;
}
"""


def main():
    victim, args = sys.argv[1], sys.argv[1:]
    rfd, wfd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(wfd)
        if os.read(rfd, 1) != b"g":
            os._exit(126)
        os.execv(victim, args)
    os.close(rfd)
    try:
        b = BPF(text=TEXT)
        for f, fn in zip(FUNCS, ("on_endbr", "on_push", "on_tiny")):
            b.attach_uprobe(name=victim, sym=f, fn_name=fn, pid=child)
        b.attach_uretprobe(name=victim, sym="ov_endbr", fn_name="on_return", pid=child)
        b.attach_uprobe(name=victim, sym="ov_endbr", fn_name="every_call", pid=child)
    except Exception as e:
        os.kill(child, 9)
        print(f"load: {e}".splitlines()[0])
        sys.exit(1)
    b["cfg"][b["cfg"].Key(0)] = b["cfg"].Leaf(child)
    time.sleep(0.3)          # as override_loader.c: the child is armed before its exec
    os.write(wfd, b"g")
    _, status = os.waitpid(child, 0)
    print(f"victim: exit {os.waitstatus_to_exitcode(status)}", flush=True)
    c = [b["counts"][b["counts"].Key(k)].value for k in range(13)]
    for i, f in enumerate(FUNCS):
        print(f"program {f}: hits {c[i]} overridden {c[3 + i]}")
    print(f"program openat: hits {c[6]} overridden {c[7]}")
    print(f"program getppid: hits {c[11]} overridden {c[12]}")
    print(f"program second ov_endbr: hits {c[10]}")
    print(f"program uretprobe ov_endbr: returns {c[8]} overridden {c[9]}")


if __name__ == "__main__":
    main()
