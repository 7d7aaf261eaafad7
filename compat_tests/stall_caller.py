"""A caller of the bpfshim server that stalls mid-request, for
test_server_lock.py. Run without the preload library, as the server's user:

    python stall_caller.py SOCKET MODE

MODE "answer": a BPF_PROG_LOAD whose first round trip (the server reading
the license or the instructions) is received and never answered.
MODE "replies": tracefs reads whose replies are never read, until the
server can send no more to this caller (its socket's send budget, the
kernel's wmem_default, is full) and requests stay queued behind.
It prints "stalled" once the server is in that state, then waits to be
killed.

    python stall_caller.py SOCKET lookup MAP_ID

A BPF_PROG_LOAD of two ld_imm64 of map fds, both answered as map MAP_ID:
it stalls in the second lookup (prints "stalled"), answers it when a line
comes on stdin, prints the load's result ("ok" or the errno name) and
waits to be killed (holding the program)."""
import errno
import fcntl
import os
import socket
import struct
import sys
import termios
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from syscall_server import _native  # noqa: E402
from syscall_server.conn import HDR, META  # noqa: E402

P = _native.proto
U = _native.uapi


def unsent(s):
    """Bytes this socket sent that the server has not received yet (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def stall_in_round_trip(s):
    attr = _native.ffi.new("union bpf_attr *")
    attr.prog_type = U.BPF_PROG_TYPE_TRACEPOINT
    attr.insn_cnt = 2
    attr.insns = 0x10000          # never read: the server's request for it is not answered
    attr.license = 0x20000
    raw = bytes(_native.ffi.buffer(attr, 128))
    s.send(HDR.pack(P.SHIM_OP_BPF, 8 + len(raw), U.BPF_PROG_LOAD, len(raw)) + struct.pack("<Q", attr.insns) + raw)
    op = HDR.unpack_from(s.recv(P.SHIM_MSG_MAX + HDR.size))[0]
    if op not in (P.SHIM_OP_READ, P.SHIM_OP_READSTR, P.SHIM_OP_FDGET):
        sys.exit(f"stall_caller: the server answered {op}, not a read of this caller's memory")


def stall_unread_replies(s):
    path = b"available_events\0"
    req = HDR.pack(P.SHIM_OP_CTL, len(path), P.SHIM_CTL_TRACEFS_READ, 0) + path
    s.send(req)
    reply = len(s.recv(P.SHIM_MSG_MAX + HDR.size))
    with open("/proc/sys/net/core/wmem_default") as f:
        budget = int(f.read())
    # more replies than the budget holds, and two requests besides
    for _ in range(budget // reply + 3):
        s.send(req)
    # the server takes no more requests once its send blocks: the last stays
    # unsent (before that, requests are taken as fast as the server answers)
    seen = []
    while len(seen) < 20 or len(set(seen[-20:])) != 1 or not seen[-1]:
        seen.append(unsent(s))
        time.sleep(0.01)


def stall_in_lookup(s, map_id):
    """The program's pages as this caller's memory; the server's reads of
    them answered, its fd lookups answered as map_id."""
    lddw = struct.pack("<BBhi", 0x18, 0x11, 0, 100) + bytes(8)    # r1 = map fd 100 (BPF_PSEUDO_MAP_FD)
    mem = {0x10000: lddw + lddw.replace(b"\x64", b"\x65", 1) + bytes.fromhex("b700000000000000" "9500000000000000"),
           0x20000: b"GPL\0"}
    attr = _native.ffi.new("union bpf_attr *")
    attr.prog_type = U.BPF_PROG_TYPE_TRACEPOINT
    attr.insn_cnt = len(mem[0x10000]) // 8
    attr.insns, attr.license = 0x10000, 0x20000
    raw = bytes(_native.ffi.buffer(attr, 128))
    s.send(HDR.pack(P.SHIM_OP_BPF, 8 + len(raw), U.BPF_PROG_LOAD, len(raw)) + struct.pack("<Q", 0x30000) + raw)
    lookups = 0
    while True:
        data = s.recv(P.SHIM_MSG_MAX + HDR.size)
        op, _ln, a, b = HDR.unpack_from(data)
        if op == P.SHIM_OP_DONE:
            print("ok" if a >= 0 else errno.errorcode[b], flush=True)
            return
        if op in (P.SHIM_OP_READ, P.SHIM_OP_READSTR):
            base = max(k for k in mem if k <= a)
            out = mem[base][a - base:a - base + b]
            reply = out.split(b"\0")[0] if op == P.SHIM_OP_READSTR else out
        elif op == P.SHIM_OP_WRITE:
            reply = b""
        elif op == P.SHIM_OP_FDGET:
            lookups += 1
            if lookups == 2:
                print("stalled", flush=True)
                sys.stdin.readline()
            reply = META.pack(P.SHIM_OBJ_MAP, map_id, 0, 0, 0)
        else:
            sys.exit(f"stall_caller: unexpected op {op}")
        s.send(HDR.pack(P.SHIM_OP_MEM, len(reply), 0, 0) + reply)


def main():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(sys.argv[1])
    if sys.argv[2] == "lookup":
        stall_in_lookup(s, int(sys.argv[3]))
    else:
        {"answer": stall_in_round_trip, "replies": stall_unread_replies}[sys.argv[2]](s)
        print("stalled", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
