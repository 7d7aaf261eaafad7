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
import struct

from .insn import AotError

TRAILER = struct.Struct("<IIII")
TRAILER_MAGIC = 0x54494a42     # "BJIT" little-endian
TRAILER_VERSION = 1

R_X86_64_NONE, R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_PC64 = 0, 1, 2, 4, 24
_KEEP_PREFIXES = (".text", ".rodata", ".data", ".bss")
_IGNORED = (".note", ".comment", ".llvm_addrsig", ".eh_frame", ".group", ".debug")

SHT_SYMTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 2, 4, 8, 9
SHF_ALLOC = 2
ET_REL, EM_X86_64 = 1, 62
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")   # Elf64_Ehdr
_SHDR = struct.Struct("<IIQQQQIIQQ")         # Elf64_Shdr
_SYM = struct.Struct("<IBBHQQ")              # Elf64_Sym
_RELA = struct.Struct("<QQq")                # Elf64_Rela


class _Section:
    """One section header of an ELF64 little-endian relocatable (all LLVM gives us)."""
    __slots__ = ("name", "type", "flags", "offset", "size", "link", "info", "align", "_obj")

    def __init__(self, obj, hdr):
        (self.name, self.type, self.flags, _addr, self.offset, self.size, self.link, self.info,
         self.align, _entsize) = hdr
        self._obj = obj

    def data(self):
        if self.type == SHT_NOBITS:
            return b""
        if self.offset + self.size > len(self._obj):
            raise AotError("linker: section beyond the end of the object")
        return self._obj[self.offset:self.offset + self.size]


def _sections(obj):
    """The section headers of an x86-64 ELF64 relocatable, names resolved.
    (Read with struct: pyelftools' parsing was most of the linking time.)"""
    if len(obj) < _EHDR.size or obj[:6] != b"\x7fELF\x02\x01":
        raise AotError("linker: not an ELF64 little-endian object")
    (_ident, e_type, e_machine, _ver, _entry, _phoff, shoff, _flags, _ehsize, _phentsize, _phnum,
     shentsize, shnum, shstrndx) = _EHDR.unpack_from(obj)
    if e_machine != EM_X86_64 or e_type != ET_REL:
        raise AotError("linker: not an x86-64 relocatable object")
    if shentsize != _SHDR.size or shoff + shnum * shentsize > len(obj) or not shstrndx < shnum:
        raise AotError("linker: bad section header table")
    secs = [_Section(obj, _SHDR.unpack_from(obj, shoff + i * shentsize)) for i in range(shnum)]
    names = secs[shstrndx].data()
    for sec in secs:
        sec.name = names[sec.name:names.index(b"\0", sec.name)].decode()
    return secs


def _kept(name):
    return name.startswith(_KEEP_PREFIXES)


NO_SLOT = 0xffffffff


def link(obj, entry, imports):
    """Object bytes -> blob bytes. entry must end up at offset 0; imports are
    the symbol names of the import slots, in bpf_jit_load's order."""
    secs = _sections(bytes(obj))
    # Place sections: text first (in object order), then everything else kept.
    order = [i for i, s in enumerate(secs) if s.flags & SHF_ALLOC and s.name.startswith(".text")]
    order += [i for i, s in enumerate(secs)
              if s.flags & SHF_ALLOC and not s.name.startswith(".text") and s.size]
    base = {}
    pos = 0
    for i in order:
        s = secs[i]
        if not s.name.startswith(".text") and not _kept(s.name):
            if s.name.startswith(_IGNORED):
                continue
            raise AotError(f"linker: unexpected section {s.name}")
        al = max(s.align, 1)
        pos = (pos + al - 1) // al * al
        base[i] = pos
        pos += s.size
    blob = bytearray(pos)
    for i, off in base.items():
        s = secs[i]
        if s.type != SHT_NOBITS:
            blob[off:off + s.size] = s.data()
    symtab = next((s for s in secs if s.type == SHT_SYMTAB), None)
    syms = []
    if symtab is not None:
        strtab = secs[symtab.link].data()
        for st_name, _info, _other, shndx, value, _size in _SYM.iter_unpack(symtab.data()):
            syms.append((strtab[st_name:strtab.index(b"\0", st_name)].decode(), shndx, value))

    def sym_addr(sym):
        name, shndx, value = sym
        if shndx not in base:   # undefined (0), common, absolute, or an unplaced section
            raise AotError(f"linker: symbol {name or '?'} is not defined in the blob (shndx {shndx})")
        return base[shndx] + value

    for rs in secs:
        if rs.type not in (SHT_RELA, SHT_REL):
            continue
        tgt = rs.info
        if tgt not in base:
            if secs[tgt].name.startswith(_IGNORED) or not secs[tgt].flags & SHF_ALLOC:
                continue
            raise AotError(f"linker: relocations for unplaced section {secs[tgt].name}")
        if rs.type != SHT_RELA:
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
