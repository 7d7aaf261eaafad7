"""A server that is not the user's own, for the security tests: it listens
where a bpfshim server would (the shim protocol of libbpf_shim/proto.h) and,
on every request, tries to read and write the caller's memory outside what
the request names, then ends it. It writes what it got as JSON lines to LOG.

    python fake_server.py SOCKET_PATH LOG [SECRET_ADDR_FILE]

Run by the tests without the preload library."""
import array
import json
import os
import socket
import struct
import sys

HDR = struct.Struct("<IIqq")
OP_BPF, OP_READ, OP_READSTR, OP_WRITE, OP_DONE, OP_FDGET = 1, 16, 17, 18, 19, 20
OP_MEM = 32


def main():
    path, log = sys.argv[1], sys.argv[2]
    secret_file = sys.argv[3] if len(sys.argv) > 3 else None
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(path)
    os.chmod(path, 0o777)
    s.listen(8)
    out = open(log, "a", buffering=1)
    print("ready", file=out)
    while True:
        c, _ = s.accept()
        out.write(json.dumps({"event": "connect"}) + "\n")
        try:
            serve(c, out, secret_file)
        except OSError as e:
            out.write(json.dumps({"event": "error", "what": repr(e)}) + "\n")
        c.close()


def ask(c, op, a, b=0, payload=b""):
    c.send(HDR.pack(op, len(payload), a, b) + payload)
    data, anc, _f, _a = c.recvmsg(70000, socket.CMSG_SPACE(16 * 4))
    fds = []
    for level, typ, cdata in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.extend(array.array("i", cdata[:len(cdata) - len(cdata) % 4]))
    rop, ln, ra, _rb = HDR.unpack_from(data)
    body = data[HDR.size:HDR.size + ln]
    for fd in fds:
        os.close(fd)
    return {"op": op, "addr": a, "ok": rop == OP_MEM, "errno": 0 if rop == OP_MEM else ra,
            "data": body.hex(), "fds": len(fds)}


def serve(c, out, secret_file):
    while True:
        data = c.recv(70000)
        if not data:
            return
        op, ln, a, b = HDR.unpack_from(data)
        if op != OP_BPF:
            continue
        payload = data[HDR.size:HDR.size + ln]
        uattr = struct.unpack_from("<Q", payload)[0]
        size = b
        tries = [
            ("attr", OP_READ, uattr, size),                 # named by the request
            ("past_attr", OP_READ, uattr + size, 64),       # the stack beyond it
            ("below_attr", OP_READ, uattr - 4096, 4096),
            ("str_at_past", OP_READSTR, uattr + size, 256),
            ("write_past", OP_WRITE, uattr + size, b"\xcc" * 8),
            ("fd0", OP_FDGET, 0, 0),
            ("fd2", OP_FDGET, 2, 0),
        ]
        if secret_file and os.path.exists(secret_file):
            addr = int(open(secret_file).read().split()[0], 0)
            tries += [("secret", OP_READ, addr, 16), ("secret_str", OP_READSTR, addr, 64),
                      ("secret_write", OP_WRITE, addr, b"PWNED")]
        for name, rop, addr, arg in tries:
            if rop == OP_WRITE:
                r = ask(c, rop, addr, 0, arg)
            else:
                r = ask(c, rop, addr, arg)
            r["name"] = name
            out.write(json.dumps(r) + "\n")
        c.send(HDR.pack(OP_DONE, 0, -1, 1))     # EPERM


if __name__ == "__main__":
    main()
