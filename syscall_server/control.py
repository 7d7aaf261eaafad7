"""Requests the shim makes besides bpf(): bpffs path operations (unlink,
mkdir of pinned paths) and the text of /proc/self/fdinfo/N."""
import errno
import json
import os
import struct

from . import _native, cmd_map, cmd_prog
from .errors import BpfError
from .objects import registry

P = _native.proto

# kind -> fdinfo(obj, f_flags) text; other families register here
FDINFO = {P.SHIM_OBJ_MAP: cmd_map.fdinfo, P.SHIM_OBJ_PROG: cmd_prog.fdinfo}


def _fdinfo_generic(obj, f_flags):
    return f"pos:\t0\nflags:\t{f_flags:08o}\nmnt_id:\t15\nino:\t{obj.id + 1000}\n"


MODES = {P.SHIM_MODE_USER: "user", P.SHIM_MODE_KERNEL: "kernel"}


def processes(server):
    """Each connected process and where its bpf() calls go."""
    out = []
    for c in sorted(server.conns if server else (), key=lambda c: c.pid):
        try:
            with open(f"/proc/{c.pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            comm = "?"
        out.append({"pid": c.pid, "comm": comm, "mode": MODES.get(c.mode, str(c.mode))})
    return out


def status():
    """Live objects for `bpfshim status`."""
    holders = {}
    server = getattr(registry, "server", None)
    for c in (server.conns if server else ()):
        for key in c.held:
            holders.setdefault(key, set()).add(c.pid)
    from . import durable
    for pid, (_start, held) in (durable.STORE.provisional.items() if durable.STORE else ()):
        for o in held:       # held before the server restarted, not yet reconnected
            holders.setdefault((o.kind, o.id), set()).add(pid)
    maps = []
    for m in registry.all(P.SHIM_OBJ_MAP):
        a = m.attr
        maps.append({"id": m.id, "type": cmd_map.map_type_name(a.map_type), "name": m.name,
                     "key_size": a.key_size, "value_size": a.value_size, "max_entries": a.max_entries,
                     "map_flags": a.map_flags, "frozen": m.frozen, "pins": registry.pins_of(m),
                     "pids": sorted(holders.get((m.kind, m.id), ())), "recovered": getattr(m, "recovered", False)})
    out = {"maps": maps, "processes": processes(server)}
    for kind, name in ((P.SHIM_OBJ_PROG, "progs"), (P.SHIM_OBJ_LINK, "links"), (P.SHIM_OBJ_BTF, "btf")):
        out[name] = [dict(getattr(o, "status", lambda: {})(), id=o.id, pins=registry.pins_of(o),
                          pids=sorted(holders.get((o.kind, o.id), ())), recovered=getattr(o, "recovered", False))
                     for o in registry.all(kind)]
    return out


def handle(conn, ctl, arg, payload, fds=()):
    try:
        if ctl == P.SHIM_CTL_PIN_UNLINK:
            registry.unlink(payload.rstrip(b"\0"))
            conn.done(0)
        elif ctl == P.SHIM_CTL_PIN_STAT:
            conn.done(registry.stat(payload.rstrip(b"\0")))
        elif ctl == P.SHIM_CTL_PIN_MKDIR:
            registry.mkdir(payload.rstrip(b"\0"))
            conn.done(0)
        elif ctl == P.SHIM_CTL_PIN_LIST:
            tree = registry.listing(payload.rstrip(b"\0"))
            conn.done(0, msg="".join(f"{'d' if d else 'f'} {p}\n" for p, d in tree))
        elif ctl == P.SHIM_CTL_FDINFO:
            kind, oid = struct.unpack_from("<II", payload)
            obj = registry.get(kind, oid)
            if obj is None:
                raise BpfError(errno.ENOENT)
            text = FDINFO.get(kind, _fdinfo_generic)(obj, arg | 0o2000000)
            conn.done(0, msg=text)
        elif ctl == P.SHIM_CTL_PERF_GET:
            from . import perf_event
            obj = registry.get(P.SHIM_OBJ_PERF_EVENT, arg)
            if obj is None:
                raise BpfError(errno.ENOENT)
            conn.done(0, give=perf_event.give(obj), ret_fd=0)
        elif ctl == P.SHIM_CTL_RINGBUF_WAKEFD:
            obj = registry.get(P.SHIM_OBJ_MAP, arg)
            if obj is None or obj.wake_fd < 0:
                raise BpfError(errno.ENOENT)
            conn.done(0, give=[(obj, P.SHIM_FD_WAKE, obj.wake_fd)], ret_fd=0)
        elif ctl == P.SHIM_CTL_PERF_IOCTL:
            from . import perf_event
            eid, req, parg = struct.unpack_from("<IIQ", payload)
            obj = registry.get(P.SHIM_OBJ_PERF_EVENT, eid)
            if obj is None:
                raise BpfError(errno.EBADF)
            conn.done(perf_event.perf_ioctl(conn, obj, req, parg))
        elif ctl == P.SHIM_CTL_TRACEFS_READ:
            from .tracepoints import catalogue
            path = payload.rstrip(b"\0").decode(errors="replace")
            text = catalogue().file(path)
            if text is None:
                why = catalogue().not_served(path)
                raise BpfError(errno.ENOENT, why, loud=bool(why))
            conn.done(0, msg=text)
        elif ctl == P.SHIM_CTL_STATUS:
            conn.done(0, msg=json.dumps(status()))
        elif ctl == P.SHIM_CTL_KMAP_SET:
            obj = registry.get(P.SHIM_OBJ_MAP, arg)
            if obj is None or len(fds) != 1 or obj.kernel_fd >= 0:
                raise BpfError(errno.EINVAL)
            obj.kernel_fd = os.dup(fds[0])
            obj.kernel_bound = True
            obj.saved = None         # pickled again (durable.py)
            registry.dirty = True
            conn.done(0)
        elif ctl == P.SHIM_CTL_KMAP_FD:
            obj = registry.get(P.SHIM_OBJ_MAP, arg)
            if obj is None or obj.kernel_fd < 0:
                raise BpfError(errno.ESTALE if obj is not None and obj.kernel_bound else errno.ENOENT)
            conn.done(0, give=[(obj, P.SHIM_FD_KERNEL, obj.kernel_fd)], ret_fd=0)
        elif ctl == P.SHIM_CTL_SYNC:
            conn.done(0)     # the messages before it on this connection are handled
        elif ctl == P.SHIM_CTL_TABLE_TOUCH:
            from .attach import table
            table().bump()
            conn.done(0)
        else:
            raise BpfError(errno.EINVAL)
    except BpfError as e:
        conn.fail(e)
