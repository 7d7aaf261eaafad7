"""The runtime's own primitives on their own (agent/rt/tests/*.c): each
program builds against the runtime's headers, runs cases the real paths
hit only by chance (a fork while another thread is inside a once
function; /proc/PID/maps lines longer than the buffer, paths with spaces)
and exits 0. Not a kernel behaviour: what the runtime must keep for probes
never to hang or mislead their host, asserted directly."""
import subprocess
import tempfile
from pathlib import Path

import pytest

from compat_tests.env import ROOT

TESTS = sorted((ROOT / "agent" / "rt" / "tests").glob("*.c"))
INCLUDES = ["-Iagent/include/uapi", "-Iagent", "-Iagent/rt", "-Iagent/maps"]


@pytest.mark.parametrize("src", TESTS, ids=[p.stem for p in TESTS])
def test_primitive(src):
    with tempfile.TemporaryDirectory() as d:
        exe = Path(d) / src.stem
        subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", *INCLUDES, "-pthread",
                        "-o", str(exe), str(src)], check=True, cwd=ROOT)
        p = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "FAIL" not in p.stdout, p.stdout + p.stderr
