"""AOT compiler: eBPF -> LLVM IR (llvmlite) -> x86-64 object -> position-independent blob."""
from .codegen import Codegen, ProgramLibrary, compile_program, dump, get_codegen
from .insn import AotError

__all__ = ["AotError", "Codegen", "ProgramLibrary", "compile_program", "dump", "get_codegen"]
