"""BPF_LINK_CREATE (and, with attachments, the link objects).

What bpfshim attaches is what a user-space runtime can serve; every other
attach type fails as the kernel fails when it lacks the feature, with a line
naming it. Loaders probe some of these answers: libbpf's perf-link probe
expects EBADF for target_fd -1, bpftrace's kprobe_multi probe EOPNOTSUPP.
"""
import errno

from . import _native
from .errors import BpfError, unsupported
from .objects import BpfObject, registry

P = _native.proto
U = _native.uapi


def _attach_name(t):
    return ffi_enum("enum bpf_attach_type", t)


def ffi_enum(typ, v):
    return _native.ffi.typeof(typ).elements.get(v, str(v))


def link_create(ctx, attr):
    lc = attr.link_create
    kind, oid, _fl = ctx.conn.fdget(lc.prog_fd)
    if kind != P.SHIM_OBJ_PROG:
        raise BpfError(errno.EINVAL)
    prog = registry.get(kind, oid)
    at = lc.attach_type
    ptype = prog.prog_type
    tracing = (U.BPF_PROG_TYPE_KPROBE, U.BPF_PROG_TYPE_PERF_EVENT, U.BPF_PROG_TYPE_TRACEPOINT)
    if ptype in tracing:
        if at == U.BPF_PERF_EVENT:
            return perf_link_attach(ctx, prog, lc)
        if at in (getattr(U, "BPF_TRACE_KPROBE_MULTI", -1), getattr(U, "BPF_TRACE_KPROBE_SESSION", -1)):
            # As a kernel without CONFIG_KPROBES answers (bpftrace probes for it
            # at every start, so this one is quiet).
            raise BpfError(errno.EOPNOTSUPP)
        if at in (getattr(U, "BPF_TRACE_UPROBE_MULTI", -1), getattr(U, "BPF_TRACE_UPROBE_SESSION", -1)):
            raise unsupported(errno.EOPNOTSUPP, f"attach type {_attach_name(at)} (not yet)")
        raise BpfError(errno.EINVAL)
    raise unsupported(errno.EINVAL, f"link_create for {_native.ffi.typeof('enum bpf_prog_type').elements.get(ptype, ptype)}"
                      f" / {_attach_name(at)}")


def perf_link_attach(ctx, prog, lc):
    """bpf_perf_link_attach(): target_fd must be a perf event."""
    try:
        kind, oid, _fl = ctx.conn.fdget(lc.target_fd)
    except BpfError:
        raise BpfError(errno.EBADF)
    if kind != P.SHIM_OBJ_PERF_EVENT:
        raise BpfError(errno.EBADF)
    ev = registry.get(kind, oid)
    attach = getattr(ev, "attach_prog", None)
    if attach is None:
        # perf_event_set_bpf_prog() on an event that runs no program
        raise BpfError(errno.EINVAL)
    return attach(ctx, prog, lc)


class LinkObject(BpfObject):
    kind = P.SHIM_OBJ_LINK
    memfd_name = "bpf_link"

    def __init__(self, prog, attach_type, target):
        super().__init__()
        self.prog = prog
        self.attach_type = attach_type
        self.target = target
        self.open_fd()
        self.hold_child(prog)
        self.hold_child(target)

    def status(self):
        return {"prog": self.prog.id, "attach_type": _attach_name(self.attach_type)}

    def destroy(self):
        # the kernel's perf link detaches its program from the event when
        # released; the event itself lives on while its fd does
        if self.attach_type == _native.uapi.BPF_PERF_EVENT:
            self.target.detach_prog()
        super().destroy()
