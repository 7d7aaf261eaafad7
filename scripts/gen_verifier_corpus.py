#!/usr/bin/env python3
"""Writes compat_tests/data/verifier_corpus.jsonl: the kernel's own verifier
tests (tools/testing/selftests/bpf/test_verifier.c and verifier/*.c, as
struct bpf_test tables) as data, for compat_tests/test_verifier_corpus.py.

The tables are C (the kernel's BPF_* insn macros, fixup arrays naming the
instructions that get a map fd): scripts/verifier_corpus_dump.c includes
test_verifier.c and prints each entry. The source is the Debian package
linux-source-6.1 (/usr/src/linux-source-6.1.tar.xz), or a kernel tree given
as the argument. Needs cc and libbpf-dev (test_verifier.c includes
<bpf/libbpf.h>).

    scripts/gen_verifier_corpus.py [KERNEL_TREE]
"""
import os
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARBALL = "/usr/src/linux-source-6.1.tar.xz"
OUT = os.path.join(ROOT, "compat_tests", "data", "verifier_corpus.jsonl")
SELFTESTS = "tools/testing/selftests/bpf"
NEEDED = (f"{SELFTESTS}/verifier/", f"{SELFTESTS}/test_verifier.c", f"{SELFTESTS}/cap_helpers.",
          f"{SELFTESTS}/bpf_rand.h", f"{SELFTESTS}/bpf_util.h", f"{SELFTESTS}/test_btf.h",
          "tools/include/linux/filter.h")


def extract(tmp):
    with tarfile.open(TARBALL) as tf:
        members = []
        for m in tf:
            rel = m.name.split("/", 1)[1] if "/" in m.name else ""
            if any(rel.startswith(p) for p in NEEDED):
                m.name = rel
                members.append(m)
        tf.extractall(tmp, members=members)
    return tmp


def main(argv):
    with tempfile.TemporaryDirectory(prefix="verifier-corpus-") as tmp:
        tree = argv[1] if len(argv) > 1 else extract(os.path.join(tmp, "src"))
        st = os.path.join(tree, SELFTESTS)
        inc = os.path.join(tmp, "inc")
        os.makedirs(os.path.join(inc, "verifier"))
        # verifier/tests.h as the selftests Makefile generates it
        names = sorted(n for n in os.listdir(os.path.join(st, "verifier")) if n.endswith(".c"))
        with open(os.path.join(inc, "verifier", "tests.h"), "w") as f:
            f.write("#ifdef FILL_ARRAY\n" + "".join(f'#include "{n}"\n' for n in names) + "#endif\n")
        exe = os.path.join(tmp, "dump")
        subprocess.run(["cc", "-O0", "-w", f"-I{inc}", f"-I{st}", f"-I{st}/verifier",
                        os.path.join(ROOT, "scripts", "verifier_corpus_dump.c"), os.path.join(st, "cap_helpers.c"),
                        "-lbpf", "-lelf", "-lz", "-o", exe], check=True)
        data = subprocess.run([exe], check=True, stdout=subprocess.PIPE).stdout
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT + ".tmp", "wb") as f:
        f.write(data)
    os.chmod(OUT + ".tmp", 0o644)
    os.replace(OUT + ".tmp", OUT)
    print(f"{OUT}: {len(data.splitlines()) - 1} tests")


if __name__ == "__main__":
    main(sys.argv)
