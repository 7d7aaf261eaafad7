"""The `bpfshim` command.

  bpfshim lib                     path of libbpfshim.so (LD_PRELOAD=$(bpfshim lib) tool)
  bpfshim run -- CMD ...          run CMD with the library preloaded
  bpfshim run --kernel -- CMD     hybrid mode: the kernel's maps, programs and probes; needs kernel eBPF
  bpfshim server [--foreground]   start the per-user server (normally automatic)
  bpfshim status [--json]         live maps, programs, links, BTF; syscall sites per process
  bpfshim trace-pipe [--nonblock] bpf_trace_printk output, as /sys/kernel/tracing/trace_pipe
  bpfshim attach PID              run the agent in a process started without the library
  bpfshim conformance-plugin      bpf_conformance plugin protocol
"""
import argparse
import errno
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

from . import _native, rundir


def lib_path():
    p = _native.SHIM_LIB
    if not p.exists():
        sys.exit(f"bpfshim: {p} is missing; run `make` (or `pip install -e .`) in {p.parents[2]}")
    return str(p)


def runtime_dir():
    from .server import default_runtime_dir
    return default_runtime_dir()


def child_env(extra=None):
    env = dict(os.environ)
    pre = env.get("LD_PRELOAD", "")
    lp = lib_path()
    if lp not in pre.split(":"):
        env["LD_PRELOAD"] = f"{lp}:{pre}" if pre else lp
    env.setdefault("BPFSHIM_PYTHON", sys.executable)
    if extra:
        env.update(extra)
    return env


def cmd_run(args):
    if not args.cmd:
        sys.exit("bpfshim run: no command (bpfshim run -- CMD ...)")
    cmd = args.cmd[1:] if args.cmd[0] == "--" else args.cmd
    # The server runs before the command does: the command's processes
    # connect at start (agent/uprobe.c open_table) and their children at
    # fork, so a process that later changes its user (nginx's workers) still
    # reaches it when a tracer comes.
    connect_server().close()
    # hybrid mode (libbpf_shim/hybrid.c): the command's first process checks
    # that the caller has kernel eBPF before its main() and fails at once if
    # not; without --kernel the command runs in user space whatever the
    # environment said
    env = child_env()
    env.pop("BPFSHIM_KERNEL_CHECKED", None)
    env.pop("BPFSHIM_KERNEL", None)
    if args.kernel:
        env["BPFSHIM_KERNEL"] = "1"
    os.execvpe(cmd[0], cmd, env)


def cmd_server(args):
    from . import server
    if args.foreground:
        server.main(["--runtime-dir", runtime_dir()])
        return
    # Any request starts it; a status request is the cheapest one.
    request_status()
    print(f"bpfshim server running in {runtime_dir()}")


def connect_server():
    """A connection to the server, started through the shim if needed."""
    for attempt in range(2):
        try:
            s = rundir.connect(runtime_dir())
            break
        except rundir.UnsafeRuntimeDir as e:
            sys.exit(str(e))
        except OSError:
            if attempt:
                raise
            # start it the way loaders do: a process with the shim preloaded
            subprocess.run([sys.executable, "-c", "import ctypes; ctypes.CDLL(None).syscall(321, 99, 0, 0)"],
                           env=child_env(), stderr=subprocess.DEVNULL, check=False)
    return s


def request_status():
    """Ask the server (starting it through the shim if needed) for its objects."""
    P = _native.proto
    s = connect_server()
    s.send(struct.pack("<IIqq", P.SHIM_OP_CTL, 0, P.SHIM_CTL_STATUS, 0))
    data = s.recv(1 << 17)
    _op, _ln, _a, _b = struct.unpack_from("<IIqq", data)
    nfds, msg_len, _rf, _p = struct.unpack_from("<IIiI", data, 24)
    body = data[24 + 16 + 24 * nfds:][:msg_len]
    s.close()
    return json.loads(body)


# agent/syscall/syscall_site.h struct syscall_site_stats: magic, pid, start_time,
# rewritten, trapping, traps, events
SITE_STATS = struct.Struct("<IIQQQQQ")
SITE_STATS_MAGIC = 0x53595353


def _start_time(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _site_counts(rt):
    out = {}
    for name in os.listdir(rt) if os.path.isdir(rt) else ():
        if not name.startswith("syscall_sites."):
            continue
        path = os.path.join(rt, name)
        try:
            with open(path, "rb") as f:
                magic, pid, start, *counts = SITE_STATS.unpack(f.read(SITE_STATS.size))
        except (OSError, struct.error):
            continue
        if magic != SITE_STATS_MAGIC or _start_time(pid) != start:
            try:
                os.unlink(path)       # the process is gone
            except OSError:
                pass
            continue
        out[pid] = counts
    return out


def syscall_sites(rt, interval=0.5):
    """Per live process with the agent: its syscall sites rewritten and left
    trapping, and per second over `interval`: syscalls that trapped, traced
    syscalls through rewritten sites."""
    before = _site_counts(rt)
    if not before:
        return []
    time.sleep(interval)
    rows = []
    for pid, (rewritten, trapping, traps, events) in sorted(_site_counts(rt).items()):
        old = before.get(pid, (0, 0, traps, events))
        rows.append({"pid": pid, "rewritten": rewritten, "trapping": trapping,
                     "traps_per_s": round((traps - old[2]) / interval), "events_per_s": round((events - old[3]) / interval)})
    return rows


def cmd_status(args):
    st = request_status()
    st["syscall_sites"] = syscall_sites(runtime_dir())
    if args.json:
        print(json.dumps(st, indent=2))
        return
    print(f"{'id':>5}  {'type':<28} {'name':<16} {'key':>5} {'value':>6} {'entries':>8}  pins / pids")
    for m in st["maps"]:
        print(f"{m['id']:>5}  {m['type']:<28} {m['name']:<16} {m['key_size']:>5} {m['value_size']:>6} "
              f"{m['max_entries']:>8}  {','.join(m['pins']) or '-'} / {','.join(map(str, m['pids'])) or '-'}"
              + ("  (recovered)" if m.get("recovered") else ""))
    for pr in st.get("processes", []):
        print(f"process {pr['pid']} ({pr['comm']}): {pr['mode']}" + (" (hybrid: the kernel's objects)" if pr["mode"] == "kernel" else ""))
    for kind in ("progs", "links"):
        for o in st.get(kind, []):
            print(f"{kind[:-1]} {o['id']}: " + ", ".join(f"{k}={v}" for k, v in o.items() if k != "id"))
    for r in st["syscall_sites"]:
        print(f"syscall sites pid {r['pid']}: rewritten={r['rewritten']} trapping={r['trapping']} "
              f"traps/s={r['traps_per_s']} traced/s={r['events_per_s']}")


def attach_fail(pid, err, what=None):
    sys.exit(f"bpfshim attach: pid {pid}: {what or os.strerror(err)}")


def proc_uid(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise ProcessLookupError(pid)


def maps_agent(pid, lib):
    """Whether the process maps libbpfshim.so (preloaded or attached)."""
    with open(f"/proc/{pid}/maps") as f:
        return any(line.rstrip().endswith(lib) for line in f)


def cmd_attach(args):
    """Load the agent into a running process with frida; the process then
    follows the caller's server (its attach table) like one started with the
    library preloaded. The agent runs as the process's user and reaches the
    caller's runtime directory: both must be the same user."""
    pid, lib = args.pid, os.path.realpath(lib_path())
    try:
        os.kill(pid, 0)
        uid = proc_uid(pid)
        has = maps_agent(pid, lib)
    except ProcessLookupError:
        attach_fail(pid, errno.ESRCH)
    except PermissionError:
        attach_fail(pid, errno.EPERM, f"cannot ptrace: {os.strerror(errno.EPERM)}")
    if uid != os.getuid():
        attach_fail(pid, errno.EPERM, f"runs as uid {uid}: attach as that user (the agent joins the caller's server)")
    if has:
        attach_fail(pid, errno.EEXIST, f"already runs the agent ({lib} is mapped)")
    request_status()                      # the server exists before the agent asks it anything
    import frida
    dev = frida.get_local_device()
    gone, cv = set(), threading.Condition()

    def uninjected(i):
        with cv:
            gone.add(i)
            cv.notify_all()

    dev.on("uninjected", uninjected)
    try:
        iid = dev.inject_library_file(pid, str(_native.BOOT_LIB), "bpfshim_boot",
                                      f"{lib}\n{os.path.abspath(runtime_dir())}")
    except frida.PermissionDeniedError:
        attach_fail(pid, errno.EPERM, f"cannot ptrace: {os.strerror(errno.EPERM)}")
    except (frida.ProcessNotFoundError, frida.TransportError, frida.ProcessNotRespondingError) as e:
        if not os.path.exists(f"/proc/{pid}"):
            attach_fail(pid, errno.ESRCH, "exited during attach")
        attach_fail(pid, errno.EIO, f"injection failed: {e}")
    # bpfshim_boot() returns (and its library is unloaded) once the agent runs;
    # the event may come before inject_library_file() returns
    with cv:
        cv.wait_for(lambda: iid in gone, 10)
    try:
        ok = maps_agent(pid, lib)
    except OSError:
        attach_fail(pid, errno.ESRCH, "exited during attach")
    if not ok:
        attach_fail(pid, errno.EIO, "the agent did not load (see the process's stderr)")
    print(f"bpfshim: agent attached to pid {pid} (server in {runtime_dir()})")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "conformance-plugin":
        from . import conformance
        sys.exit(conformance.main(argv[1:]))
    ap = argparse.ArgumentParser(prog="bpfshim", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("lib", help="print the path of libbpfshim.so")
    r = sub.add_parser("run", help="run a command with the library preloaded")
    r.add_argument("--kernel", action="store_true",
                   help="hybrid mode: objects and non-uprobe attachments are the kernel's (root or CAP_BPF+CAP_PERFMON)")
    r.add_argument("cmd", nargs=argparse.REMAINDER)
    s = sub.add_parser("server", help="start the per-user server")
    s.add_argument("--foreground", action="store_true")
    st = sub.add_parser("status", help="list live objects")
    st.add_argument("--json", action="store_true")
    tp = sub.add_parser("trace-pipe", help="print bpf_trace_printk output (consumes it)")
    tp.add_argument("--nonblock", action="store_true", help="print what is there and exit")
    at = sub.add_parser("attach", help="load the agent into a running process")
    at.add_argument("pid", type=int)
    sub.add_parser("conformance-plugin", help="bpf_conformance plugin (program hex on stdin)")
    args = ap.parse_args(argv)
    if args.what == "lib":
        print(lib_path())
    elif args.what == "run":
        cmd_run(args)
    elif args.what == "server":
        cmd_server(args)
    elif args.what == "status":
        cmd_status(args)
    elif args.what == "trace-pipe":
        from . import trace_pipe
        try:
            sys.exit(trace_pipe.run(runtime_dir(), follow=not args.nonblock))
        except KeyboardInterrupt:
            sys.exit(0)
    elif args.what == "attach":
        cmd_attach(args)


if __name__ == "__main__":
    main()
