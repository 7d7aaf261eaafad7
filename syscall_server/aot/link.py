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

from .insn import AotError

TRAILER = struct.Struct("<IIII")
TRAILER_MAGIC = 0x54494a42     # "BJIT" little-endian
TRAILER_VERSION = 1

R_X86_64_NONE, R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_PC64 = 0, 1, 2, 4, 24
_KEEP_PREFIXES = (".text", ".rodata", ".data", ".bss")
_IGNORED = (".note", ".comment", ".llvm_addrsig", ".eh_frame", ".group", ".debug")


class _ObjFile(ELFFile):
    """ELFFile that reuses its parsing structs: every object here is an x86-64
    ELF64 relocatable, and building the structs is most of ELFFile's cost."""
    _structs = None

    def __init__(self, stream):
        cached = _ObjFile._structs
        if cached is None:
            super().__init__(stream)
            _ObjFile._structs = self.structs
            return
        self.stream = stream
        self.stream.seek(0, io.SEEK_END)
        self.stream_len = self.stream.tell()
        self._identify_file()
        self.structs = cached
        self.header = self._parse_elf_header()
        self.stream.seek(0)
        self.e_ident_raw = self.stream.read(16)
        self.stream_loader = None


def _open(obj):
    try:
        return _ObjFile(io.BytesIO(obj))
    except AttributeError:      # a pyelftools without these internals
        return ELFFile(io.BytesIO(obj))


def _kept(name):
    return name.startswith(_KEEP_PREFIXES)


NO_SLOT = 0xffffffff
_SYM = struct.Struct("<IBBHQQ")     # Elf64_Sym
_RELA = struct.Struct("<QQq")       # Elf64_Rela


def link(obj, entry, imports):
    """Object bytes -> blob bytes. entry must end up at offset 0; imports are
    the symbol names of the import slots, in bpf_jit_load's order."""
    elf = _open(obj)
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
    # Section headers come from pyelftools; the symbol and relocation tables
    # are read straight from their section data (ELF64 little-endian layouts),
    # which is most of the linking time saved.
    symtab = next((s for s in secs if s["sh_type"] == "SHT_SYMTAB"), None)
    syms = []
    if symtab is not None:
        strtab = secs[symtab["sh_link"]].data()
        for st_name, _info, _other, shndx, value, _size in _SYM.iter_unpack(symtab.data()):
            syms.append((strtab[st_name:strtab.index(b"\0", st_name)].decode(), shndx, value))

    def sym_addr(sym):
        name, shndx, value = sym
        if shndx not in base:   # undefined (0), common, absolute, or an unplaced section
            raise AotError(f"linker: symbol {name or '?'} is not defined in the blob (shndx {shndx})")
        return base[shndx] + value

    for rs in secs:
        if rs["sh_type"] not in ("SHT_RELA", "SHT_REL"):
            continue
        tgt = rs["sh_info"]
        if tgt not in base:
            if secs[tgt].name.startswith(_IGNORED) or not secs[tgt]["sh_flags"] & 2:
                continue
            raise AotError(f"linker: relocations for unplaced section {secs[tgt].name}")
        if rs["sh_type"] != "SHT_RELA":
            raise AotError("linker: REL relocations are not expected on x86-64")
        for r_offset, r_info, a in _RELA.iter_unpack(rs.data()):
            typ = r_info & 0xffffffff
            if typ == R_X86_64_NONE:
                continue
            sym = syms[r_info >> 32]
            s_val = sym_addr(sym)
            p = base[tgt] + r_offset
            if typ in (R_X86_64_PC32, R_X86_64_PLT32):
                v = s_val + a - p
                if not -2**31 <= v < 2**31:
                    raise AotError("linker: PC32 relocation out of range")
                struct.pack_into("<i", blob, p, v)
            elif typ == R_X86_64_PC64:
                struct.pack_into("<q", blob, p, s_val + a - p)
            else:
                raise AotError(f"linker: relocation type {typ} against {sym[0] or 'section'} "
                               "needs the load address (not position independent)")
    entry_off = None
    slots = {name: NO_SLOT for name in imports}
    for sym in syms:
        if sym[0] == entry:
            entry_off = sym_addr(sym)
        elif sym[0] in slots:
            slots[sym[0]] = sym_addr(sym)
            if slots[sym[0]] % 8:
                raise AotError(f"linker: import slot {sym[0]} is misaligned")
    if entry_off != 0:
        raise AotError(f"linker: entry {entry} is at offset {entry_off}, not 0")
    blob += bytes(-len(blob) % 8)
    blob += struct.pack(f"<{len(imports)}I", *(slots[n] for n in imports))
    blob += bytes(-len(blob) % 8)
    blob += TRAILER.pack(len(imports), 0, TRAILER_MAGIC, TRAILER_VERSION)
    return bytes(blob)
