"""ELF relocatable object -> one position-independent blob.

Layout: the text sections (the entry function first, at offset 0), then
read-only data (jump tables, constants) and the import slots, then a trailer
that tells bpf_jit_load where the import slots are:

    uint32_t slot_off[nr_imports];    /* 0xffffffff: not used by this blob */
    (zero padding to 8 bytes)
    struct { uint32_t nr_imports, reserved, magic ("BJIT"), version; }

Only PC-relative relocations against symbols defined in the blob are accepted;
anything else (an external symbol, an absolute address, a GOT entry) means the
code would need the load address, and is an error.
"""
import io
import struct

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

from .insn import AotError

TRAILER = struct.Struct("<IIII")
TRAILER_MAGIC = 0x54494a42     # "BJIT" little-endian
TRAILER_VERSION = 1

R_X86_64_NONE, R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_PC64 = 0, 1, 2, 4, 24
_KEEP_PREFIXES = (".text", ".rodata", ".data", ".bss")
_IGNORED = (".note", ".comment", ".llvm_addrsig", ".eh_frame", ".group", ".debug")


def _kept(name):
    return name.startswith(_KEEP_PREFIXES)


NO_SLOT = 0xffffffff


def link(obj, entry, imports):
    """Object bytes -> blob bytes. entry must end up at offset 0; imports are
    the symbol names of the import slots, in bpf_jit_load's order."""
    elf = ELFFile(io.BytesIO(obj))
    if elf["e_machine"] != "EM_X86_64" or elf["e_type"] != "ET_REL":
        raise AotError("linker: not an x86-64 relocatable object")
    secs = list(elf.iter_sections())
    # Place sections: text first (in object order), then everything else kept.
    order = [i for i, s in enumerate(secs) if s["sh_flags"] & 2 and s.name.startswith(".text")]
    order += [i for i, s in enumerate(secs)
              if s["sh_flags"] & 2 and not s.name.startswith(".text") and s["sh_size"]]
    base = {}
    pos = 0
    for i in order:
        s = secs[i]
        if not s.name.startswith(".text") and not _kept(s.name):
            if s.name.startswith(_IGNORED):
                continue
            raise AotError(f"linker: unexpected section {s.name}")
        al = max(s["sh_addralign"], 1)
        pos = (pos + al - 1) // al * al
        base[i] = pos
        pos += s["sh_size"]
    blob = bytearray(pos)
    for i, off in base.items():
        s = secs[i]
        if s["sh_type"] != "SHT_NOBITS":
            blob[off:off + s["sh_size"]] = s.data()
    symtab = elf.get_section_by_name(".symtab")
    syms = list(symtab.iter_symbols()) if symtab else []

    def sym_addr(sym):
        shndx = sym["st_shndx"]
        if not isinstance(shndx, int) or shndx not in base:
            raise AotError(f"linker: symbol {sym.name or '?'} is not defined in the blob ({shndx})")
        return base[shndx] + sym["st_value"]

    for rs in secs:
        if not isinstance(rs, RelocationSection):
            continue
        tgt = rs["sh_info"]
        if tgt not in base:
            if secs[tgt].name.startswith(_IGNORED) or not secs[tgt]["sh_flags"] & 2:
                continue
            raise AotError(f"linker: relocations for unplaced section {secs[tgt].name}")
        if not rs.is_RELA():
            raise AotError("linker: REL relocations are not expected on x86-64")
        for r in rs.iter_relocations():
            typ = r["r_info_type"]
            if typ == R_X86_64_NONE:
                continue
            sym = syms[r["r_info_sym"]]
            s_val = sym_addr(sym)
            p = base[tgt] + r["r_offset"]
            a = r["r_addend"]
            if typ in (R_X86_64_PC32, R_X86_64_PLT32):
                v = s_val + a - p
                if not -2**31 <= v < 2**31:
                    raise AotError("linker: PC32 relocation out of range")
                struct.pack_into("<i", blob, p, v)
            elif typ == R_X86_64_PC64:
                struct.pack_into("<q", blob, p, s_val + a - p)
            else:
                raise AotError(f"linker: relocation type {typ} against {sym.name or 'section'} "
                               "needs the load address (not position independent)")
    entry_off = None
    slots = {name: NO_SLOT for name in imports}
    for sym in syms:
        if sym.name == entry:
            entry_off = sym_addr(sym)
        elif sym.name in slots:
            slots[sym.name] = sym_addr(sym)
            if slots[sym.name] % 8:
                raise AotError(f"linker: import slot {sym.name} is misaligned")
    if entry_off != 0:
        raise AotError(f"linker: entry {entry} is at offset {entry_off}, not 0")
    blob += bytes(-len(blob) % 8)
    blob += struct.pack(f"<{len(imports)}I", *(slots[n] for n in imports))
    blob += bytes(-len(blob) % 8)
    blob += TRAILER.pack(len(imports), 0, TRAILER_MAGIC, TRAILER_VERSION)
    return bytes(blob)
