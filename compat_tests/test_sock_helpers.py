"""Socket helpers on the kernel and through bpfshim (interpreter, AOT, and
as uid 65534): bpf_sk_lookup_tcp/udp, bpf_skc_lookup_tcp, bpf_sk_release,
bpf_sk_fullsock, bpf_tcp_sock, bpf_get_listener_sock and
bpf_get_cgroup_classid in tc programs under BPF_PROG_TEST_RUN.

The test opens real sockets (a TCP listener, a connection to it that has
carried 100 bytes, a bound UDP socket, an IPv6 listener); each case looks
one up by its tuple (or a tuple nothing has) and returns one field of
struct bpf_sock / bpf_tcp_sock, or a marker for NULL. Compared: the load
errno and the return value of every case, kernel against bpfshim.

Beyond the comparison (asserted directly, the kernel's answer there comes
from its own internals): bpf_get_socket_cookie of a test-run packet. The
kernel's test run gives the skb a socket of its own, with a fresh cookie;
bpfshim's test-run packet has no socket, and its cookie is 0. And
bpf_sock->rx_queue_mapping: the kernel records the receive queue of an
skb that made or fed the socket (sk_rx_queue_set) when the skb has one,
which sock_diag does not report; over loopback the kernel gives -1 (none)
in most runs here and 0 in some, bpfshim -1 always.

This file run as a script (`python3 test_sock_helpers.py run < cases.json`)
is the child that loads and runs the cases (stdlib only: /usr/bin/python3
runs it as uid 65534).
"""
import json
import os
import socket
import struct
import subprocess
import sys
import ctypes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import progs_gen as G  # noqa: E402
from progs_gen import LDX, ST, STX, ALU64, JMP, MEM, DW, W, MOV, ADD, K, X, CALL, EXIT, JNE  # noqa: E402

SCHED_CLS = 3
F = dict(get_cgroup_classid=17, get_socket_cookie=46, sk_lookup_tcp=84, sk_lookup_udp=85, sk_release=86,
         sk_fullsock=95, tcp_sock=96, get_listener_sock=98, skc_lookup_tcp=99)
# include/uapi/linux/bpf.h: struct bpf_sock, struct bpf_tcp_sock (offset, size)
SOCK = dict(bound_dev_if=0, family=4, type=8, protocol=12, mark=16, priority=20, src_ip4=24, src_ip6=28,
            src_port=44, dst_port=48, dst_ip4=52, dst_ip6=56, state=72, rx_queue_mapping=76)
TCP_SOCK = dict(snd_cwnd=(0, 4), rtt_min=(8, 4), snd_ssthresh=(12, 4), mss_cache=(28, 4), packets_out=(44, 4),
                retrans_out=(48, 4), total_retrans=(52, 4), segs_in=(56, 4), data_segs_in=(60, 4),
                data_segs_out=(68, 4), lost_out=(72, 4), sacked_out=(76, 4), bytes_received=(80, 8),
                bytes_acked=(88, 8))
NULL, NO_VIEW = -2, -3
CURRENT_NETNS = -1     # BPF_F_CURRENT_NETNS
PACKET = bytes(12) + b"\x08\x00" + bytes(50)


def tuple4(saddr, sport, daddr, dport):
    """struct bpf_sock_tuple.ipv4: the packet's source and destination."""
    return socket.inet_aton(saddr) + socket.inet_aton(daddr) + struct.pack(">HH", sport, dport)


def tuple6(saddr, sport, daddr, dport):
    return socket.inet_pton(socket.AF_INET6, saddr) + socket.inet_pton(socket.AF_INET6, daddr) + \
        struct.pack(">HH", sport, dport)


def lookup_prog(helper, tup, size=None, netns=CURRENT_NETNS, flags=0, view=None, field=("sock", 4)):
    """helper(ctx, &tuple, size, netns, flags); NULL gives NULL; else
    field of the socket (or of view(sk): "tcp_sock", "sk_fullsock",
    "get_listener_sock", NO_VIEW when it is NULL), then bpf_sk_release."""
    p = G.Asm()
    p.emit(ALU64 | MOV | X, 6, 1)
    tb = tup + bytes(-len(tup) % 8)
    for i in range(0, len(tb), 8):
        p.ld64(1, struct.unpack_from("<Q", tb, i)[0])
        p.emit(STX | MEM | DW, 10, 1, -48 + i)
    p.emit(ALU64 | MOV | X, 1, 6)
    p.emit(ALU64 | MOV | X, 2, 10)
    p.emit(ALU64 | ADD | K, 2, 0, 0, -48)
    p.emit(ALU64 | MOV | K, 3, 0, 0, len(tup) if size is None else size)
    p.ld64(4, netns)
    p.emit(ALU64 | MOV | K, 5, 0, 0, flags)
    p.emit(JMP | CALL, 0, 0, 0, F[helper])
    p.jmp(JMP | JNE | K, 0, 0, 0, "found")
    p.emit(ALU64 | MOV | K, 0, 0, 0, NULL)
    p.emit(JMP | EXIT)
    p.label("found")
    p.emit(ALU64 | MOV | X, 7, 0)
    p.emit(ALU64 | MOV | X, 8, 0)
    if view:
        p.emit(ALU64 | MOV | X, 1, 7)
        p.emit(JMP | CALL, 0, 0, 0, F[view])
        p.emit(ALU64 | MOV | K, 9, 0, 0, NO_VIEW)
        p.jmp(JMP | JNE | K, 0, 0, 0, "view")
        p.jmp(JMP | 0x00, 0, 0, 0, "release")      # JA
        p.label("view")
        p.emit(ALU64 | MOV | X, 8, 0)
    off, size = field[1] if isinstance(field[1], tuple) else (field[1], 4)
    p.emit(LDX | MEM | (DW if size == 8 else W), 9, 8, off)
    p.label("release")
    p.emit(ALU64 | MOV | X, 1, 7)
    p.emit(JMP | CALL, 0, 0, 0, F["sk_release"])
    p.emit(ALU64 | MOV | X, 0, 9)
    p.emit(JMP | EXIT)
    return p.assemble().hex()


def ctx_helper_prog(helper):
    p = G.Asm()
    p.emit(JMP | CALL, 0, 0, 0, F[helper])
    p.emit(JMP | EXIT)
    return p.assemble().hex()


def cases(env):
    """The cases for the sockets of env (ports, what exists)."""
    lo = "127.0.0.1"
    L, C, U, N = env["listen_port"], env["client_port"], env["udp_port"], env["free_port"]
    listener = tuple4(lo, 40000, lo, L)           # a SYN to the listener: no connection of that peer
    server_end = tuple4(lo, C, lo, L)             # the client's packet to the server: the accepted socket
    client_end = tuple4(lo, L, lo, C)             # the server's packet to the client
    udp = tuple4(lo, 40001, lo, U)
    c = {}
    for name, tup in (("listener", listener), ("server_end", server_end), ("client_end", client_end)):
        for f, off in SOCK.items():
            c[f"tcp_{name}_{f}"] = lookup_prog("sk_lookup_tcp", tup, field=("sock", off))
        c[f"skc_{name}_state"] = lookup_prog("skc_lookup_tcp", tup, field=("sock", SOCK["state"]))
        c[f"fullsock_{name}_type"] = lookup_prog("sk_lookup_tcp", tup, view="sk_fullsock",
                                                 field=("sock", SOCK["type"]))
        c[f"listener_sock_{name}_state"] = lookup_prog("sk_lookup_tcp", tup, view="get_listener_sock",
                                                       field=("sock", SOCK["state"]))
    for f, (off, size) in TCP_SOCK.items():
        c[f"tcp_sock_server_end_{f}"] = lookup_prog("sk_lookup_tcp", server_end, view="tcp_sock",
                                                    field=("tcp_sock", (off, size)))
        c[f"tcp_sock_listener_{f}"] = lookup_prog("sk_lookup_tcp", listener, view="tcp_sock",
                                                  field=("tcp_sock", (off, size)))
    for f in ("family", "type", "protocol", "src_ip4", "src_port", "dst_port", "dst_ip4", "state"):
        c[f"udp_{f}"] = lookup_prog("sk_lookup_udp", udp, field=("sock", SOCK[f]))
    c["udp_tcp_sock"] = lookup_prog("sk_lookup_udp", udp, view="tcp_sock", field=("tcp_sock", (0, 4)))
    c["udp_as_tcp"] = lookup_prog("sk_lookup_tcp", udp, field=("sock", 4))
    c["tcp_as_udp"] = lookup_prog("sk_lookup_udp", listener, field=("sock", 4))
    c["nothing_tcp"] = lookup_prog("sk_lookup_tcp", tuple4(lo, 40000, lo, N))
    c["nothing_udp"] = lookup_prog("sk_lookup_udp", tuple4(lo, 40000, lo, N))
    c["nothing_skc"] = lookup_prog("skc_lookup_tcp", tuple4(lo, 40000, lo, N))
    c["bad_tuple_size"] = lookup_prog("sk_lookup_tcp", listener, size=8)
    c["flags_set"] = lookup_prog("sk_lookup_tcp", listener, flags=1)
    c["netns_beyond_s32"] = lookup_prog("sk_lookup_tcp", listener, netns=1 << 32)
    if env.get("listen6_port"):
        t6 = tuple6("::1", 40000, "::1", env["listen6_port"])
        for f in ("family", "src_port", "state", "src_ip6", "dst_port"):
            c[f"tcp6_listener_{f}"] = lookup_prog("sk_lookup_tcp", t6, field=("sock", SOCK[f]))
        c["tcp6_listener_src_ip6_3"] = lookup_prog("sk_lookup_tcp", t6, field=("sock", SOCK["src_ip6"] + 12))
    c["cgroup_classid"] = ctx_helper_prog("get_cgroup_classid")
    c["socket_cookie"] = ctx_helper_prog("get_socket_cookie")
    return c


# ---------------------------------------------------------------- runner (child process)
def run_one(insns):
    fd, err, log = G.prog_load(SCHED_CLS, bytes.fromhex(insns))
    if fd < 0:
        return {"load_errno": err, "log": log.strip().splitlines()[-1:] if log else []}
    try:
        a = ctypes.create_string_buffer(80)
        ib = ctypes.create_string_buffer(PACKET, len(PACKET))
        struct.pack_into("<IIIIQQ", a, 0, fd, 0, len(PACKET), 0, G.addr(ib), 0)
        ret, err = G.bpf(G.BPF_PROG_TEST_RUN, a)
        return {"load_errno": 0, "test_errno": err, "retval": struct.unpack_from("<i", a, 4)[0]}
    finally:
        os.close(fd)


def main(argv):
    if argv[1:2] == ["run"]:
        out = {}
        for name, insns in json.load(sys.stdin).items():
            try:
                out[name] = run_one(insns)
            except Exception as e:      # a harness problem must not hide the other cases
                out[name] = {"exception": repr(e)}
        print(json.dumps(out), flush=True)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

import pytest  # noqa: E402

from compat_tests.env import kernel_bpf_reason, unpriv_reason  # noqa: E402
from compat_tests.unpriv import Runtime  # noqa: E402

BACKENDS = ["interp", "aot", "interp@65534"]


@pytest.fixture(scope="module")
def sockets():
    """The sockets the cases look up, open for the whole module."""
    keep = []

    def sock(*a):
        s = socket.socket(*a)
        keep.append(s)
        return s
    lst = sock(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    cli = sock(socket.AF_INET, socket.SOCK_STREAM)
    cli.connect(lst.getsockname())
    srv, _ = lst.accept()
    keep.append(srv)
    cli.sendall(b"x" * 100)
    got = b""
    while len(got) < 100:
        got += srv.recv(100 - len(got))
    udp = sock(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    free = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    free.bind(("127.0.0.1", 0))
    env = {"listen_port": lst.getsockname()[1], "client_port": cli.getsockname()[1],
           "udp_port": udp.getsockname()[1], "free_port": free.getsockname()[1]}
    free.close()
    try:
        l6 = sock(socket.AF_INET6, socket.SOCK_STREAM)
        l6.bind(("::1", 0))
        l6.listen(1)
        env["listen6_port"] = l6.getsockname()[1]
    except OSError:
        pass
    yield {"env": env, "cases": cases(env), "results": {}}
    for s in keep:
        s.close()


def _side(sockets, backend):
    res = sockets["results"]
    if backend in res:
        return res[backend]
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    me = os.path.abspath(__file__)
    rt = None
    if backend is None:
        cmd = [sys.executable, me, "run"]
    else:
        engine, _, who = backend.partition("@")
        rt = Runtime(unpriv=bool(who))
        env = rt.env(env)
        extra = [("BPFSHIM_ENGINE", engine)]
        if who:
            extra += [("BPFSHIM_PYTHON", os.path.join(G.ROOT, ".venv", "bin", "python")), ("HOME", "/tmp")]
        cmd = rt.cmd(["/usr/bin/python3" if who else sys.executable, me, "run"], extra)
    try:
        p = subprocess.run(cmd, input=json.dumps(sockets["cases"]).encode(), capture_output=True, env=env,
                           timeout=120)
        lines = [x for x in p.stdout.decode(errors="replace").splitlines() if x.startswith("{")]
        assert lines, f"runner failed ({p.returncode}): {p.stderr.decode(errors='replace')[-3000:]}"
        res[backend] = json.loads(lines[-1])
    finally:
        if rt:
            rt.close()
    return res[backend]


def _need(backend):
    why = kernel_bpf_reason() or ("@" in (backend or "") and unpriv_reason())
    if why:
        pytest.skip(why)


def _compared(name):
    return name != "socket_cookie" and not name.endswith("_rx_queue_mapping")


def test_kernel_runs_the_cases(sockets):
    """Every case loads and runs on the kernel, and the lookups find the
    sockets they name (the comparison would say little otherwise)."""
    _need(None)
    k = _side(sockets, None)
    bad = {n: r for n, r in k.items() if r.get("load_errno") or r.get("test_errno")}
    assert not bad, bad
    assert k["tcp_listener_src_port"]["retval"] == sockets["env"]["listen_port"]
    assert k["nothing_tcp"]["retval"] == NULL


@pytest.mark.parametrize("backend", BACKENDS)
def test_sock_helpers_match_kernel(sockets, backend):
    _need(backend)
    want = _side(sockets, None)
    got = _side(sockets, backend)
    diff = {n: (want[n], got.get(n)) for n in want if _compared(n) and got.get(n) != want[n]}
    assert not diff, "\n".join(f"{n}: kernel {k} bpfshim {s}" for n, (k, s) in sorted(diff.items()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_rx_queue_mapping(sockets, backend):
    """Asserted directly (see the module doc): a queue or -1 on the kernel,
    -1 through bpfshim."""
    _need(backend)
    names = [n for n in _side(sockets, None) if n.endswith("_rx_queue_mapping")]
    assert names
    for n in names:
        assert -1 <= _side(sockets, None)[n]["retval"] < 0xffff, n
        assert _side(sockets, backend)[n] == {"load_errno": 0, "test_errno": 0, "retval": -1}, n


@pytest.mark.parametrize("backend", BACKENDS)
def test_socket_cookie_of_test_run_packet(sockets, backend):
    """Asserted directly (bpfshim's own answer, see the module doc): the
    kernel's test-run skb has a socket with a cookie, bpfshim's has none."""
    _need(backend)
    assert _side(sockets, None)["socket_cookie"]["retval"] != 0
    assert _side(sockets, backend)["socket_cookie"] == {"load_errno": 0, "test_errno": 0, "retval": 0}
