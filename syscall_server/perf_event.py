"""perf_event_open(2) for what bpfshim serves, with the kernel's checks
(perf_copy_attr, perf_event_open, perf_event_alloc) and errno.

A PERF_COUNT_SW_BPF_OUTPUT event is an eventfd (what the loader holds and
polls) plus a ring segment (agent/perf_ring.h) the loader sizes when it
mmaps the event and producers in any process write to.
"""
import errno
import os
import struct

from . import _native
from .errors import ENOTSUPP, BpfError, unsupported
from .objects import BpfObject, registry

P = _native.proto
ffi = _native.ffi

PERF_ATTR_SIZE_VER0 = 64
PERF_ATTR_SIZE_KERNEL = 136          # 6.18: PERF_ATTR_SIZE_VER8 (config3)
PERF_FLAG_ALL = 0x1 | 0x2 | 0x4 | 0x8
PERF_TYPE_HARDWARE, PERF_TYPE_SOFTWARE, PERF_TYPE_TRACEPOINT = 0, 1, 2
PERF_COUNT_SW_CPU_CLOCK, PERF_COUNT_SW_BPF_OUTPUT, PERF_COUNT_SW_MAX = 0, 10, 13
PERF_SAMPLE_MAX = 1 << 25
PERF_FORMAT_MAX = 1 << 5
SHIM_FD_RING = 0x80000000            # f_flags marking the ring segment fd

RING_META = struct.Struct("<IIIIIIQQQQQ")   # struct perf_ring_meta


def uprobe_pmu_type():
    try:
        with open("/sys/bus/event_source/devices/uprobe/type") as f:
            return int(f.read())
    except OSError:
        return 8


class PerfEventObject(BpfObject):
    kind = P.SHIM_OBJ_PERF_EVENT

    def __init__(self, attr, cpu, pid):
        super().__init__()
        self.attr = attr
        self.cpu = cpu
        self.pid = pid
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.ring = os.memfd_create("bpf-perf-ring", os.MFD_CLOEXEC)
        os.ftruncate(self.ring, 4096)

    def init_ring(self):
        a = self.attr
        disabled = a["flags"] & 1
        wakeup = a["wakeup"]
        watermark_flag = (a["flags"] >> 14) & 1
        meta = RING_META.pack(0x46524550, 0, 0 if disabled else 1,
                              0 if watermark_flag else wakeup,
                              wakeup if watermark_flag else 0,
                              self.cpu & 0xFFFFFFFF, 0, 0, 0, self.id, a["sample_type"])
        os.pwrite(self.ring, meta, 0)

    def destroy(self):
        if self.ring >= 0:
            os.close(self.ring)
            self.ring = -1
        super().destroy()


def _decode(raw):
    a = {}
    (a["type"], a["size"], a["config"], a["sample_period"], a["sample_type"], a["read_format"],
     a["flags"], a["wakeup"], a["bp_type"], a["config1"], a["config2"]) = struct.unpack_from("<IIQQQQQIIQQ", raw)
    a["reserved_2"] = struct.unpack_from("<H", raw, 110)[0]
    a["reserved_3"] = struct.unpack_from("<I", raw, 116)[0] >> 3
    return a


def perf_event_open(conn, uattr, pid, cpu, group_fd, flags):
    """Returns (ret, give) like a bpf handler; raises BpfError."""
    if flags & ~PERF_FLAG_ALL:
        raise BpfError(errno.EINVAL)
    size_raw = conn.read(uattr + 4, 4)
    size = struct.unpack("<I", size_raw)[0] or PERF_ATTR_SIZE_VER0
    if size < PERF_ATTR_SIZE_VER0 or size > 4096:
        conn.write(uattr + 4, struct.pack("<I", PERF_ATTR_SIZE_KERNEL))
        raise BpfError(errno.E2BIG)
    raw = conn.read(uattr, size)
    if size > PERF_ATTR_SIZE_KERNEL and any(raw[PERF_ATTR_SIZE_KERNEL:]):
        conn.write(uattr + 4, struct.pack("<I", PERF_ATTR_SIZE_KERNEL))
        raise BpfError(errno.E2BIG)
    raw = raw[:PERF_ATTR_SIZE_KERNEL].ljust(PERF_ATTR_SIZE_KERNEL, b"\0")
    a = _decode(raw)
    if a["flags"] >> 38 or a["reserved_2"] or a["reserved_3"]:
        raise BpfError(errno.EINVAL)
    if a["sample_type"] & ~(PERF_SAMPLE_MAX - 1) or a["read_format"] & ~(PERF_FORMAT_MAX - 1):
        raise BpfError(errno.EINVAL)
    if not (a["flags"] >> 10) & 1 and a["sample_period"] >> 63:
        raise BpfError(errno.EINVAL)
    if group_fd != -1:
        raise unsupported(errno.EINVAL, "perf event groups (group_fd)")
    if pid != -1 and pid > 0 and not os.path.exists(f"/proc/{pid}"):
        raise BpfError(errno.ESRCH)
    ncpus = _native.lib.shm_nr_possible_cpus()
    if cpu < -1 or cpu >= ncpus or (cpu == -1 and pid == -1):
        raise BpfError(errno.EINVAL)
    t, cfg = a["type"], a["config"]
    if t == PERF_TYPE_SOFTWARE:
        if cfg >= PERF_COUNT_SW_MAX:
            raise BpfError(errno.ENOENT)
        if cfg == PERF_COUNT_SW_CPU_CLOCK:
            obj = TimerEvent(a, cpu, pid)
            registry.add(obj)
            return obj
        if cfg != PERF_COUNT_SW_BPF_OUTPUT:
            raise unsupported(errno.EOPNOTSUPP, f"software perf event config {cfg} (BPF_OUTPUT and CPU_CLOCK only)")
    elif t == uprobe_pmu_type():
        obj = UprobeEvent(a, cpu, pid, *_uprobe_target(conn, a), twin=conn.mode == P.SHIM_MODE_KERNEL)
        registry.add(obj)
        return obj
    elif t == PERF_TYPE_TRACEPOINT:
        obj = TracepointEvent(a, cpu, pid, _tracepoint(cfg))
        registry.add(obj)
        return obj
    elif t == PERF_TYPE_HARDWARE:
        raise unsupported(errno.ENOENT, "hardware perf events")
    else:
        raise BpfError(errno.ENOENT)
    obj = PerfEventObject(a, cpu, pid)
    registry.add(obj)
    obj.init_ring()
    return obj


def _uprobe_target(conn, a):
    """create_local_trace_uprobe(): the path (relative paths and /proc/self
    are the caller's), a regular file, an offset inside it."""
    if not a["config1"]:
        raise BpfError(errno.EINVAL)
    try:
        path = conn.read_str(a["config1"], 4095).decode(errors="surrogateescape")
    except BpfError as e:
        raise BpfError(errno.ENAMETOOLONG if e.errno == errno.E2BIG else e.errno)
    look = path
    if look.startswith("/proc/self/"):
        look = f"/proc/{conn.pid}/" + look[len("/proc/self/"):]
    elif not look.startswith("/"):
        look = f"/proc/{conn.pid}/cwd/{look}"
    try:
        st = os.stat(look)
    except OSError as e:
        raise BpfError(e.errno)
    import stat as _st
    if not _st.S_ISREG(st.st_mode):
        raise BpfError(errno.EINVAL)
    if a["config2"] > st.st_size:
        raise BpfError(errno.EINVAL)
    return path, st


class ProgEvent(PerfEventObject):
    """An event that runs a program (PERF_EVENT_IOC_SET_BPF or a perf link):
    perf_event_set_bpf_prog()'s checks, in one place."""
    prog_type = None

    def __init__(self, attr, cpu, pid):
        super().__init__(attr, cpu, pid)
        self.enabled = not (attr["flags"] & 1)
        self.prog = None

    def set_bpf(self, prog, cookie=0):
        """perf_event_set_bpf_prog()"""
        if prog.prog_type != self.prog_type:
            raise BpfError(errno.EINVAL)
        if self.prog is not None:
            raise BpfError(errno.EEXIST)
        self.prog = prog
        self.hold_child(prog)
        self.prog_set(cookie)

    def prog_set(self, cookie):
        """What the event does once it has its program."""

    def detach_prog(self):
        """perf_event_free_bpf_prog(): its perf link was released
        (bpf_perf_link_release), the event stays without a program."""
        if self.prog is None:
            return
        self.prog_unset()
        prog, self.prog = self.prog, None
        self.children.remove(prog)
        self.saved = None
        prog.put()

    def prog_unset(self):
        """What the event stops doing without its program."""

    def set_enabled(self, on):
        self.enabled = on

    def attach_prog(self, ctx, prog, lc):
        from .cmd_link import LinkObject
        self.set_bpf(prog, lc.perf_event.bpf_cookie)
        link = LinkObject(prog, _native.uapi.BPF_PERF_EVENT, self)
        registry.add(link)
        return ctx.new_fd(link)


class ProbeEvent(ProgEvent):
    """An event whose program every agent runs: with its program it is a
    slot of the attach table (agent/attach_table.h)."""

    def __init__(self, attr, cpu, pid):
        super().__init__(attr, cpu, pid)
        self.slot = None

    def prog_set(self, cookie):
        from .attach import table
        self.slot = table().add(prog_id=self.prog.id, cookie=cookie, event_id=self.id, enabled=self.enabled,
                                **self.slot_fields())

    def set_enabled(self, on):
        from .attach import table
        self.enabled = on
        if self.slot is not None:
            table().set_enabled(self.slot, on)

    def prog_unset(self):
        if self.slot is not None:
            from .attach import table
            table().remove(self.slot)
            self.slot = None

    def destroy(self):
        self.prog_unset()
        super().destroy()


class UprobeEvent(ProbeEvent):
    """A uprobe / uretprobe event."""
    prog_type = _native.uapi.BPF_PROG_TYPE_KPROBE

    def __init__(self, attr, cpu, pid, path, st, twin=False):
        super().__init__(attr, cpu, pid)
        self.twin = twin         # a hybrid loader's: the twin of its kernel uprobe
        self.path = path
        self.dev, self.ino = st.st_dev, st.st_ino
        self.offset = attr["config2"]
        self.retprobe = bool(attr["config"] & 1)
        self.ref_ctr_offset = attr["config"] >> 32

    def slot_fields(self):
        L = _native.lib
        return dict(kind=L.ATTACH_KIND_UPROBE, dev=self.dev, ino=self.ino, offset=self.offset,
                    ref_ctr_offset=self.ref_ctr_offset, pid=self.pid, path=self.path,
                    flags=(L.ATTACH_F_RETPROBE if self.retprobe else 0) |
                    (L.ATTACH_F_KERNEL_TWIN if getattr(self, "twin", False) else 0))


_SUD = None


def _sud_available():
    """Whether this kernel has Syscall User Dispatch, which the agent fires
    tracepoints with: turned on for this thread with a selector that allows
    every syscall, then off again."""
    global _SUD
    if _SUD is None:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        sel = ctypes.c_char(b"\0")       # SYSCALL_DISPATCH_FILTER_ALLOW
        _SUD = libc.prctl(59, 1, 0, 0, ctypes.addressof(sel)) == 0   # PR_SET_SYSCALL_USER_DISPATCH, ON
        if _SUD:
            libc.prctl(59, 0, 0, 0, 0)
    return _SUD


def _tracepoint(eid):
    """perf_trace_init(): the event with this tracefs id."""
    from .tracepoints import catalogue
    tp = catalogue().by_id.get(eid)
    if tp is not None and not _sud_available():
        raise unsupported(errno.EOPNOTSUPP, f"tracepoint {tp.full_name}: this kernel has no Syscall User "
                                            "Dispatch (Linux 5.11+, CONFIG_SYSCALL_USER_DISPATCH)")
    if tp is None:
        name = _kernel_event(eid) if eid >> 32 == 0 else None
        if name:
            raise unsupported(errno.EOPNOTSUPP, catalogue().not_served_line(name))
        raise BpfError(errno.ENOENT)
    return tp


def _kernel_event(eid):
    """The name of a kernel tracepoint with this id, if tracefs says."""
    from .tracepoints import tracefs_events
    root = tracefs_events()
    try:
        cats = os.listdir(root) if root else ()
    except OSError:
        return None
    for cat in cats:
        try:
            names = os.listdir(os.path.join(root, cat))
        except OSError:      # events/enable, header_page, ...: files
            continue
        for name in names:
            try:
                with open(os.path.join(root, cat, name, "id")) as f:
                    if int(f.read()) == eid:
                        return f"{cat}:{name}"
            except (OSError, ValueError):
                pass
    return None


class TracepointEvent(ProbeEvent):
    """A tracepoint event bpfshim serves (syscall_server/tracepoints.py). The
    kernel runs a tracepoint's programs in every task, whatever pid/cpu the
    event was opened for: so does its slot."""
    prog_type = _native.uapi.BPF_PROG_TYPE_TRACEPOINT

    def __init__(self, attr, cpu, pid, tp):
        super().__init__(attr, cpu, pid)
        self.tp = tp

    def slot_fields(self):
        L = _native.lib
        events = {"sched_process_exit": L.ATTACH_KIND_SCHED_PROCESS_EXIT,
                  "sched_process_fork": L.ATTACH_KIND_SCHED_PROCESS_FORK,
                  "sched_process_exec": L.ATTACH_KIND_SCHED_PROCESS_EXEC,
                  "signal_generate": L.ATTACH_KIND_SIGNAL_GENERATE}
        kind = events.get(self.tp.event) or (L.ATTACH_KIND_SYS_EXIT if self.tp.exit else L.ATTACH_KIND_SYS_ENTER)
        return dict(kind=kind, syscall_nr=max(self.tp.nr, 0), pid=-1, path=self.tp.full_name,
                    flags=L.ATTACH_F_RAW_SYSCALLS if self.tp.raw else 0, tp_type=self.tp.id)


class TimerEvent(ProgEvent):
    """PERF_COUNT_SW_CPU_CLOCK with a program (bpftrace's interval probes):
    the loader that opened it runs the program on a timer (libbpf_shim/
    perf_event.c); the server checks the program as the kernel does."""
    prog_type = _native.uapi.BPF_PROG_TYPE_PERF_EVENT


def perf_ioctl(conn, obj, req, arg):
    """The ioctls the shim forwards for events that run programs."""
    if req == PERF_EVENT_IOC_ENABLE:
        obj.set_enabled(True)
    elif req == PERF_EVENT_IOC_DISABLE:
        obj.set_enabled(False)
    elif req == PERF_EVENT_IOC_SET_BPF:
        prog = registry.get(P.SHIM_OBJ_PROG, arg)
        if prog is None:
            raise BpfError(errno.EBADF)
        if not hasattr(obj, "set_bpf"):
            raise BpfError(errno.EINVAL)
        obj.set_bpf(prog)
    else:
        raise BpfError(errno.ENOTTY)
    return 0


PERF_EVENT_IOC_ENABLE, PERF_EVENT_IOC_DISABLE, PERF_EVENT_IOC_SET_BPF = 0x2400, 0x2401, 0x40042408


def give(obj):
    """The fds of a perf event for a process: the eventfd (the return value)
    and, for BPF_OUTPUT events, the ring segment, marked SHIM_FD_RING."""
    if isinstance(obj, ProgEvent):
        return [(obj, 0)]
    return [(obj, 0), (obj, SHIM_FD_RING, obj.ring)]


def task_fd_query(ctx, attr):
    """bpf_task_fd_query(): what a perf event fd of process `pid` runs
    (bpftool perf). The fd is found through /proc/PID/fd, so any process of
    the user can be asked about; bpfshim needs no CAP_SYS_ADMIN for it."""
    q = attr.task_fd_query
    if q.flags:
        raise BpfError(errno.EINVAL)
    if not os.path.exists(f"/proc/{q.pid}"):
        raise BpfError(errno.ENOENT)
    try:
        obj = registry.by_fd(q.fd, q.pid)
    except OSError:
        raise BpfError(errno.EBADF)
    if not isinstance(obj, PerfEventObject) or q.pid == os.getpid():
        # ENOTSUPP: not a perf event (links: raw_tp only); the server's own
        # copies of the events are bpfshim's internals, not a loader's
        raise BpfError(ENOTSUPP)
    if getattr(obj, "prog", None) is None:
        raise BpfError(errno.ENOENT)
    U = _native.uapi
    if isinstance(obj, TracepointEvent):
        fd_type, name, offset = U.BPF_FD_TYPE_TRACEPOINT, obj.tp.name.encode(), 0
    elif isinstance(obj, UprobeEvent):
        fd_type = U.BPF_FD_TYPE_URETPROBE if obj.retprobe else U.BPF_FD_TYPE_UPROBE
        name, offset = obj.path.encode(), obj.offset
    else:
        raise BpfError(errno.EOPNOTSUPP)
    # bpf_task_fd_query_copy()
    ctx.conn.write(ctx.uattr_field("task_fd_query", "buf_len"), struct.pack("<I", len(name)))
    err = 0
    if q.buf_len and q.buf:
        if q.buf_len >= len(name) + 1:
            ctx.conn.write(q.buf, name + b"\0")
        else:
            ctx.conn.write(q.buf, name[:q.buf_len - 1] + b"\0")
            err = errno.ENOSPC
    ctx.conn.write(ctx.uattr_field("task_fd_query", "prog_id"),
                   struct.pack("<IIQQ", obj.prog.id, fd_type, offset, 0))
    if err:
        raise BpfError(err)
    return 0
