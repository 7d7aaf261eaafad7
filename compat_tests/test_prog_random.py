"""Random valid programs (compat_tests/progs_gen.py), differential against
the kernel: each program is loaded (BPF_PROG_LOAD) and run
(BPF_PROG_TEST_RUN) on the kernel and through bpfshim on both engines, and
once more as uid 65534; retval, data_out / ctx_out and the maps' contents
after the run must be the kernel's.

Each backend runs the whole batch in one process (progs_gen.py run). The
kernel's verifier picks the programs: the ones it rejects are replaced by
the next seeds and only counted in the rejection rate. The long run is
scripts/bench.d/prog_random.
"""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import progs_gen as G  # noqa: E402
from compat_tests.env import denylist, kernel_bpf_reason  # noqa: E402

SEED = int(os.environ.get("BPFSHIM_RANDOM_SEED", "20251125"))
COUNT = int(os.environ.get("BPFSHIM_RANDOM_COUNT", "500"))
NOBODY_ENGINE = "interp"
MAX_REJECTION_RATE = 0.10

_state = {}


def summary():
    if not _state:
        if not G.kernel_ok():
            pytest.skip(f"kernel side: {kernel_bpf_reason()}")
        if not os.path.exists(G.SHIM_LIB):
            pytest.skip("libbpfshim.so not built")
        _state["s"] = G.differential(SEED, COUNT, engines=("interp", "aot"), nobody_engine=NOBODY_ENGINE)
        s = dict(_state["s"])
        s.pop("reports")
        print("\nprog_random:", json.dumps(s))
    return _state["s"]


def test_generator_is_deterministic():
    a = [G.gen_program(G.program_seed(SEED, i)) for i in range(20)]
    b = [G.gen_program(G.program_seed(SEED, i)) for i in range(20)]
    assert a == b
    assert len({p["insns"] for p in a}) == 20


def test_kernel_accepts_most_programs():
    s = summary()
    assert s["programs"] == COUNT
    assert s["rejection_rate"] <= MAX_REJECTION_RATE, json.dumps(s["rejections"])


def known_divergences():
    """Seeds listed in compat_tests/DENYLIST as `prog_random <seed>: reason`."""
    return {int(seed): why for seed, why in denylist("prog_random").items()}


@pytest.mark.parametrize("backend", ["interp", "aot", f"{NOBODY_ENGINE}@65534"])
def test_matches_kernel(backend):
    s = summary()
    e = s["engines"][backend]
    known = known_divergences()
    listed = [x for x in e["first_seeds"] if x in known]
    if e["mismatches"] and e["mismatches"] > len(listed):
        reports = "\n\n".join(s["reports"][backend])
        pytest.fail(f"{backend}: {e['mismatches']} of {s['programs']} programs differ from the kernel "
                    f"(by field {e['by_field']}; seeds {e['first_seeds']})\n{reports}")
