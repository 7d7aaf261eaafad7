"""One error type for every handler: the kernel's errno plus a message.

Handlers raise BpfError(errno.EINVAL, "why"); the server turns it into the
reply (ret -1, errno) and, when `loud` is set, sends the message to the
caller's stderr — that is how an unsupported feature fails loudly.
"""
import errno as _errno

ENOTSUPP = 524  # kernel-internal errno that bpf() does return to user space


class BpfError(OSError):
    def __init__(self, err, msg="", loud=False):
        super().__init__(err, msg or _errno.errorcode.get(err, str(err)))
        self.loud = loud


def unsupported(err, what):
    """An unsupported feature: the kernel's errno and a line naming it."""
    return BpfError(err, f"unsupported: {what}", loud=True)
