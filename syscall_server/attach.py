"""The attach table (agent/attach_table.h): the server's list of probes
that every agent applies in its own process.

The server is the only writer. A slot is filled completely, then its state
is set and the table's generation bumped; agents futex-wait on the
generation and resync.
"""
import mmap
import os

from . import _native

ffi, lib = _native.ffi, _native.lib


class AttachTable:
    def __init__(self, runtime_dir):
        self.path = os.path.join(runtime_dir, "attach.tbl")
        size = ffi.sizeof("struct attach_table")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.ftruncate(fd, size)
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        os.close(fd)
        self.t = ffi.cast("struct attach_table *", ffi.from_buffer(self.mm))
        # A new server owns the table: whatever an old one left is stale.
        ffi.memmove(ffi.addressof(self.t.slots), b"\0" * ffi.sizeof(self.t.slots), ffi.sizeof(self.t.slots))
        self.t.nslots = len(self.t.slots)
        self.t.version = lib.ATTACH_TABLE_VERSION
        self.t.magic = lib.ATTACH_TABLE_MAGIC
        self.seq = 0
        self.bump()

    def bump(self):
        self.t.gen = (self.t.gen + 1) & 0xFFFFFFFF
        lib.shm_futex_wake(ffi.addressof(self.t, "gen"))

    def add(self, *, prog_id, kind, dev=0, ino=0, offset=0, ref_ctr_offset=0, cookie, pid, event_id, path,
            enabled, flags=0, tp_type=0, syscall_nr=0):
        for i in range(self.t.nslots):
            s = self.t.slots[i]
            if s.state == 0:
                break
        else:
            raise OSError(28, "attach table full")
        self.seq += 1
        s.prog_id, s.dev, s.ino, s.offset = prog_id, dev, ino, offset
        s.ref_ctr_offset, s.cookie, s.pid = ref_ctr_offset, cookie, pid
        s.kind, s.flags = kind, flags
        s.event_id, s.tp_type, s.syscall_nr = event_id, tp_type, syscall_nr
        p = path.encode()[:255]
        ffi.memmove(s.path, p + b"\0", len(p) + 1)
        s.seq = self.seq
        s.state = 1 if enabled else 2
        self.bump()
        return i

    def set_enabled(self, idx, enabled):
        s = self.t.slots[idx]
        if s.state:
            s.state = 1 if enabled else 2
            self.bump()

    def remove(self, idx):
        self.t.slots[idx].state = 0
        self.bump()


TABLE = None


def table(runtime_dir=None):
    global TABLE
    if TABLE is None:
        from .objects import registry
        TABLE = AttachTable(runtime_dir or registry.server.dir)
    return TABLE
