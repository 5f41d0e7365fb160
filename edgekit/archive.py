"""The bundle archive: a ustar tar in exactly one canonical form, written and read by edgekit's own code.

Writing (:func:`pack`): for each member one 512-byte ustar header — name of at most 100 ASCII bytes, mode 0644,
uid and gid 0, size, mtime 0, type ``0`` (regular file), magic ``ustar\\0`` and version ``00``; link name, owner,
group, device numbers and prefix empty (NUL) — then the data, zero-padded to a multiple of 512 bytes. After the
last member come two zero blocks, then zeros up to a multiple of 10240 bytes (tar's default record). These are
the bytes Python's :mod:`tarfile` (3.11.7) writes for such members in its USTAR and PAX formats (neither needs an
extended header for them), so bundles written with tarfile by earlier edgekit versions read unchanged. Writing the
headers here keeps the form fixed whatever a later tarfile does (GNU tar, for one, writes ``0000000`` device numbers
where this form has NUL bytes).

Reading (:func:`unpack`) is the strict inverse, and untrusted bytes never reach :mod:`tarfile`: every header must
carry a valid checksum and be the header :func:`pack` writes for its name and size; padding, end blocks and record
padding must be zeros of the canonical length. Bounds (member count, member size, total size) are checked header by
header, before any member's data is copied. Every failure is one line naming the member and the field.
"""

from __future__ import annotations

from typing import Iterable

from .errors import BundleCorruptError, BundleTooLargeError, UnsafeMemberError, UsageError

BLOCK = 512
RECORD = 20 * BLOCK
NAME_MAX = 100
USTAR_MAGIC = b"ustar\x0000"
GNU_MAGIC = b"ustar  \x00"
_ZERO = bytes(BLOCK)
_REGULAR = b"0"
_LINKS = {b"1": "a hard link", b"2": "a symlink"}
_EXTENDED = {b"x": "a PAX extended header", b"g": "a PAX global header", b"L": "a GNU long-name header",
             b"K": "a GNU long-link header", b"S": "a GNU sparse file", b"M": "a GNU multi-volume header",
             b"V": "a GNU volume header"}
_SPECIAL = {b"3": "a character device", b"4": "a block device", b"5": "a directory", b"6": "a FIFO"}
_CANONICAL_HINT = "rebuild the bundle with 'edgekit bundle create'; re-packing it with another tool changes its bytes"
# field name, start, end — of the ustar header
_FIELDS = [("name", 0, 100), ("mode", 100, 108), ("uid", 108, 116), ("gid", 116, 124), ("size", 124, 136),
           ("mtime", 136, 148), ("type", 156, 157), ("link name", 157, 257),
           ("magic", 257, 265), ("owner name", 265, 297), ("group name", 297, 329), ("device major", 329, 337),
           ("device minor", 337, 345), ("prefix", 345, 500), ("header padding", 500, 512),
           ("checksum", 148, 156)]  # derived from the others: compared last


def _padded(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def header(name: str, size: int) -> bytes:
    """The canonical ustar header of a regular file ``name`` holding ``size`` bytes."""
    raw = name.encode("ascii", errors="replace")
    if not name.isascii() or not raw or len(raw) > NAME_MAX or b"\0" in raw:
        raise UsageError(f"bundle member name {name!r} must be 1-{NAME_MAX} ASCII characters")
    if not 0 <= size < 8 ** 11:
        raise UsageError(f"bundle member {name!r} is {size} bytes, over the ustar limit of 8 GiB")
    buf = bytearray(BLOCK)
    buf[0:len(raw)] = raw
    buf[100:108] = b"0000644\0"
    buf[108:116] = buf[116:124] = b"0000000\0"
    buf[124:136] = b"%011o\0" % size
    buf[136:148] = b"00000000000\0"
    buf[148:156] = b" " * 8
    buf[156:157] = _REGULAR
    buf[257:265] = USTAR_MAGIC
    buf[148:155] = b"%06o\0" % sum(buf)
    return bytes(buf)


def pack(members: Iterable[tuple[str, bytes]]) -> bytes:
    """The canonical archive of ``members``, in the order given."""
    out = bytearray()
    for name, data in members:
        out += header(name, len(data))
        out += data
        out += bytes(_padded(len(data), BLOCK) - len(data))
    out += bytes(2 * BLOCK)
    out += bytes(_padded(len(out), RECORD) - len(out))
    return bytes(out)


def _corrupt(why: str) -> BundleCorruptError:
    return BundleCorruptError(f"bundle is not a readable tar archive ({why})")


def _not_canonical(why: str) -> BundleCorruptError:
    return BundleCorruptError(f"bundle archive is not in canonical form: {why}", hint=_CANONICAL_HINT)


def _octal(field: bytes, what: str, at: int) -> int:
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if not text or len(text) > len(field) - 1 or text.strip(b"01234567"):
        raise _corrupt(f"the {what} field of the header at byte {at} is not an octal number")
    return int(text, 8)


def _check_header(block: bytes, at: int) -> tuple[str, int]:
    """(name, size) of the header at byte ``at``; what makes it unreadable or unsafe is refused here."""
    stored = _octal(block[148:156], "checksum", at)
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != unsigned:
        raise _corrupt(f"bad header checksum at byte {at}: truncated, not a tar file, or modified")
    magic = block[257:265]
    if block[257:262] != b"ustar" and magic != bytes(8):  # POSIX ustar, GNU, or pre-POSIX v7 (no magic)
        raise _corrupt(f"the header at byte {at} is not a tar header")
    prefix = block[345:500].split(b"\0", 1)[0] if magic == USTAR_MAGIC else b""
    raw_name = block[0:100].split(b"\0", 1)[0]
    try:
        name = (prefix + b"/" + raw_name if prefix else raw_name).decode("ascii")
    except UnicodeDecodeError:
        raise UnsafeMemberError(f"bundle member name {raw_name!r} at byte {at} is not ASCII") from None
    kind = block[156:157]
    if kind in _LINKS:
        raise UnsafeMemberError(f"bundle member {name!r} is {_LINKS[kind]}")
    if kind in _EXTENDED:
        raise _not_canonical(f"member {name!r} at byte {at} is {_EXTENDED[kind]}")
    if kind in _SPECIAL or kind not in (_REGULAR, b"\0", b"7"):
        raise UnsafeMemberError(f"bundle member {name!r} is not a regular file "
                                f"({_SPECIAL.get(kind, f'tar type {kind!r}')})")
    if not name or name.startswith("/"):
        raise UnsafeMemberError(f"bundle member {name!r} has an absolute path or no name")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise UnsafeMemberError(f"bundle member {name!r} leaves the bundle directory or is nested")
    if block[124] & 0x80:
        raise _not_canonical(f"member {name!r} has a base-256 (GNU) size field")
    return name, _octal(block[124:136], "size", at)


def _field_diff(block: bytes, canonical: bytes, name: str) -> str:
    magic = block[257:265]
    if magic == GNU_MAGIC:
        return f"member {name!r} has a GNU tar header, not POSIX ustar"
    if magic == bytes(8):
        return f"member {name!r} has a pre-POSIX (v7) tar header, not POSIX ustar"
    for field, start, end in _FIELDS:
        if block[start:end] != canonical[start:end]:
            got, want = (x.rstrip(b"\0").decode("ascii", "replace") for x in (block[start:end], canonical[start:end]))
            if field in ("uid", "gid", "mtime") and got.strip().isdigit():
                return f"member {name!r} has {field} {int(got, 8)}, the canonical packing has 0"
            return f"member {name!r} has {field} {got!r}, the canonical packing has {want!r}"
    return f"member {name!r} has a non-canonical header"  # pragma: no cover - some field differs


def unpack(data: bytes, *, max_members: int, max_member_bytes: int, max_total_bytes: int) -> list[tuple[str, bytes]]:
    """The members of a canonical archive, in archive order; see the module docstring for what is refused."""
    if len(data) < 2 * BLOCK:
        raise _corrupt("empty or truncated")
    if len(data) % BLOCK:
        raise _corrupt(f"{len(data)} bytes is not a whole number of 512-byte blocks: truncated or not a tar file")
    members: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    total = 0
    at = 0
    while True:
        if at + BLOCK > len(data):
            raise _corrupt("it ends without the end-of-archive blocks: truncated")
        block = data[at:at + BLOCK]
        if block == _ZERO:
            break
        name, size = _check_header(block, at)
        if len(members) >= max_members:
            raise BundleTooLargeError(f"bundle has more than {max_members} members")
        if name in seen:
            raise UnsafeMemberError(f"bundle member {name!r} appears twice")
        if size > max_member_bytes:
            raise BundleTooLargeError(f"bundle member {name!r} is {size} bytes, over the "
                                      f"{max_member_bytes}-byte limit")
        total += size
        if total > max_total_bytes:
            raise BundleTooLargeError(f"bundle payload exceeds {max_total_bytes} bytes")
        start, end = at + BLOCK, at + BLOCK + size
        if end > len(data):
            raise _corrupt(f"bundle member {name!r} is truncated")
        canonical = header(name, size)
        if block != canonical:
            raise _not_canonical(_field_diff(block, canonical, name))
        nxt = at + BLOCK + _padded(size, BLOCK)
        if data[end:nxt].strip(b"\0"):
            raise _not_canonical(f"the padding after member {name!r} is not zeros")
        members.append((name, data[start:end]))
        seen.add(name)
        at = nxt
    if not members:
        raise _corrupt("empty or truncated")
    marker = data[at:at + 2 * BLOCK]
    if len(marker) < 2 * BLOCK:
        raise _not_canonical("the end-of-archive marker is cut short (one zero block, not two)")
    if marker.strip(b"\0"):
        raise _not_canonical("the end-of-archive marker is not two zero blocks")
    if data[at + 2 * BLOCK:].strip(b"\0"):
        raise _not_canonical("there is data after the end-of-archive marker")
    want = _padded(at + 2 * BLOCK, RECORD)
    if len(data) != want:
        raise _not_canonical(f"record padding: the archive is {len(data)} bytes, the canonical packing has {want}")
    return members
