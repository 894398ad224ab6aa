"""Zip archive inspection within limits, on a seekable binary file.

:func:`inspect` answers ``None`` (nothing found) or the first :class:`ZipProblem`,
checking each archive level in this order:

1. "too many zip members": more than ``max_members`` entries, counted over all
   nested levels.  Before :mod:`zipfile` reads a central directory (one object per
   entry), the entry signatures in the file are counted, so a 20 MB directory of
   empty entries cannot cost memory;
2. a member whose name ``check`` (the caller's banned-name test) returns a reason
   for: reason "zip member <path>", ``member`` the path (nested levels joined
   with "/");
3. "encrypted zip": a member with flag bit 0x1 (we cannot look inside);
4. "zip bomb": declared uncompressed sizes above ``max_total`` (summed over all
   levels), or a member over 1 MiB with a compression ratio above ``max_ratio``;
5. nested archives (members named ``*.zip``): beyond ``max_depth`` levels "zip
   nested too deep"; otherwise extracted into a spooled temporary file, at most the
   declared size and at most ``max_total`` bytes in all (more: "zip bomb"), then
   inspected the same way.  An archive whose SHA-256 equals that of an archive
   enclosing it is "zip loop" (a quine such as r.zip); identical siblings are
   inspected once and counted each time.

Anything :mod:`zipfile` cannot read (not a zip, truncated, bad CRC, unsupported
compression of a nested archive, …) is "corrupt zip".  An archive without members
is fine.  Nothing is decompressed except nested archives.  Never raises for any
content of ``fp``.
"""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol

RATIO_FLOOR = 1 << 20  # the ratio limit applies to members larger than this
SPOOL = 1 << 20  # nested archives larger than this go to disk
_CHUNK = 1 << 16
_ENTRY_SIGNATURE = b"PK\x01\x02"


class _Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class ZipLimits:
    max_depth: int = 4
    max_members: int = 1000
    max_total: int = 100 * 2**20
    max_ratio: int = 100


@dataclass(frozen=True)
class ZipProblem:
    reason: str
    member: str | None = None


def inspect(fp: IO[bytes], check: Callable[[str], str | None], limits: ZipLimits,
            ancestors: frozenset[str] = frozenset()) -> ZipProblem | None:
    """Inspect the archive in ``fp`` (read from offset 0).  ``check(name)`` returns a
    reason when a member name is banned.  ``ancestors``: SHA-256 hex digests of
    archives that enclose this one (the caller's own nesting, if any)."""
    walk = _Walk(check, limits)
    try:
        fp.seek(0)
        digest, entries = _digest(fp, None)
        return walk.archive(fp, digest, entries, 1, "", ancestors | {digest})
    except Exception:  # zipfile's many failure types; "any content" includes all of them
        return ZipProblem("corrupt zip")


def _digest(fp: _Reader, out: IO[bytes] | None, limit: int = -1) -> tuple[str, int]:
    """SHA-256 of the rest of ``fp`` and the number of central-directory entry
    signatures in it; a copy goes to ``out``.  ``limit``: read at most that much."""
    h = hashlib.sha256()
    entries, tail, left = 0, b"", limit
    while left:
        chunk = fp.read(_CHUNK if left < 0 else min(_CHUNK, left))
        if not chunk:
            break
        left -= len(chunk) if left > 0 else 0
        h.update(chunk)
        if out is not None:
            out.write(chunk)
        entries += (tail + chunk).count(_ENTRY_SIGNATURE)
        tail = chunk[-3:]
    return h.hexdigest(), entries


class _Walk:
    def __init__(self, check: Callable[[str], str | None], limits: ZipLimits) -> None:
        self.check = check
        self.limits = limits
        self.members = 0
        self.declared = 0  # declared uncompressed bytes, all levels
        self.extracted = 0  # bytes of nested archives read
        self.seen: dict[str, tuple[int, int]] = {}  # clean archive -> (members, declared)

    def archive(self, fp: IO[bytes], digest: str, entries: int, depth: int, prefix: str,
                ancestors: frozenset[str]) -> ZipProblem | None:
        lim = self.limits
        if digest in self.seen:
            members, declared = self.seen[digest]
            return self._count(members, declared, prefix)
        if self.members + entries > lim.max_members:
            return ZipProblem("too many zip members", prefix.rstrip("/") or None)
        fp.seek(0)
        try:
            with zipfile.ZipFile(fp) as zf:
                infos = [i for i in zf.infolist() if not i.is_dir()]
                problem = self._level(zf, infos, depth, prefix, ancestors)
        except Exception:  # here or in a nested archive: BadZipFile, zlib.error, EOFError, …
            return ZipProblem("corrupt zip")
        if problem is None:
            self.seen[digest] = (len(infos), sum(i.file_size for i in infos))
        return problem

    def _count(self, members: int, declared: int, prefix: str) -> ZipProblem | None:
        """Add an archive's members and declared sizes to the totals; ``member`` of a
        problem is the nested archive (``None`` for the outermost)."""
        self.members += members
        self.declared += declared
        where = prefix.rstrip("/") or None
        if self.members > self.limits.max_members:
            return ZipProblem("too many zip members", where)
        if self.declared > self.limits.max_total:
            return ZipProblem("zip bomb", where)
        return None

    def _level(self, zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], depth: int,
               prefix: str, ancestors: frozenset[str]) -> ZipProblem | None:
        lim = self.limits
        for info in infos:
            reason = self.check(info.filename)
            if reason is not None:
                path = prefix + info.filename
                return ZipProblem(f"zip member {path}", path)
        for info in infos:
            if info.flag_bits & 0x1:
                return ZipProblem("encrypted zip", prefix + info.filename)
        problem = self._count(len(infos), sum(i.file_size for i in infos), prefix)
        if problem is not None:
            return problem
        for info in infos:
            if info.file_size > RATIO_FLOOR and (
                    info.compress_size <= 0
                    or info.file_size > lim.max_ratio * info.compress_size):
                return ZipProblem("zip bomb", prefix + info.filename)
        for info in infos:
            if not info.file_size or not info.filename.rstrip(" ./").lower().endswith(".zip"):
                continue  # an empty file holds nothing
            path = prefix + info.filename
            if depth >= lim.max_depth:
                return ZipProblem("zip nested too deep", path)
            problem = self._nested(zf, info, depth, path, ancestors)
            if problem is not None:
                return problem
        return None

    def _nested(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, depth: int, path: str,
                ancestors: frozenset[str]) -> ZipProblem | None:
        budget = self.limits.max_total - self.extracted
        if info.file_size > budget:
            return ZipProblem("zip bomb", path)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL) as inner:
            with zf.open(info) as member:
                # ZipExtFile stops at the declared size (and checks the CRC there).
                digest, entries = _digest(member, inner, info.file_size)
            self.extracted += inner.tell()
            if digest in ancestors:
                return ZipProblem("zip loop", path)
            return self.archive(inner, digest, entries, depth + 1, path + "/",
                                ancestors | {digest})
