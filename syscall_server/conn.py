"""One connected process, and the protocol of libbpf_shim/proto.h.

During a request the handler reads and writes the caller's memory through
the connection (the shim does the access fault-safely); the reply carries
the return value, errno, new fds (SCM_RIGHTS) and an optional message.
"""
import array
import os
import socket
import struct

from . import _native
from .errors import BpfError
from .objects import registry

ffi = _native.ffi
P = _native.proto  # constants of proto.h

HDR = struct.Struct("<IIqq")
MSG_MAX = P.SHIM_MSG_MAX
CHUNK = MSG_MAX - 64
META = struct.Struct("<IIIIQ")   # struct shim_fd_meta
DONE = struct.Struct("<IIiI")    # struct shim_done
IDENT = struct.Struct("<QQQ")    # struct shim_fd_ident: the key of objects.fd_identity


class Conn:
    before_done = None      # the server's: save what a new server would recover
    def __init__(self, sock):
        self.sock = sock
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        self.pid, self.uid, self.gid = struct.unpack("3i", creds)
        self.held = {}           # (kind, id) -> object: what this process holds
        self.mode = P.SHIM_MODE_USER   # enum shim_mode (SHIM_OP_MODE): hybrid loaders say so
        from .durable import process_start
        self.start_time = process_start(self.pid)

    # ---- framing ----
    def send(self, op, a=0, b=0, payload=b"", fds=()):
        data = HDR.pack(op, len(payload), _s64(a), _s64(b)) + payload
        # blocks while the caller leaves earlier replies unread: not under the
        # table's lock (the fds sent belong to objects the request holds)
        with registry.unlocked():
            if fds:
                self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            else:
                self.sock.sendall(data)

    def recv(self):
        """(op, a, b, payload, fds) or None at EOF."""
        data, anc, _flags, _addr = self.sock.recvmsg(MSG_MAX + HDR.size, socket.CMSG_SPACE(64 * 4))
        if not data:
            return None
        fds = []
        for level, typ, cdata in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(cdata[: len(cdata) - len(cdata) % a.itemsize])
                fds.extend(a)
        op, ln, a, b = HDR.unpack_from(data)
        return op, a, b, data[HDR.size:HDR.size + ln], fds

    def _mem_reply(self):
        # the caller may take its time, or never answer: not under the table's lock
        with registry.unlocked():
            m = self.recv()
        if m is None:
            raise ConnectionError("peer gone")
        op, a, _b, payload, fds = m
        if op == P.SHIM_OP_MEM:
            return payload, fds
        if op == P.SHIM_OP_MEM_ERR:
            for fd in fds:
                os.close(fd)
            raise BpfError(a)
        raise ConnectionError(f"unexpected op {op} during a request")

    # ---- the caller's memory ----
    def read(self, addr, n):
        """n bytes at addr in the caller, or BpfError(EFAULT)."""
        if n == 0:
            return b""
        _check_range(addr, n)
        out = bytearray()
        while len(out) < n:
            k = min(CHUNK, n - len(out))
            self.send(P.SHIM_OP_READ, addr + len(out), k)
            data, _ = self._mem_reply()
            out += data
        return bytes(out)

    def read_str(self, addr, maxlen):
        """NUL-terminated string (without the NUL); BpfError(EFAULT) or
        BpfError(E2BIG) when there is no NUL within maxlen bytes."""
        _check_range(addr, 1)
        self.send(P.SHIM_OP_READSTR, addr, maxlen)
        data, _ = self._mem_reply()
        return bytes(data)

    def write(self, addr, data):
        if data:
            _check_range(addr, len(data))
        for off in range(0, len(data), CHUNK):
            self.send(P.SHIM_OP_WRITE, addr + off, 0, bytes(data[off:off + CHUNK]))
            self._mem_reply()

    def fdget(self, fd):
        """What the caller's fd is: (kind, id, f_flags) — kind 0 when the fd
        is open but no bpfshim object; BpfError(EBADF) when not open. An fd
        the shim's table does not know is named by its inode."""
        self.send(P.SHIM_OP_FDGET, fd)
        data, fds = self._mem_reply()
        for x in fds:
            os.close(x)
        kind, oid, f_flags, _pad, _seg = META.unpack_from(data)
        if len(data) >= META.size + IDENT.size:
            from .objects import registry
            obj = registry.inodes.get(IDENT.unpack_from(data, META.size))
            if obj is not None:
                kind, oid = obj.kind, obj.id
        return kind, oid, f_flags

    def done(self, ret, err=0, give=(), ret_fd=-1, msg=""):
        """End the request. `give` is a list of (object, f_flags) or
        (object, f_flags, fd): each is sent as a new fd (the object's own by
        default); ret_fd picks the one whose number is returned."""
        metas = b"".join(META.pack(g[0].kind, g[0].id, g[1], 0, getattr(g[0], "seg_size", 0)) for g in give)
        m = msg.encode(errors="surrogateescape")[:60000]   # pin paths are bytes
        payload = DONE.pack(len(give), len(m), ret_fd, 0) + metas + m
        for g in give:
            self.hold(g[0])
        if self.before_done:
            self.before_done()
        self.send(P.SHIM_OP_DONE, ret, err, payload, [g[2] if len(g) > 2 else g[0].fd for g in give])

    def fail(self, e):
        """End the request with BpfError e: ret -1, its errno, and its message
        on the caller's stderr when the error says so (e.loud)."""
        self.done(-1, e.errno, msg=e.strerror if e.loud else "")

    # ---- references ----
    def hold(self, obj):
        key = (obj.kind, obj.id)
        if key not in self.held:
            self.held[key] = obj
            obj.get()

    def release(self, kind, oid):
        obj = self.held.pop((kind, oid), None)
        if obj is not None:
            obj.put()

    def release_all(self):
        for obj in list(self.held.values()):
            obj.put()
        self.held.clear()


U64 = (1 << 64) - 1


def _s64(v):
    """a and b are int64 on the wire; a u64 (an address at or above 2^63 the
    caller's attr gave) travels as its two's complement, as in C."""
    v &= U64
    return v - (1 << 64) if v >> 63 else v


def _check_range(addr, n):
    """access_ok(): a range that wraps past 2^64 is EFAULT before any access
    (addresses come from attr fields: any u64)."""
    if addr == 0 or addr < 0 or addr + n > U64 + 1:
        raise BpfError(14)
