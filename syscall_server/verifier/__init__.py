"""The verifier: what PROG_LOAD accepts, with the kernel verifier's errno and
log wording for what it rejects (kernel/bpf/verifier.c).

structure.py: the checks before the abstract interpretation (check_subprogs,
check_cfg, resolve_pseudo_ldimm64's opcode pass, per-instruction fields,
register initialisation). check.py: do_check, the abstract interpretation
(register types and bounds, stack slots, helper prototypes, ctx access,
branches, pruning, loops), over tnum.py and regs.py.
"""
from .structure import *  # noqa: F401,F403
from .structure import Insn, Log, Verifier, VerifierError, decode, is_ldimm64, reject  # noqa: F401
from . import check as _check


def do_check(insns, prog_type, maps, log, ffi, prog_flags=0, expected_attach_type=0, bad_helpers=None):
    """The abstract interpretation: the number of instructions it processed,
    or None when it does not model the program (the structural checks'
    verdict stands). A reject raises VerifierError with the kernel's errno,
    the message as the log's last line. bad_helpers: func_id -> (errno,
    message) for calls refused where they are reached."""
    try:
        c = _check.Checker(insns, prog_type, [_check.MapInfo(m) for m in maps], log, ffi, prog_flags,
                           expected_attach_type)
        c.bad_helpers = bad_helpers or {}
        return c.run()
    except _check.Unmodelled:
        return None
    except _check.Reject as e:
        reject(log, e.errno, e.msg)
    except Exception as e:      # a bug here must not cost a program that loaded before
        print(f"bpfshim: verifier: internal error, program not interpreted: {e!r}", flush=True)
        return None
