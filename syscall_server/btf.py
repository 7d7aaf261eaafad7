"""BTF blobs: the parse the kernel's btf_parse() does before it accepts one
(header, sections, every type record), and the few queries the server
needs (size of a type, where a struct bpf_spin_lock sits in a value).
"""
import errno
import struct

from .errors import BpfError

BTF_MAGIC = 0xEB9F
HDR = struct.Struct("<HBBIIIII")  # magic version flags hdr_len type_off type_len str_off str_len

# BTF_KIND_*
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, \
    FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(1, 20)
MAX_KIND = ENUM64


class Btf:
    def __init__(self, data):
        self.data = bytes(data)
        self.types = [None]      # type id -> (kind, name, info, size_or_type, extra)
        self._parse()

    def _err(self, msg):
        raise BpfError(errno.EINVAL, msg)

    def _parse(self):
        d = self.data
        if len(d) < HDR.size:
            self._err("btf_header not found")
        magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = HDR.unpack_from(d)
        if magic != BTF_MAGIC:
            self._err("Invalid magic")
        if version != 1:
            self._err("Unsupported version")
        if flags:
            self._err("Unsupported flags")
        if hdr_len < HDR.size or hdr_len > len(d):
            self._err("Unsupported btf_header")
        body = len(d) - hdr_len
        if type_off % 4 or type_off + type_len > body or str_off + str_len > body:
            self._err("Invalid section offset")
        if not str_len or d[hdr_len + str_off] != 0 or d[hdr_len + str_off + str_len - 1] != 0:
            self._err("Invalid string section")
        self.strs = d[hdr_len + str_off: hdr_len + str_off + str_len]
        off, end = hdr_len + type_off, hdr_len + type_off + type_len
        while off < end:
            if off + 12 > end:
                self._err("Type section too short")
            name_off, info, size = struct.unpack_from("<III", d, off)
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            off += 12
            extra = self._extra_len(kind, vlen)
            if extra is None:
                self._err(f"[{len(self.types)}] Invalid kind:{kind}")
            if off + extra > end:
                self._err("Type section too short")
            if name_off >= str_len:
                self._err(f"[{len(self.types)}] Invalid name_offset:{name_off}")
            self.types.append((kind, self.name_at(name_off), info, size, d[off:off + extra]))
            off += extra

    @staticmethod
    def _extra_len(kind, vlen):
        return {INT: 4, PTR: 0, ARRAY: 12, STRUCT: 12 * vlen, UNION: 12 * vlen, ENUM: 8 * vlen,
                FWD: 0, TYPEDEF: 0, VOLATILE: 0, CONST: 0, RESTRICT: 0, FUNC: 0,
                FUNC_PROTO: 8 * vlen, VAR: 4, DATASEC: 12 * vlen, FLOAT: 0, DECL_TAG: 4,
                TYPE_TAG: 0, ENUM64: 12 * vlen}.get(kind)

    def name_at(self, off):
        end = self.strs.find(b"\0", off)
        return self.strs[off:end].decode(errors="replace")

    def resolve(self, tid, depth=0):
        """Skip typedef/const/volatile/restrict/type_tag."""
        while 0 < tid < len(self.types) and depth < 32:
            kind, _n, _i, size, _e = self.types[tid]
            if kind not in (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG):
                return tid
            tid = size
            depth += 1
        return tid

    def size_of(self, tid):
        tid = self.resolve(tid)
        if not 0 < tid < len(self.types):
            return None
        kind, _n, _i, size, extra = self.types[tid]
        if kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC):
            return size
        if kind == PTR:
            return 8
        if kind == ARRAY:
            elem, _idx, nelems = struct.unpack_from("<III", extra)
            es = self.size_of(elem)
            return None if es is None else es * nelems
        return None

    def find_member_struct(self, tid, struct_name):
        """Byte offset of the first member of type `struct struct_name`
        inside struct tid (searching nested structs), or -1."""
        tid = self.resolve(tid)
        if not 0 < tid < len(self.types):
            return -1
        kind, name, info, _size, extra = self.types[tid]
        if kind != STRUCT:
            return -1
        kflag = info >> 31
        for i in range(info & 0xFFFF):
            _mn, mtype, moff = struct.unpack_from("<III", extra, 12 * i)
            bitoff = moff & 0xFFFFFF if kflag else moff
            mt = self.resolve(mtype)
            if 0 < mt < len(self.types):
                k2, n2 = self.types[mt][0], self.types[mt][1]
                if k2 == STRUCT and n2 == struct_name:
                    return bitoff // 8
        return -1

    def struct_named(self, name):
        """The type id of `struct name` (a definition, not a forward
        declaration), or None."""
        if not hasattr(self, "_structs"):
            self._structs = {}
            for tid, t in enumerate(self.types[1:], 1):
                if t[0] == STRUCT and t[1] and t[1] not in self._structs:
                    n = t[1]
                    self._structs[n] = tid
        return self._structs.get(name)

    def member(self, tid, name):
        """(byte offset, size) of member `name` of struct/union tid, looked
        for in anonymous struct/union members too (as C and CO-RE see
        them), or None."""
        tid = self.resolve(tid)
        if not 0 < tid < len(self.types) or self.types[tid][0] not in (STRUCT, UNION):
            return None
        _k, _n, info, _size, extra = self.types[tid]
        kflag = info >> 31
        for i in range(info & 0xFFFF):
            mname, mtype, moff = struct.unpack_from("<III", extra, 12 * i)
            bitoff = moff & 0xFFFFFF if kflag else moff
            n = self.name_at(mname)
            if n == name:
                return bitoff // 8, self.size_of(mtype) or 0
            if not n:
                inner = self.member(mtype, name)
                if inner is not None:
                    return bitoff // 8 + inner[0], inner[1]
        return None
