"""The runtime directory, as libbpf_shim/rundir.c chooses and checks it:
$BPFSHIM_RUNTIME_DIR, $XDG_RUNTIME_DIR/bpfshim or ${TMPDIR:-/tmp}/bpfshim-$UID,
used only when it is a directory of this uid, not a symlink, with no group
or other permission bits (checked on the opened directory)."""
import os
import socket
import struct


class UnsafeRuntimeDir(Exception):
    pass


def default():
    e = os.environ.get("BPFSHIM_RUNTIME_DIR")
    if e:
        return e
    x = os.environ.get("XDG_RUNTIME_DIR")
    if x and os.access(x, os.W_OK):
        return os.path.join(x, "bpfshim")
    return os.path.join(os.environ.get("TMPDIR") or "/tmp", f"bpfshim-{os.getuid()}")


def open_checked(path, create=True):
    """An O_DIRECTORY fd of `path` once it passes the checks; else
    UnsafeRuntimeDir with the line to print."""
    fix = "remove it, or set BPFSHIM_RUNTIME_DIR to a directory of your own"
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (40, 20):    # ELOOP, ENOTDIR
            raise UnsafeRuntimeDir(f"bpfshim: refusing runtime directory {path}: "
                                   f"{'it is a symlink' if e.errno == 40 else 'not a directory'}: {fix}")
        raise
    st = os.fstat(fd)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        os.close(fd)
        why = "not yours" if st.st_uid != os.getuid() else "others have access to it"
        raise UnsafeRuntimeDir(f"bpfshim: refusing runtime directory {path}: {why} (owner uid {st.st_uid}, "
                               f"mode {st.st_mode & 0o7777:04o}; it must be owned by uid {os.getuid()}, "
                               f"mode 0700, not a symlink): {fix}")
    return fd


def peer_uid(sock):
    return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]


def connect(path):
    """A connection to the server of the checked directory `path`, which
    must run as this uid."""
    dfd = open_checked(path, create=False)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(f"/proc/self/fd/{dfd}/server.sock")
    finally:
        os.close(dfd)
    if peer_uid(s) != os.getuid():
        s.close()
        raise UnsafeRuntimeDir(f"bpfshim: refusing the server in {path}: it does not run as uid {os.getuid()}")
    return s
