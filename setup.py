"""Build hook: `pip install` (editable or not) runs `make`, which compiles the
native libraries into syscall_server/_native/. No network, no LLVM build."""
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.dist import Distribution
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop

ROOT = Path(__file__).resolve().parent


def _make():
    import os
    import sys
    py = os.environ.get("BPFSHIM_PYTHON") or sys.executable
    subprocess.check_call(["make", "-C", str(ROOT), "-j2", f"PYTHON={py}"])


class BuildPy(build_py):
    def run(self):
        _make()
        super().run()


class Develop(develop):
    def run(self):
        _make()
        super().run()


try:  # PEP 660 editable installs go through editable_wheel, not develop
    from setuptools.command.editable_wheel import editable_wheel

    class EditableWheel(editable_wheel):
        def run(self):
            _make()
            super().run()

    _extra = {"editable_wheel": EditableWheel}
except ImportError:  # old setuptools
    _extra = {}

class BinaryDistribution(Distribution):
    """The package carries native libraries: a platform wheel, not py3-none-any."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildPy, "develop": Develop, **_extra}, distclass=BinaryDistribution)
