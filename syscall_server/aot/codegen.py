"""The AOT compiler: a long-lived Codegen (target machine, pass pipeline) and a
per-program ProgramLibrary (IR -> optimized module -> object -> blob, then frozen).

Environment:
  BPFSHIM_DUMP_IR=1   dump the IR before and after optimization to stderr
  BPFSHIM_DUMP_ASM=1  dump the generated assembly to stderr
  BPFSHIM_AOT_CPU     target CPU ("host" by default: blobs run on this machine;
                      "generic" for baseline x86-64)
  BPFSHIM_AOT_CACHE=0 disable the on-disk cache ($XDG_CACHE_HOME/bpfshim/aot)
"""
import hashlib
import os
import sys
import threading

import llvmlite.binding as llvm

from . import insn as _insn
from .insn import AotError
from .irgen import ENTRY_NAME, IMPORT_PREFIX, IMPORTS, module_ir
from .link import link

TRIPLE = "x86_64-unknown-linux-gnu"
# Bump when the generated code or blob format changes: it keys the caches.
COMPILER_VERSION = "bpfshim-aot-8"


def dump(kind, text):
    """The one place dumps go through (stderr, framed by the kind)."""
    sys.stderr.write(f"---- bpfshim aot {kind} ----\n{text}\n---- end {kind} ----\n")
    sys.stderr.flush()


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


# Straight-line programs (most tracing programs) need none of the loop,
# vectorization and inlining machinery of -O2: this function pipeline gives
# nearly the same code in half the time.
LIGHT_PIPELINE = ("sroa", "instruction_combine", "simplify_cfg", "sccp", "new_gvn",
                  "dead_store_elimination", "instruction_combine", "simplify_cfg",
                  "aggressive_dce")
# Programs whose every loop calls a helper (a map lookup or a probe read per
# iteration, as tracing programs loop): no loop of theirs can be vectorized,
# and -O2 spent its time in passes with nothing to do (bench hash_update:
# 33.7M instructions to compile -> 23.4M, same run time). The light pipeline
# plus the loop passes that still pay: rotation (a loop test at the bottom)
# and unrolling (constant trip counts).
CALL_LOOP_PIPELINE = ("sroa", "instruction_combine", "simplify_cfg", "loop_simplify", "lcssa",
                      "loop_rotate", "sccp", "new_gvn", "instruction_combine", "loop_unroll",
                      "simplify_cfg", "dead_store_elimination", "instruction_combine",
                      "simplify_cfg", "aggressive_dce")
PIPELINES = {"light": LIGHT_PIPELINE, "call_loops": CALL_LOOP_PIPELINE}

_llvm_options_set = False


def _set_llvm_options():
    """Process-wide LLVM options, parsed once (LLVM rejects a repeated option).
    FastISel (then the greedy register allocator as usual at -O2) saves a
    fifth of code generation time; it hands what it cannot select (vectors)
    to SelectionDAG, and the code measured as fast (scripts/bench jit).
    Loop strength reduction is off: it was up to a fifth of a loop program's
    compile time (memcpy: 7 of 40M instructions, most of it searching
    formulae for the vectorized loop's addresses) and changed no program's
    run time measurably; x86 addressing modes take base + index*scale + offset
    without it."""
    global _llvm_options_set
    if _llvm_options_set:
        return
    _llvm_options_set = True
    opts = []
    if os.environ.get("BPFSHIM_AOT_FAST_ISEL", "1") != "0":
        opts.append("-fast-isel")
    if os.environ.get("BPFSHIM_AOT_LSR", "0") == "0":
        opts.append("-disable-lsr")
    for opt in opts:      # one option a call: llvmlite passes argv = {name, option}
        llvm.set_option("bpfshim", opt)


def pipeline_tier(prog, funcs):
    """The Codegen.optimize tier for a decoded, analyzed program."""
    if len(funcs) == 1:
        if not _insn.has_back_edge(prog):
            return "light"
        if _insn.loops_all_call(prog):
            return "call_loops"
    return "full"


class Codegen:
    """Target machines and optimization pipelines, built once per process.

    Three tiers: straight-line programs get the light pipeline and -O1 code
    generation (their time goes into helpers); programs whose loops all call
    helpers the light pipeline with loop passes; the others (loops that may
    vectorize, bpf-to-bpf calls to inline) the full -O2 pipeline. Both of the
    last two get -O2 code generation."""

    def __init__(self, cpu=None):
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        llvm.initialize_native_asmparser()
        _set_llvm_options()
        cpu = cpu or os.environ.get("BPFSHIM_AOT_CPU", "host")
        if cpu == "host":
            self.cpu, self.features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
        elif cpu == "generic":
            self.cpu, self.features = "x86-64", ""
        else:
            self.cpu, self.features = cpu, ""
        target = llvm.Target.from_triple(TRIPLE)
        self.tm = target.create_target_machine(cpu=self.cpu, features=self.features, opt=2,
                                               reloc="pic", codemodel="small")
        self.tm_light = target.create_target_machine(cpu=self.cpu, features=self.features, opt=1,
                                                     reloc="pic", codemodel="small")
        self.pto = llvm.create_pipeline_tuning_options(speed_level=2)
        # Vectorize loops but do not interleave them (unroll the vector loop
        # 4x): eBPF loops are short, and interleaving cost compile time (memcpy
        # 10%) and made the bench's memcpy slower (0.99x native -> 0.79x without).
        self.pto.loop_interleaving = False
        self.data_layout = str(self.tm.target_data)
        self.lock = threading.Lock()
        self.tag = f"{COMPILER_VERSION};llvm{'.'.join(map(str, llvm.llvm_version_info))};{self.cpu};{self.features}"

    def optimize(self, mod, tier="full"):
        """Run a tier's pipeline ("light", "call_loops" or "full"). A pass
        builder holds analysis caches keyed by module address, so each module
        gets a fresh one (cheap); the tuning options and target machines are
        shared. Returns the target machine for codegen."""
        tm = self.tm_light if tier == "light" else self.tm
        pb = llvm.create_pass_builder(tm, self.pto)
        try:
            if tier in PIPELINES:
                mpm = llvm.create_new_module_pass_manager()
                for p in PIPELINES[tier]:
                    getattr(mpm, f"add_{p}_pass")()
            else:
                mpm = pb.getModulePassManager()
            mpm.run(mod, pb)
            mpm.close()
        finally:
            pb.close()
        return tm

    def library(self, insns, helper_ids=None):
        return ProgramLibrary(self, insns, helper_ids)


class ProgramLibrary:
    """One program's compilation; immutable once finalize() produced the blob."""

    def __init__(self, codegen, insns, helper_ids=None):
        self.codegen = codegen
        self.insns = bytes(insns)
        self.helper_ids = helper_ids
        self.ir = None
        self.blob = None

    def _raise_if_finalized(self):
        if self.blob is not None:
            raise RuntimeError("program library already finalized")

    def finalize(self):
        self._raise_if_finalized()
        prog = _insn.decode(self.insns)
        funcs = _insn.analyze(prog, self.helper_ids)
        tier = pipeline_tier(prog, funcs)
        self.ir = module_ir(prog, funcs)
        if _flag("BPFSHIM_DUMP_IR"):
            dump("IR", self.ir)
        cg = self.codegen
        with cg.lock:
            try:
                mod = llvm.parse_assembly(self.ir)
                mod.verify()
            except RuntimeError as e:   # our own bug: say so, the interpreter runs the program
                raise AotError(f"internal error, invalid IR: {e}") from None
            mod.triple = TRIPLE
            mod.data_layout = cg.data_layout
            tm = cg.optimize(mod, tier)
            if _flag("BPFSHIM_DUMP_IR"):
                dump("optimized IR", str(mod))
            if _flag("BPFSHIM_DUMP_ASM"):
                dump("asm", tm.emit_assembly(mod))
            obj = tm.emit_object(mod)
        self.blob = link(obj, ENTRY_NAME, [IMPORT_PREFIX + n for n in IMPORTS])
        return self.blob


_codegen = None
_cache = {}
_cache_lock = threading.Lock()


def get_codegen():
    global _codegen
    if _codegen is None:
        _codegen = Codegen()
    return _codegen


def _cache_dir():
    if os.environ.get("BPFSHIM_AOT_CACHE", "1") == "0":
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "bpfshim", "aot")


def _disk_get(key):
    d = _cache_dir()
    if not d:
        return None
    try:
        with open(os.path.join(d, key), "rb") as f:
            data = f.read()
    except OSError:
        return None
    # A blob ends with its trailer; a torn or foreign file is ignored.
    from .link import TRAILER, TRAILER_MAGIC
    if len(data) < TRAILER.size or TRAILER.unpack_from(data, len(data) - TRAILER.size)[2] != TRAILER_MAGIC:
        return None
    return data


def _disk_put(key, blob):
    d = _cache_dir()
    if not d:
        return
    try:
        os.makedirs(d, exist_ok=True)
        tmp = os.path.join(d, f".{key}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(blob)
        os.replace(tmp, os.path.join(d, key))
    except OSError:
        pass     # the cache is an optimization only


def compile_program(insns, *, helper_ids=None):
    """Relocated eBPF instructions -> position-independent x86-64 blob (entry at 0,
    `u64 fn(u64 r1, const struct bpf_jit_env *env)`). Raises AotError (OSError,
    EINVAL) for what cannot be compiled."""
    insns = bytes(insns)
    cg = get_codegen()
    h = hashlib.sha256(cg.tag.encode())
    h.update(b"\0" + insns)
    if helper_ids is not None:
        h.update(b"\0helpers:" + ",".join(map(str, sorted(helper_ids))).encode())
    key = h.hexdigest()
    with _cache_lock:
        blob = _cache.get(key)
    if blob is not None:
        return blob
    dumping = _flag("BPFSHIM_DUMP_IR") or _flag("BPFSHIM_DUMP_ASM")
    blob = None if dumping else _disk_get(key)
    if blob is None:
        blob = cg.library(insns, helper_ids).finalize()
        _disk_put(key, blob)
    with _cache_lock:
        _cache[key] = blob
    return blob
