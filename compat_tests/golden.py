"""The kernel's results recorded as golden files, so that a machine without
kernel eBPF (no root, a container) still compares bpfshim with the kernel.

compat_tests/golden/<test>.json (test: the test file's name without
`test_`) holds {"kernel": release, "cases": {case id: result}}, the result
normalised exactly as the test compares it. `BPFSHIM_RECORD_GOLDEN=1`
(scripts/record_golden) writes the live kernel's results as root. When the
kernel side runs live, it wins: a record that differs is reported as stale,
not failed (kernels differ). Without kernel eBPF, `recorded` gives the
reference the test compares bpfshim's result with.
"""
import fcntl
import json
import os
from pathlib import Path

DIR = Path(os.environ.get("BPFSHIM_GOLDEN_DIR") or Path(__file__).resolve().parent / "golden")  # another: test_golden.py
STALE, COMPARED = [], []   # for the session summary (conftest.py)


def recording():
    return os.environ.get("BPFSHIM_RECORD_GOLDEN") == "1"


def jsonable(value):
    """value as it reads back from the golden file (tuples become lists)."""
    return json.loads(json.dumps(value))


def masked(value, text, mark):
    """value with every occurrence of the machine-dependent `text` (a
    temporary directory) in its strings replaced by `mark`."""
    if isinstance(value, str):
        return value.replace(text, mark)
    if isinstance(value, (list, tuple)):
        return [masked(v, text, mark) for v in value]
    return value


def current():
    """(test, case) of the running pytest item: test_bpftrace.py::x[y] is
    ("bpftrace", "x[y]")."""
    nodeid = os.environ["PYTEST_CURRENT_TEST"].rsplit(" ", 1)[0]
    path, _, case = nodeid.partition("::")
    return Path(path).stem.removeprefix("test_"), case


def _path(test):
    return DIR / f"{test}.json"


_loaded = {}


def load(test):
    if test not in _loaded:     # read once per session: test_map_syscalls asks for each of ~280 cases
        try:
            _loaded[test] = json.loads(_path(test).read_text())
        except FileNotFoundError:
            _loaded[test] = {"kernel": None, "cases": {}}
    return _loaded[test]


def _record(test, results):
    DIR.mkdir(exist_ok=True)
    lock = os.open(DIR, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)    # cases of one file may be recorded by parallel runs
        _loaded.pop(test, None)     # the file as another recording run may have left it
        g = load(test)
        g["cases"].update(jsonable(results))
        lines = [f"  {json.dumps(c)}: {json.dumps(v)}" for c, v in sorted(g["cases"].items())]
        tmp = _path(test).with_suffix(".tmp")   # one case a line: diffs name the cases that changed
        tmp.write_text(f'{{"kernel": {json.dumps(os.uname().release)},\n "cases": {{\n' + ",\n".join(lines) + "\n}}\n")
        os.replace(tmp, _path(test))
    finally:
        os.close(lock)


def live(test, results):
    """The live kernel's {case: result}: recorded in record mode, otherwise
    checked against the golden file (a difference is printed, not failed)."""
    if recording():
        _record(test, results)
        return
    g = load(test)
    for case, value in jsonable(results).items():
        if case in g["cases"] and g["cases"][case] != value:
            STALE.append(f"{test} {case}")
            print(f"golden file {_path(test).name} is stale for {case} (recorded on kernel {g['kernel']}, "
                  f"the live kernel {os.uname().release} differs): recorded {json.dumps(g['cases'][case])[:400]}")


def recorded(test, case):
    """The kernel's recorded result of `case`, or None when none is."""
    g = load(test)
    if case not in g["cases"]:
        return None
    if short(g["kernel"]) != short(os.uname().release):
        # another kernel's results are not this kernel's: not compared
        print(f"{test} {case}: recorded on kernel {g['kernel']}, this is {os.uname().release}: not compared")
        return None
    COMPARED.append(f"{test} {case}")
    print(f"{test} {case}: compared with the kernel's recorded result (kernel {short(g['kernel'])}, "
          f"{g['kernel']}, {_path(test)})")
    return g["cases"][case]


def short(release):
    return ".".join(release.split(".")[:2])
