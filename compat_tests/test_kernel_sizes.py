"""syscall_server/kernel_sizes.py against the running kernel: the sizes the
server uses for memlock (measured by scripts/setup, else built in), put into
map_mem_usage(), give the kernel's fdinfo memlock of fresh maps of several
sizes of each map type, none of them a map the measurement solved from.
User-space part: the solver rejects readings the formula cannot explain, and
the measured file applies only to the kernel that it describes."""
import json
import subprocess

import pytest

from compat_tests.env import ROOT, kernel_bpf_reason, unpriv_cmd, unpriv_reason
from syscall_server import kernel_sizes as ks
from syscall_server.kernel_sizes import MMAPABLE, NO_PREALLOC, PAGE, probe as P

needs_kernel = pytest.mark.skipif(kernel_bpf_reason() is not None, reason=f"kernel eBPF: {kernel_bpf_reason()}")

MAPS = {
    "HASH": [P("HASH", 4, 8, n) for n in (3, 16, 17, 100, 1000)] + [P("HASH", 16, 36, 64)],
    "HASH_NO_PREALLOC": [P("HASH", 4, 8, 32, NO_PREALLOC, elems=e) for e in (0, 1, 7, 20)]
    + [P("HASH", 20, 3, 8, NO_PREALLOC, elems=5)],
    "PERCPU_HASH": [P("PERCPU_HASH", 4, v, n) for v, n in ((8, 16), (20, 100), (4, 3))]
    + [P("PERCPU_HASH", 8, 16, 64, NO_PREALLOC, elems=e) for e in (0, 9)],
    "LRU_HASH": [P("LRU_HASH", 4, 8, n) for n in (16, 300)] + [P("LRU_PERCPU_HASH", 4, 24, 50)],
    "HASH_OF_MAPS": [P("HASH_OF_MAPS", 4, 4, n, inner=True) for n in (2, 40)],
    "ARRAY": [P("ARRAY", 4, v, n) for v, n in ((8, 1), (4, 50), (100, 7))]
    + [P("ARRAY", 4, 8, n, MMAPABLE) for n in (1, 513)] + [P("ARRAY_OF_MAPS", 4, 4, 9, inner=True)],
    "PERCPU_ARRAY": [P("PERCPU_ARRAY", 4, v, n) for v, n in ((8, 1), (12, 40))],
    "QUEUE_STACK": [P("QUEUE", 0, 8, 20), P("STACK", 0, 5, 33)],
    "BLOOM_FILTER": [P("BLOOM_FILTER", 0, 8, n) for n in (10, 5000)] + [P("BLOOM_FILTER", 0, 4, 77, extra=7)],
    "STACK_TRACE": [P("STACK_TRACE", 4, v, n) for v, n in ((8, 3), (64, 100), (800, 16))],
    "RINGBUF": [P("RINGBUF", 0, 0, n * PAGE) for n in (2, 8, 64)],
    "LPM_TRIE": [P("LPM_TRIE", k, v, 64, NO_PREALLOC, elems=e) for k, v, e in ((8, 8, 2), (20, 4, 11), (5, 1, 30))],
}


@needs_kernel
@pytest.mark.parametrize("group", list(MAPS))
def test_sizes_predict_kernel_memlock(group):
    cpus = ks.nr_cpus()
    maps = MAPS[group]
    got = ks.kernel_memlock(maps, cpus)
    bad = [f"{ks.describe(p)}: kernel {m}, bpfshim {ks.predict(p, cpus)}"
           for p, m in zip(maps, got) if ks.predict(p, cpus) != m]
    assert not bad, f"sizes: {ks.source()}\n" + "\n".join(bad)


@needs_kernel
def test_measurement_is_current():
    """A fresh measurement equals what the server uses: scripts/setup wrote it
    for this kernel (or the built-in sizes are this kernel's)."""
    assert ks.measure() == ks.sizes(), ks.source()


@pytest.mark.skipif(unpriv_reason() is not None, reason=f"uid 65534: {unpriv_reason()}")
def test_unprivileged_server_reads_the_measurement():
    if not ks.PATH.exists():
        pytest.skip(f"{ks.PATH} not written (scripts/setup measures as root with kernel eBPF)")
    code = "from syscall_server import kernel_sizes as k; import json; print(json.dumps([k.sizes(), k.source()]))"
    r = subprocess.run(unpriv_cmd() + [str(ROOT / ".venv" / "bin" / "python"), "-c", code],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    sizes, source = json.loads(r.stdout)
    assert source == ks.load()[1] and sizes == ks.load()[0]


def test_solver_rejects_a_wrong_formula():
    cpus = 2
    groups = [g for g in ks._groups() if "SIZEOF_BPF_HTAB" in g[0]]
    probes = [p for _, det, checks in groups for p in det + checks]
    true = [ks.predict(p, cpus, ks.BUILTIN) for p in probes]
    assert ks.solve(groups, true, cpus) == {k: ks.BUILTIN[k] for k in groups[0][0]}
    # a kernel whose element has 8 more bytes in percpu tables only: the three
    # solving maps agree, the checks do not
    wrong = [m + 8 * p["max"] if p["name"] == "PERCPU_HASH" and not p["elems"] else m for p, m in zip(probes, true)]
    with pytest.raises(ks.MeasureError, match="PERCPU_HASH key 4 value 8 max_entries 16: kernel"):
        ks.solve(groups, wrong, cpus)


def test_measurement_applies_to_its_kernel_only(tmp_path):
    path = tmp_path / "sizes.json"
    other = dict(ks.BUILTIN, SIZEOF_BPF_HTAB=ks.BUILTIN["SIZEOF_BPF_HTAB"] + 64)
    path.write_text(json.dumps({"kernel": ks.kernel_identity(), "sizes": other}))
    assert ks.load(path) == (other, f"measured ({path})")
    path.write_text(json.dumps({"kernel": dict(ks.kernel_identity(), version="#2 other build"), "sizes": other}))
    sizes, source = ks.load(path)
    assert sizes == ks.BUILTIN and "version differ" in source
    assert ks.load(tmp_path / "missing.json")[0] == ks.BUILTIN
