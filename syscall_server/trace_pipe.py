"""Reader of the trace pipe (agent/trace_ring.h): what `bpfshim trace-pipe`
prints. Reading consumes, as reading the kernel's trace_pipe does; lines
overwritten before they were read are skipped."""
import mmap
import os
import struct
import sys
import time

RING_NAME = "trace_pipe"
MAGIC, VERSION = 0x45434154, 1
DATA_OFF = 64
HDR = struct.Struct("<IIII")        # magic, version, size, lock
HEAD_OFF, TAIL_OFF = 16, 24


class TraceRing:
    def __init__(self, path):
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            self.mm = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        magic, version, self.size, _ = HDR.unpack_from(self.mm, 0)
        if magic != MAGIC or version != VERSION or len(self.mm) < DATA_OFF + self.size:
            raise OSError(f"{path}: not a bpfshim trace ring (version {version})")

    def _u64(self, off):
        return struct.unpack_from("<Q", self.mm, off)[0]

    def _bytes(self, start, end):
        mask = self.size - 1
        a, b = start & mask, end & mask
        if end - start == 0:
            return b""
        if a < b:
            return self.mm[DATA_OFF + a:DATA_OFF + b]
        return self.mm[DATA_OFF + a:DATA_OFF + self.size] + self.mm[DATA_OFF:DATA_OFF + b]

    def read(self):
        """The complete lines written since the last read (bytes)."""
        head, tail = self._u64(HEAD_OFF), self._u64(TAIL_OFF)
        resync = False
        if head - tail > self.size:
            tail, resync = head - self.size, True
        data = self._bytes(tail, head)
        # writers may have gone round while we copied: drop what they overwrote
        first_valid = self._u64(HEAD_OFF) - self.size
        if first_valid > tail:
            data, resync = data[first_valid - tail:], True
            tail = first_valid
        if resync:
            nl = data.find(b"\n")
            data = data[nl + 1:] if nl >= 0 else b""
        struct.pack_into("<Q", self.mm, TAIL_OFF, head)
        return data


def run(runtime_dir, follow=True, out=None):
    out = out or sys.stdout.buffer
    path = os.path.join(runtime_dir, RING_NAME)
    ring = None
    while True:
        if ring is None and os.path.exists(path):
            ring = TraceRing(path)
        data = ring.read() if ring else b""
        if data:
            out.write(data)
            out.flush()
        elif not follow:
            return 0
        else:
            time.sleep(0.05)
