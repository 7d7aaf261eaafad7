"""The tracepoints bpfshim serves: the syscall tracepoints (syscalls:sys_enter_*
/ sys_exit_*, raw_syscalls:sys_enter / sys_exit) and the few events found on
their path (EVENTS), which the agent fires in user space (agent/syscall/events.c).

Event ids and formats are the kernel's: read from tracefs when this process
may read it, else from the snapshot of the kernel bpfshim emulates
(data/syscall_tracepoints.json, made by scripts/gen_tracepoints.py). The shim
serves the same tracefs files (format, id, available_events) to loaders that
cannot read tracefs, so a loader and the server always agree on the ids.
"""
import json
import os
import re

SNAPSHOT = os.path.join(os.path.dirname(__file__), "data", "syscall_tracepoints.json")
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
CATEGORIES = ("raw_syscalls", "syscalls")
# single events of other categories the agent fires: (category, name)
EVENTS = (("sched", "sched_process_exit"), ("sched", "sched_process_fork"), ("sched", "sched_process_exec"),
          ("signal", "signal_generate"))

_COMMON = ("\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
           "\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n"
           "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n"
           "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n")
_FIELD = re.compile(r"\tfield:(.*);\toffset:(\d+);\tsize:(\d+);\tsigned:(\d+);")


def tracefs_events():
    """The events directory of a tracefs this process can read, or None."""
    for root in TRACEFS:
        ev = os.path.join(root, "events")
        try:
            if os.path.isdir(os.path.join(ev, "syscalls")) and os.listdir(os.path.join(ev, "syscalls")):
                return ev
        except OSError:
            pass
    return None


def parse_format(cat, text):
    """A tracefs format file as {cat, name, id, fields, fmt}."""
    name = re.search(r"^name: (\S+)$", text, re.M).group(1)
    eid = int(re.search(r"^ID: (\d+)$", text, re.M).group(1))
    body = text.split(_COMMON, 1)[1]
    fields = [[m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))] for m in _FIELD.finditer(body)]
    fmt = re.search(r"^print fmt: (.*)$", text, re.M).group(1)
    return {"cat": cat, "name": name, "id": eid, "fields": fields, "fmt": fmt}


def format_text(ev):
    """The tracefs format file of an event, as the kernel prints it."""
    fields = "".join(f"\tfield:{d};\toffset:{o};\tsize:{s};\tsigned:{g};\n" for d, o, s, g in ev["fields"])
    return f"name: {ev['name']}\nID: {ev['id']}\nformat:\n{_COMMON}\n{fields}\nprint fmt: {ev['fmt']}\n"


class Tracepoint:
    """One served event: its id, what the agent matches (syscall number,
    entry or exit, raw_syscalls layout) and its format."""

    def __init__(self, ev):
        self.cat, self.name, self.id = ev["cat"], ev["name"], ev["id"]
        self.raw = self.cat == "raw_syscalls"
        self.event = self.name if (self.cat, self.name) in EVENTS else None
        self.exit = self.name.startswith("sys_exit")
        self.nr = ev.get("nr", -1)
        self.ev = ev

    @property
    def full_name(self):
        return f"{self.cat}:{self.name}"


class Catalogue:
    def __init__(self):
        with open(SNAPSHOT) as f:
            snap = {(e["cat"], e["name"]): e for e in json.load(f)["events"]}
        live = tracefs_events()
        self.by_id, self.by_name = {}, {}
        for key, ev in snap.items():
            if live:
                # this kernel's ids (they differ between boots and builds)
                try:
                    with open(os.path.join(live, key[0], key[1], "id")) as f:
                        ev = dict(ev, id=int(f.read()))
                except (OSError, ValueError):
                    continue
            tp = Tracepoint(ev)
            self.by_id[tp.id] = tp
            self.by_name[key] = tp

    def file(self, path):
        """The text of a tracefs file bpfshim serves (path relative to the
        tracefs root: events/CAT/NAME/{format,id}, available_events), or None."""
        if path == "available_events":
            return "".join(f"{tp.full_name}\n" for tp in self.by_name.values())
        m = re.fullmatch(r"events/(\w+)/(\w+)/(format|id)", path)
        tp = m and self.by_name.get((m.group(1), m.group(2)))
        if not tp:
            return None
        return format_text(tp.ev) if m.group(3) == "format" else f"{tp.id}\n"

    def served(self):
        """What bpfshim serves, for messages: whole categories as CAT:*."""
        cats = {}
        for cat, name in self.by_name:
            cats.setdefault(cat, []).append(name)
        return ", ".join(f"{c}:*" if c in ("syscalls", "raw_syscalls") else ", ".join(f"{c}:{n}" for n in sorted(ns))
                         for c, ns in sorted(cats.items()))

    def not_served(self, path):
        """The line for a loader looking up a tracepoint bpfshim does not
        serve (events/CAT/NAME/...), or "" for other paths."""
        m = re.fullmatch(r"events/(\w+)/(\w+)(/.*)?", path)
        if not m or (m.group(1), m.group(2)) in self.by_name:
            return ""
        return self.not_served_line(f"{m.group(1)}:{m.group(2)}")

    def not_served_line(self, full_name):
        return (f"tracepoint {full_name} is not served in user space (bpfshim serves {self.served()}); "
                "kernel tracepoints need kernel eBPF (run the tool without bpfshim, as root)")


_catalogue = None


def catalogue():
    global _catalogue
    if _catalogue is None:
        _catalogue = Catalogue()
    return _catalogue
