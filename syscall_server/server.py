"""The per-user server: a Unix socket in the runtime directory, one thread
per connected process, requests dispatched to the command table.

Started by the shim on first use (`python -m syscall_server.server
--runtime-dir DIR`), or by `bpfshim server`. It exits after a while with no
connections and no pinned objects.
"""
import argparse
import errno
import os
import socket
import struct
import sys
import threading
import time
import traceback

from . import _native, attach, cmd_btf, cmd_map, dispatch, durable, perf_event, rundir
from .conn import Conn
from .errors import BpfError
from .objects import registry

P = _native.proto
ffi = _native.ffi
IDLE_EXIT_S = 300
SERVER = None


class Ctx:
    """What a handler gets besides the attr: the caller and helpers for the
    parts of the reply every command shares."""

    def __init__(self, conn, cmd, uattr, size):
        self.conn = conn
        self.cmd = cmd
        self.uattr = uattr
        self.size = size
        self.give = []
        self.msgs = []

    def new_fd(self, obj, f_flags=0):
        """Return a new fd for obj to the caller (the handler's return value)."""
        self.give.append((obj, f_flags))
        return ("fd", len(self.give) - 1)

    def say(self, msg):
        self.msgs.append(msg)

    def uattr_field(self, *path):
        return self.uattr + ffi.offsetof("union bpf_attr", *path)

    def put_info_len(self, n):
        self.conn.write(self.uattr_field("info", "info_len"), struct.pack("<I", n))

    def check_uarg_tail_zero(self, uaddr, expected, actual):
        """bpf_check_uarg_tail_zero()"""
        if actual > 4096:
            raise BpfError(errno.E2BIG)
        if actual <= expected:
            return
        if any(self.conn.read(uaddr + expected, actual - expected)):
            raise BpfError(errno.E2BIG)


class Server:
    def __init__(self, runtime_dir):
        self.dir = runtime_dir
        self.path = os.path.join(runtime_dir, "server.sock")
        self.lock = registry.lock
        self.conns = set()
        self.last_active = time.time()

    def listen(self):
        """Listen in the checked runtime directory (reached through its fd:
        the directory checked is the one used)."""
        try:
            dfd = rundir.open_checked(self.dir)
        except rundir.UnsafeRuntimeDir as e:
            sys.exit(str(e))
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            os.unlink("server.sock", dir_fd=dfd)
        except FileNotFoundError:
            pass
        s.bind(f"/proc/self/fd/{dfd}/server.sock")
        os.chmod("server.sock", 0o600, dir_fd=dfd, follow_symlinks=False)
        os.close(dfd)
        s.listen(64)
        self.sock = s

    def serve_forever(self):
        durable.start(self.dir, lambda: self.conns)   # before anything gets an id
        Conn.before_done = self._save
        cmd_btf.register_kernel_btf()
        # the kernel's task_struct layout for bpf_get_current_task() (~0.2 s:
        # not in the way of the first requests; agents wait for the file)
        threading.Thread(target=cmd_btf.publish_task_layout, args=(self.dir,), daemon=True).start()
        attach.table(self.dir)
        threading.Thread(target=self._idle_watch, daemon=True).start()
        while True:
            c, _ = self.sock.accept()
            threading.Thread(target=self._serve_conn, args=(c,), daemon=True).start()

    def _idle_watch(self):
        while True:
            time.sleep(10)
            with self.lock:
                if not self.conns and not os.path.exists(self.path):
                    os._exit(0)    # the runtime directory is gone: nothing can reach its objects
                busy = self.conns or len(registry.pins) > 1
                if busy:
                    self.last_active = time.time()
                elif time.time() - self.last_active > IDLE_EXIT_S:
                    try:
                        os.unlink(self.path)
                    finally:
                        os._exit(0)

    def _serve_conn(self, sock):
        conn = Conn(sock)
        if conn.uid != os.getuid():   # SO_PEERCRED: one server per user
            print(f"bpfshim server: refused a connection of pid {conn.pid}, uid {conn.uid}", flush=True)
            sock.close()
            return
        with self.lock:
            self.conns.add(conn)
        try:
            first = True
            while True:
                m = conn.recv()
                if m is None:
                    break
                self._request(conn, *m)
                if first:
                    first = False
                    with self.lock:    # it said what it holds (SHIM_OP_HOLD comes first)
                        durable.STORE.claimed(conn.pid)
                        self._save()
        except (ConnectionError, OSError) as e:
            if not isinstance(e, (ConnectionError, BrokenPipeError)) and not getattr(e, "errno", 0) in (errno.ECONNRESET, errno.EPIPE):
                traceback.print_exc()
        finally:
            with self.lock:
                self.conns.discard(conn)
                conn.release_all()
                self._save()
                self.last_active = time.time()
            sock.close()

    def _save(self):
        """The registry as a new server would recover it (durable.py), before
        the reply of a request that changed it."""
        try:
            durable.STORE.save(self.conns)
        except Exception:     # never fails a request; the next save tries again
            traceback.print_exc()

    def _request(self, conn, op, a, b, payload, fds):
        with self.lock:
            try:
                with registry.request():
                    self._handle(conn, op, a, b, payload, fds)
            finally:
                self._save()

    def _handle(self, conn, op, a, b, payload, fds):
        if op == P.SHIM_OP_RELEASE:
            conn.release(a, b)
            return
        if op == P.SHIM_OP_MODE:
            conn.mode = a
            return
        if op == P.SHIM_OP_HOLD:
            for i in range(0, len(payload) - 7, 8):
                kind, oid = struct.unpack_from("<II", payload, i)
                obj = registry.get(kind, oid)
                if obj is not None:
                    conn.hold(obj)
            return
        try:
            if op == P.SHIM_OP_BPF:
                uattr = struct.unpack_from("<Q", payload)[0]
                self._bpf(conn, a, uattr, b, payload[8:])
            elif op == P.SHIM_OP_PERF_EVENT_OPEN:
                self._perf_event_open(conn, a, b, payload)
            elif op == P.SHIM_OP_IDENTIFY:
                self._identify(conn, fds)
            elif op == P.SHIM_OP_CTL:
                from . import control
                control.handle(conn, a, b, payload, fds)
            else:
                conn.fail(BpfError(errno.EINVAL, f"unknown request {op}", loud=True))
        finally:
            for fd in fds:
                os.close(fd)

    def _bpf(self, conn, cmd, uattr, size, attr_bytes):
        ctx = Ctx(conn, cmd, uattr, size)
        try:
            ret = dispatch.dispatch(ctx, cmd, attr_bytes)
        except BpfError as e:
            conn.fail(e)
            return
        except ConnectionError:
            raise
        except Exception as e:  # a server bug must not take the server down
            traceback.print_exc()
            why = f"internal error in {dispatch.cmd_name(cmd)}: {e!r}"
            conn.fail(BpfError(errno.EINVAL, why, loud=True))
            return
        ret_fd = -1
        if isinstance(ret, tuple) and ret[0] == "fd":
            ret_fd, ret = ret[1], 0
        conn.done(ret, 0, give=ctx.give, ret_fd=ret_fd, msg="\n".join(ctx.msgs))

    def _perf_event_open(self, conn, pid, cpu_group, payload):
        uattr, flags = struct.unpack_from("<QQ", payload)
        cpu, group_fd = struct.unpack("<ii", struct.pack("<q", cpu_group))
        try:
            obj = perf_event.perf_event_open(conn, uattr, pid, cpu, group_fd, flags)
        except BpfError as e:
            conn.fail(e)
            return
        conn.done(0, give=perf_event.give(obj), ret_fd=0)

    def _identify(self, conn, fds):
        obj = registry.by_fd(fds[0]) if fds else None
        if obj is None:
            conn.fail(BpfError(errno.EBADF))
            return
        conn.done(0, give=[(obj, 0)], ret_fd=0)


def default_runtime_dir():
    return rundir.default()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bpfshim server")
    ap.add_argument("--runtime-dir", default=None)
    args = ap.parse_args(argv)
    global SERVER
    srv = SERVER = Server(args.runtime_dir or default_runtime_dir())
    registry.server = srv   # this module may run as __main__: others find the server here
    srv.listen()
    print(f"bpfshim server pid {os.getpid()} on {srv.path}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
