#!/usr/bin/env python3
"""Snapshot the kernel's syscall tracepoints (syscalls:*, raw_syscalls:*) and
the other events bpfshim fires (tracepoints.EVENTS) into
syscall_server/data/syscall_tracepoints.json: event ids, syscall numbers and
format fields, for when tracefs cannot be read (an unprivileged server).

Run as root on the kernel bpfshim emulates. Syscall numbers come from the
event name (asm/unistd_64.h and the SYSCALL_DEFINE names that differ from it,
checked on 6.18 by reading __syscall_nr of every sys_enter_* event with a
kernel BPF program); each format is rebuilt from the snapshot and compared
with tracefs before it is written.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from syscall_server import tracepoints  # noqa: E402

# SYSCALL_DEFINE names whose __NR_ differs, and numbers newer than the
# installed uapi headers (x86-64 syscall_64.tbl)
ALIASES = {"newstat": 4, "newfstat": 5, "newlstat": 6, "newuname": 63, "sendfile64": 40, "umount": 166,
           "uretprobe": 335, "uprobe": 336, "futex_waitv": 449, "cachestat": 451, "fchmodat2": 452,
           "map_shadow_stack": 453, "futex_wake": 454, "futex_wait": 455, "futex_requeue": 456,
           "statmount": 457, "listmount": 458, "lsm_get_self_attr": 459, "lsm_set_self_attr": 460,
           "lsm_list_modules": 461, "mseal": 462, "setxattrat": 463, "getxattrat": 464, "listxattrat": 465,
           "removexattrat": 466, "open_tree_attr": 467, "file_getattr": 468, "file_setattr": 469}


def main():
    root = tracepoints.tracefs_events()
    if not root:
        sys.exit("gen_tracepoints: tracefs events are not readable (run as root with tracefs mounted)")
    nrs = dict(ALIASES)
    for line in open("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"):
        m = re.match(r"#define __NR_(\w+) (\d+)", line)
        if m:
            nrs.setdefault(m.group(1), int(m.group(2)))
    events = []
    listed = [(cat, name) for cat in tracepoints.CATEGORIES for name in sorted(os.listdir(os.path.join(root, cat)))]
    for cat, name in listed + list(tracepoints.EVENTS):
        path = os.path.join(root, cat, name, "format")
        if not os.path.exists(path):
            continue
        text = open(path).read()
        ev = tracepoints.parse_format(cat, text)
        if cat == "syscalls":
            ev["nr"] = nrs[re.sub(r"^sys_(enter|exit)_", "", name)]
        events.append(ev)
        assert tracepoints.format_text(ev) == text, f"{cat}/{name}: format does not round-trip"
    out = os.path.join(os.path.dirname(__file__), "..", "syscall_server", "data", "syscall_tracepoints.json")
    with open(out, "w") as f:
        json.dump({"kernel": os.uname().release, "events": events}, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(events)} events -> {os.path.normpath(out)}")


if __name__ == "__main__":
    main()
