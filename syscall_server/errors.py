"""One error type for every handler: the kernel's errno plus a message.

Handlers raise BpfError(errno.EINVAL, "why"); the server turns it into the
reply (conn.py `fail`: ret -1, errno) and, when the raiser set `loud`, sends
the message to the caller's stderr — that is how an unsupported feature
fails loudly. Whether a line is printed is never read from the message.
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
