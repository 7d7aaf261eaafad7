"""What outlives the server: maps (with their data), programs and BTF, their
ids, pins and references, as bpffs keeps a pinned object until it is
unlinked whatever happens to the process that pinned it.

- Each durable object's descriptor is a file in `$RUNTIME_DIR/objects/`
  (not a memfd, which dies with its last holder): the fds loaders hold are
  that file, so a loader goes on with its element commands while no server
  runs, and a new server opens the same inode again (fd_identity() finds
  the loaders' copies).
- The registry is written to `objects/registry.state` (write, then rename:
  an old or a new state, never a torn one) before the reply of every request
  that changed it. It holds the objects (pickled without their descriptors
  and mappings), the next ids, the pins, and the processes (pid and start
  time) that held each object.
- A new server recovers that state before it serves anything: each object
  is counted again from its pins, the objects that hold it, and the
  processes that held it and still live. A process's count stands until it
  reconnects (its shim then says what it holds, SHIM_OP_HOLD, as after a
  fork) or dies; an object nothing holds any longer is freed, as on the
  kernel.

Not durable: perf events and links (their eventfds and attachments live in
the server; the attach table starts empty in a new server).
"""
import errno
import io
import os
import pickle
import secrets
import threading

from . import _native
from .objects import KIND_NAMES, BpfObject, registry

P = _native.proto
ffi = _native.ffi
KINDS = (P.SHIM_OBJ_BTF, P.SHIM_OBJ_MAP, P.SHIM_OBJ_PROG)   # children before their holders
STATE = "registry.state"
FILE_PREFIX = "bpfshim-obj-"    # libbpf_shim/fdtable.c knows it too
STORE = None


class Store:
    """The directory of the durable objects' files, inside the (checked)
    runtime directory."""

    def __init__(self, runtime_dir):
        path = os.path.join(runtime_dir, "objects")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        self.dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        st = os.fstat(self.dfd)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise OSError(errno.EACCES, f"{path}: not a private directory of uid {os.getuid()}")
        self.path = path
        self.provisional = {}    # pid -> (start time, [objects it held before the restart])
        self.saved = None

    def create(self, kind):
        name = f"{FILE_PREFIX}{KIND_NAMES[kind]}-{secrets.token_hex(8)}"
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600,
                     dir_fd=self.dfd)
        return fd, name

    def reopen(self, name):
        return os.open(name, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=self.dfd)

    def remove(self, name):
        try:
            os.unlink(name, dir_fd=self.dfd)
        except FileNotFoundError:
            pass

    # ---- the state ----
    def save(self, conns):
        """Write the registry if it changed (under the registry's lock). Each
        object is pickled when it is new or took a reference (obj.saved);
        what changes with every fd handed out (holders) is small."""
        if not registry.dirty:
            return
        objs = []
        for k in KINDS:
            for o in registry.all(k):
                if getattr(o, "saved", None) is None:
                    o.saved = _dumps(o)
                objs.append(o.saved)
        holders = {}
        for c in conns:
            for key in c.held:
                if key[0] in KINDS:
                    holders.setdefault(key, []).append((c.pid, c.start_time))
        for pid, (start, held) in self.provisional.items():
            for o in held:
                holders.setdefault((o.kind, o.id), []).append((pid, start))
        state = {"version": 2, "objs": objs, "holders": holders,
                 "next_id": {k: registry.next_id[k] for k in KINDS},
                 "pins": {p: (o.kind, o.id) if o is not None else None for p, o in registry.pins.items()
                          if o is None or o.kind in KINDS}}
        tmp = f"{STATE}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600,
                     dir_fd=self.dfd)
        try:
            with os.fdopen(fd, "wb", closefd=False) as f:
                pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            os.close(fd)
        os.replace(tmp, STATE, src_dir_fd=self.dfd, dst_dir_fd=self.dfd)
        registry.dirty = False

    def recover(self):
        """Rebuild the registry from the saved state; returns the objects
        recovered. Files no object names are removed."""
        live = []
        try:
            fd = os.open(STATE, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=self.dfd)
        except FileNotFoundError:
            fd = None
        if fd is not None:
            with os.fdopen(fd, "rb") as f:
                try:
                    state = pickle.load(f)
                    if state.get("version") == 2:
                        live = self._rebuild(state)
                except Exception as e:    # an unreadable state loses the objects, not the server
                    print(f"bpfshim server: {self.path}/{STATE} unreadable ({e!r}); starting empty", flush=True)
        keep = {o.file for o in live} | {STATE}
        for name in os.listdir(self.dfd):
            if name not in keep:
                self.remove(name)
        return live

    def _rebuild(self, state):
        loaded = [_loads(b) for b in state["objs"]]
        by_key = {(o.kind, o.id): o for o in loaded}
        objs = []
        for o in loaded:
            _resolve(o, by_key)
            try:
                o.revive(self)
            except OSError as e:
                print(f"bpfshim server: {KIND_NAMES[o.kind]} {o.id} not recovered: {e}", flush=True)
                del by_key[(o.kind, o.id)]
                continue
            objs.append(o)
        for k, v in state["next_id"].items():
            registry.next_id[k] = max(registry.next_id[k], v)
        for o in objs:
            o.children = [c for c in o.children if isinstance(c, BpfObject) and (c.kind, c.id) in by_key]
            registry.add(o, o.id)
            o.saved = None
        for o in objs:
            for c in o.children:
                c.refs += 1
            if getattr(o, "kernel_btf", False):
                o.refs += 1      # held by the kernel itself
        for p, key in state["pins"].items():
            o = by_key.get(key) if key is not None else None
            if key is None or o is not None:
                registry.pins[p] = o
                if o is not None:
                    o.refs += 1
        for key, hs in state["holders"].items():
            o = by_key.get(key)
            if o is None:
                continue
            for pid, start in hs:
                if start is not None and process_start(pid) == start:
                    self.provisional.setdefault(pid, (start, []))[1].append(o)
                    o.refs += 1
        for o in objs:
            if o.refs <= 0:
                o.refs = 1
                o.put()          # nothing holds it any more: freed as on the kernel
        return [o for o in objs if registry.get(o.kind, o.id) is o]

    def claimed(self, pid):
        """pid reconnected and said what it holds: its old counts go."""
        _, held = self.provisional.pop(pid, (None, []))
        for o in held:
            o.put()

    def reap(self):
        """Drop the counts of processes that died before they reconnected."""
        for pid, (start, _held) in list(self.provisional.items()):
            if process_start(pid) != start:
                self.claimed(pid)


def process_start(pid):
    """pid's start time (/proc/PID/stat field 22), or None: with the pid it
    names one process, whatever reuses the number later."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2:].split()[19])


# ---- pickling one object: itself whole but for its descriptors; the other
# durable objects it points to by (kind, id), resolved once all are loaded;
# anything else it points to (perf events, links) as None; cffi structs as
# their bytes ----
class _Ref:
    def __init__(self, key):
        self.key = key


def _dumps(root):
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if obj is root:
                return None
            if isinstance(obj, BpfObject):
                return ("obj", obj.kind, obj.id) if obj.kind in KINDS else ("gone",)
            if isinstance(obj, ffi.CData):
                t = ffi.typeof(obj)
                if t.kind == "pointer" and t.item.kind == "struct":
                    return ("cdata", t.cname, bytes(ffi.buffer(obj)))
                return ("gone",)
            if isinstance(obj, (threading.Thread, type(threading.Lock()), type(threading.RLock()))):
                return ("gone",)
            return None
    buf = io.BytesIO()
    P(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(root)
    return buf.getvalue()


def _loads(data):
    class U(pickle.Unpickler):
        def persistent_load(self, pid):
            if pid[0] == "obj":
                return _Ref((pid[1], pid[2]))
            if pid[0] == "cdata":
                c = ffi.new(pid[1])
                ffi.memmove(c, pid[2], len(pid[2]))
                return c
            return None
    return U(io.BytesIO(data)).load()


def _resolve(obj, by_key):
    """Replace the _Refs in obj's attributes (and the lists, tuples, sets and
    dicts they hold) by the objects loaded; None where one is missing."""
    def fix(v, depth):
        if isinstance(v, _Ref):
            return by_key.get(v.key)
        if depth > 4:
            return v
        if isinstance(v, list):
            return [fix(x, depth + 1) for x in v]
        if isinstance(v, tuple):
            return tuple(fix(x, depth + 1) for x in v)
        if isinstance(v, set):
            return {fix(x, depth + 1) for x in v}
        if isinstance(v, dict):
            return {k: fix(x, depth + 1) for k, x in v.items()}
        return v
    for k, v in list(obj.__dict__.items()):
        obj.__dict__[k] = fix(v, 0)


_reaper = None


def start(runtime_dir, conns_fn):
    """Open the store, recover the saved state, and keep a thread that drops
    the counts of processes that die before they reconnect."""
    global STORE, _reaper
    STORE = Store(runtime_dir)
    with registry.lock:
        live = STORE.recover()
        STORE.save(conns_fn())
    if live:
        print(f"bpfshim server: recovered {len(live)} objects, {sum(1 for o in registry.pins.values() if o)} pins",
              flush=True)

    def reap():
        import time
        while STORE.provisional:
            time.sleep(0.5)
            with registry.lock:
                STORE.reap()
                STORE.save(conns_fn())
    if STORE.provisional:
        _reaper = threading.Thread(target=reap, daemon=True)
        _reaper.start()
    return live
