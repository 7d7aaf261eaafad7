"""The server's object table: maps, programs, links, BTF and perf events,
their ids (one id space per kind, as the kernel's idrs), references, and the
pin namespace that stands in for /sys/fs/bpf.

Every object owns one real descriptor (a memfd, or an eventfd for perf
events); the fds loaders hold are copies of it sent with SCM_RIGHTS, so the
object's inode identifies any copy. An object lives while something holds
it: a process (Conn.held), a pin, or another object (a program's maps).
"""
import contextlib
import errno
import os
import posixpath
import threading
import time

from . import _native
from .errors import BpfError

P = _native.proto

KIND_NAMES = {P.SHIM_OBJ_MAP: "map", P.SHIM_OBJ_PROG: "prog", P.SHIM_OBJ_LINK: "link",
              P.SHIM_OBJ_BTF: "btf", P.SHIM_OBJ_PERF_EVENT: "perf_event"}


class BpfObject:
    kind = P.SHIM_OBJ_NONE
    memfd_name = "bpf-obj"

    def __init__(self):
        self.id = 0
        self.refs = 0
        self.fd = -1
        self.created = time.time()
        self.owner_uid = os.getuid()
        self.children = []       # objects this one holds (released with it)
        self.pids = set()        # processes that have held it (for status)

    # not saved by durable.py: descriptors, mappings, counts made again
    _transient = ("fd", "identity", "refs", "pids", "saved")

    def open_fd(self, size=0):
        from . import durable
        if durable.STORE is not None and self.kind in durable.KINDS:
            self.fd, self.file = durable.STORE.create(self.kind)    # outlives the server
        else:
            self.fd = os.memfd_create(self.memfd_name, os.MFD_CLOEXEC)
        if size:
            os.ftruncate(self.fd, size)

    def __getstate__(self):
        d = dict(self.__dict__)
        for k in self._transient:
            d.pop(k, None)
        return d

    def revive(self, store):
        """After durable.py loaded it: the descriptor again, no counts yet."""
        self.fd = store.reopen(self.file)
        self.refs = 0
        self.pids = set()
        self.recovered = True    # made by an earlier server (bpfshim status)

    # Every change of what a new server must recover goes through a count
    # (pins, holders, children) or add(): that marks the registry for
    # durable.py, and the object itself where its own state changed.
    def get(self):
        self.refs += 1
        registry.dirty = True

    def put(self):
        self.refs -= 1
        registry.dirty = True
        if self.refs <= 0:
            registry.drop(self)

    def hold_child(self, obj):
        obj.get()
        self.children.append(obj)
        self.saved = None

    def destroy(self):
        for c in self.children:
            c.put()
        self.children = []
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if getattr(self, "file", None):
            from . import durable
            durable.STORE.remove(self.file)
            self.file = None


def fd_identity(fd, pid="self"):
    """What names the object behind fd `fd` of process `pid`: its inode, and
    for an eventfd (perf events), whose inode all eventfds share, the
    eventfd-id of its fdinfo. OSError when there is no such fd."""
    path = f"/proc/{pid}/fd/{fd}"
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, 0)
    if os.readlink(path) == "anon_inode:[eventfd]":
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("eventfd-id:"):
                    key = (st.st_dev, st.st_ino, int(line.split()[1]))
    return key


class Registry:
    def __init__(self):
        self.lock = threading.RLock()
        self.objs = {k: {} for k in KIND_NAMES}
        self.next_id = {k: 1 for k in KIND_NAMES}
        self.inodes = {}                 # fd_identity() -> object
        self.pins = {"/sys/fs/bpf": None}  # path -> object, None = directory
        self.dirty = True                # changed since durable.py saved it
    # ---- the lock ----
    @contextlib.contextmanager
    def unlocked(self):
        """Out of the object lock (if this thread holds it, at any depth) for
        a wait on a caller or a long allocation: no request holds the table
        across those, so one caller cannot stall the others."""
        if not self.lock._is_owned():
            yield
            return
        state = self.lock._release_save()
        try:
            yield
        finally:
            self.lock._acquire_restore(state)

    # ---- ids ----
    def reserve_id(self, kind):
        """An id for an object built out of the lock, then add()ed with it:
        like the kernel's, it is visible only once the object is whole."""
        with self.lock:
            oid = self.next_id[kind]
            self.next_id[kind] = oid + 1
            return oid

    def add(self, obj, oid=None):
        with self.lock:
            if oid is None:
                oid = self.reserve_id(obj.kind)
            obj.id = oid
            self.objs[obj.kind][oid] = obj
            obj.saved = None
            self.dirty = True
            made = getattr(self._req, "made", None)
            if made is not None:
                made.append(obj)
            if obj.fd >= 0:
                obj.identity = fd_identity(obj.fd)
                self.inodes[obj.identity] = obj
            return obj

    def drop(self, obj):
        with self.lock:
            if self.objs[obj.kind].pop(obj.id, None) is None:
                return
            if obj.fd >= 0:
                self.inodes.pop(obj.identity, None)
            obj.destroy()

    def get(self, kind, oid):
        """The object, held until the end of the thread's request (if any):
        as a kernel command holds what fdget() gave it, a request that waits
        out of the lock after looking an object up finds it whole after."""
        obj = self.objs[kind].get(oid)
        held = getattr(self._req, "held", None)
        if obj is not None and held is not None and id(obj) not in held:
            held[id(obj)] = obj
            obj.refs += 1        # not a saved count (durable.py): no dirty mark
        return obj

    def by_fd(self, fd, pid="self"):
        """The object behind fd `fd` of process `pid` (this one by default),
        or None; OSError when there is no such fd."""
        return self.inodes.get(fd_identity(fd, pid))

    def next_after(self, kind, start):
        """The smallest id > start (BPF_*_GET_NEXT_ID), or None."""
        ids = [i for i in self.objs[kind] if i > start]
        return min(ids) if ids else None

    def all(self, kind):
        return [self.objs[kind][i] for i in sorted(self.objs[kind])]

    # ---- pins (bpffs) ----
    # Paths are the caller's bytes, kept as str by surrogateescape (os.fsdecode)
    # so that any byte but NUL names a pin, as on bpffs. They are resolved one
    # component at a time as the kernel's path walk does: "." and ".." need the
    # component before them to be a directory (a pinned object: ENOTDIR), a
    # missing one is ENOENT; outside /sys/fs/bpf the real filesystem answers.
    ROOT = "/sys/fs/bpf"

    def _is_dir(self, p):
        """p (normalised) as a directory of the walk: True, or BpfError."""
        if p == self.ROOT or p.startswith(self.ROOT + "/"):
            if p not in self.pins:
                raise BpfError(errno.ENOENT)
            if self.pins[p] is not None:
                raise BpfError(errno.ENOTDIR)
            return True
        if not os.path.exists(p):
            raise BpfError(errno.ENOENT)
        if not os.path.isdir(p):
            raise BpfError(errno.ENOTDIR)
        return True

    def walk(self, path):
        """(normalised path, trailing slash) of `path` (str or bytes) after the
        kernel's walk of every component but the last; BpfError on the way."""
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not path:
            raise BpfError(errno.ENOENT)
        if not path.startswith("/"):
            path = "/" + path    # callers resolve relative paths (cmd_obj: the caller's cwd)
        parts = [c for c in path.split("/") if c]
        cur = "/"
        last = None
        for i, c in enumerate(parts):
            final = i == len(parts) - 1
            if c in (".", ".."):
                self._is_dir(cur)
                if c == "..":
                    cur = posixpath.dirname(cur)
                if final:
                    last = cur
                continue
            if not final:
                nxt = posixpath.join(cur, c)
                self._is_dir(nxt)
                cur = nxt
            else:
                last = posixpath.join(cur, c)
        if last is None:
            last = cur
        return last, path.endswith("/")

    def _lookup(self, path):
        """The existing entry `path` names (a trailing slash wants a directory)."""
        p, slash = self.walk(path)
        if p not in self.pins:
            raise BpfError(errno.ENOENT)
        if slash and self.pins[p] is not None:
            raise BpfError(errno.ENOTDIR)
        return p

    def _create(self, path, directory=False):
        """The entry `path` would create: its parent must be a bpffs directory."""
        p, slash = self.walk(path)
        parent = posixpath.dirname(p)
        if p in self.pins or p in ("/", posixpath.dirname(self.ROOT)):
            raise BpfError(errno.EEXIST)
        if not (p.startswith(self.ROOT + "/")):
            raise BpfError(errno.EPERM, f"{os.fsencode(path)!r}: not on bpffs")
        self._is_dir(parent)
        if slash and not directory:
            raise BpfError(errno.ENOENT)   # foo/bar/: asks for a directory
        return p

    def pin(self, path, obj):
        with self.lock:
            p = self._create(path)
            self.pins[p] = obj
            obj.get()

    def pinned(self, path):
        with self.lock:
            obj = self.pins[self._lookup(path)]
            if obj is None:      # a directory is not a bpf object
                raise BpfError(errno.EACCES)
            return obj

    def unlink(self, path):
        with self.lock:
            p = self._lookup(path)
            if p == self.ROOT:
                raise BpfError(errno.EBUSY)
            obj = self.pins[p]
            if obj is None and any(k.startswith(p + "/") for k in self.pins):
                raise BpfError(errno.ENOTEMPTY)
            del self.pins[p]
            self.dirty = True
            if obj is not None:
                obj.put()

    def mkdir(self, path):
        with self.lock:
            self.pins[self._create(path, directory=True)] = None
            self.dirty = True

    def stat(self, path):
        """1 for a directory, 2 for a pinned object; BpfError(ENOENT)."""
        with self.lock:
            p = self._lookup(path)
            return 1 if self.pins[p] is None else 2

    def listing(self, path):
        """The tree under a pin directory, in pre-order, each directory's
        entries newest first as bpffs's readdir gives them: [(path, is_dir)];
        BpfError(ENOENT) when absent, ENOTDIR for a pinned object."""
        with self.lock:
            p = self._lookup(path)
            if self.pins[p] is not None:
                raise BpfError(errno.ENOTDIR)
            children = {}
            for k in self.pins:          # insertion order = creation order
                if k != "/sys/fs/bpf":
                    children.setdefault(posixpath.dirname(k), []).insert(0, k)
            out, todo = [], [p]
            while todo:
                k = todo.pop()
                out.append((k, self.pins[k] is None))
                todo.extend(reversed(children.get(k, [])))
            return out

    def pins_of(self, obj):
        return sorted(p for p, o in self.pins.items() if o is obj)

    # ---- requests ----
    _req = threading.local()    # .made: the objects the thread's request added; .held: those it looked up

    @contextlib.contextmanager
    def request(self):
        """Around one request: an object it added that nothing holds at the
        end (the request failed after creating it, or its caller was gone
        before the reply gave it an fd) is freed, as the kernel frees an
        object whose fd it could not install. What it looked up (get()) is
        let go, and freed if nothing else holds it any more."""
        self._req.made = made = []
        self._req.held = held = {}
        try:
            yield
        finally:
            self._req.made = self._req.held = None
            for obj in held.values():
                obj.refs -= 1
                if obj.refs <= 0:
                    self.dirty = True
                    self.drop(obj)
            for obj in made:
                if obj.refs <= 0:
                    self.drop(obj)


registry = Registry()
