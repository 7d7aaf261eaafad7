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
