"""Defang: find dangerous attachments and write the body without them (SPEC §4 eom,
§4a "Defang warning", §9).

:func:`scan` reads the spooled body once for its structure (:mod:`.mime`), then
decodes only the parts a rule needs, streaming into spooled temporary files.  It
never raises: structural oddities become ``ScanResult.notes`` (never a finding by
themselves).

Rules, for each leaf part (the first that matches decides):

1. beyond the nesting limits of :class:`~.mime.Limits` (100 multipart levels, 10
   attached-message levels): "MIME nested too deep" / "message nested too deep" —
   we cannot vouch for what is inside;
2. a name — any Content-Disposition filename or Content-Type name, decoded — that
   after stripping trailing dots and white space (and anything from a NUL on) ends
   in ``.EXT`` with EXT in ``banned_exts``, case-insensitively: "banned extension
   .ext".  message/rfc822 parts are checked the same way before looking inside;
3. ``scan_rfc822``: a message/rfc822 part in base64 or quoted-printable (which
   :mod:`.mime` does not parse in place) is decoded and scanned as a message;
   whatever is found inside replaces the whole part;
4. ``scan_zip``: a part named ``*.zip`` or typed application/zip,
   application/x-zip-compressed or application/x-zip is decoded and given to
   :func:`.zipscan.inspect` (members, nesting, bombs, encryption, corruption); an
   empty payload is fine;
5. ``scan_html``: text/html (or application/octet-stream named ``*.htm``/``*.html``)
   that decodes to at most ``html_max_bytes`` is decoded with its charset and
   :func:`.html.remove_scripts` applied; if anything went: Finding(replace=False),
   and the rewritten part keeps its header fields except Content-Transfer-Encoding,
   which becomes quoted-printable.  Larger parts are left (note "HTML part too large
   to clean").

The whole message is suspicious — one finding, the top-level entity replaced — when
it has more MIME parts than :class:`~.mime.Limits` allows ("too many MIME parts") or
the scan failed unexpectedly, e.g. the body file could not be read ("unscannable
message", with a note "scanner error: <exception type>").

A replaced part becomes ``WARNING.TXT`` (:data:`WARNING_HEADERS`, then
:func:`warning_text`).  When the part to replace is the message inside a
message/rfc822 part, the message/rfc822 part is replaced; when that climbs to the
top-level entity, the whole body becomes the warning and ``rewrite`` returns the
top-level header changes (Content-Type, Content-Transfer-Encoding and
Content-Disposition as in :data:`WARNING_FIELDS`, plus ``MIME-Version: 1.0`` if the
message had none).  A cleaned top-level HTML body returns
``("Content-Transfer-Encoding", "quoted-printable")`` (plus MIME-Version likewise).
Inside a replaced part nothing else is looked at.

``ScanResult.charsets``: the charset of every text/* part (attached messages
included when scanned) plus the charsets named in RFC 2047 encoded words and RFC
2231 parameters of part header blocks; top-level header fields are the caller's.

Limitations: a top-level header the rewrite changes is changed once (a second
Content-Type field of the same name stays); HTML in a charset whose bytes are not
ASCII-compatible (UTF-16/32) is examined as Latin-1 unless its declared codec
round-trips it; inserted header lines end in CRLF whatever the body uses.
"""

from __future__ import annotations

import binascii
import codecs
import io
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from . import mime, zipscan
from .html import remove_scripts

WARNING_NAME = "WARNING.TXT"
WARNING_FIELDS: tuple[tuple[str, str], ...] = (
    ("Content-Type", f'text/plain; charset=us-ascii; name="{WARNING_NAME}"'),
    ("Content-Transfer-Encoding", "7bit"),
    ("Content-Disposition", f'inline; filename="{WARNING_NAME}"'),
)
WARNING_HEADERS = b"".join(f"{k}: {v}\r\n".encode("ascii") for k, v in WARNING_FIELDS)
ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/x-zip"})
SPOOL = 1 << 20  # decoded payloads above this go to disk
_CHUNK = 1 << 16
_NAME_CAP = 200  # characters of a name shown in a warning
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_B64 = bytes(sorted(set(range(256)) - set(_B64)))
_PADDING = re.compile(rb"=+")


@dataclass(frozen=True)
class DefangSettings:
    banned_exts: frozenset[str]  # lowercase extensions without dot, e.g. {"exe", "scr"}
    scan_zip: bool = False
    scan_rfc822: bool = True
    scan_html: bool = False
    zip_max_depth: int = 4  # nested zips deeper than this: suspicious
    zip_max_members: int = 1000  # more members (all levels): suspicious
    zip_max_total: int = 100 * 2**20  # declared uncompressed bytes (all levels) above: suspicious
    zip_max_ratio: int = 100  # uncompressed/compressed above, for members > 1 MiB: zip bomb
    part_header_limit: int = 64 * 1024
    html_max_bytes: int = 4 * 2**20  # larger HTML parts are not cleaned (a note says so)

    def __post_init__(self) -> None:  # "EXE", ".exe" and "exe" all mean exe
        exts = frozenset(e.strip().lstrip(".").lower() for e in self.banned_exts)
        object.__setattr__(self, "banned_exts", exts - {""})


@dataclass(frozen=True)
class Finding:
    filename: str  # the attachment's decoded file name ("" when none)
    reason: str  # short text for the log: "banned extension .exe", "zip bomb", …
    member: str | None = None  # the banned member inside a zip ("a.zip/b.exe" when nested)
    replace: bool = True  # False: cleaned in place (HTML script removal)


@dataclass(frozen=True)
class Edit:
    """What ``rewrite`` does to ``[header_start or body_start, end)`` of the body."""

    finding: Finding
    header_start: int | None  # None: the top-level entity (its fields are the MTA's)
    body_start: int
    end: int
    cte: str = ""  # html: the part's transfer encoding and charset, to decode it again
    charset: str = ""


@dataclass(frozen=True)
class ScanResult:
    findings: tuple[Finding, ...]
    charsets: frozenset[str]
    notes: tuple[str, ...]
    edits: tuple[Edit, ...] = field(default=(), repr=False)  # in body order
    top_changes: tuple[tuple[str, str | None], ...] = field(default=(), repr=False)
    html_max_bytes: int = field(default=DefangSettings.html_max_bytes, repr=False)

    @property
    def changed(self) -> bool:
        return bool(self.findings)

    def rewrite(self, body: IO[bytes], out: IO[bytes],
                saved_as: str) -> tuple[tuple[str, str | None], ...]:
        """Write the new body to ``out``, copying every byte outside the replaced or
        cleaned parts unchanged from ``body`` (the file given to :func:`scan`).
        Returns the top-level header changes for chgheader/addheader: (name, new
        value) or (name, None) to delete; non-empty only when the top-level entity
        itself was replaced or cleaned."""
        pos = 0
        for edit in self.edits:
            start = edit.body_start if edit.header_start is None else edit.header_start
            _copy(body, pos, start, out)
            if edit.finding.replace:
                if edit.header_start is not None:
                    out.write(WARNING_HEADERS + b"\r\n")
                out.write(warning_text(edit.finding, saved_as))
            else:
                cleaned = _clean_html(body, edit.body_start, edit.end, edit.cte, edit.charset,
                                      self.html_max_bytes)
                if not isinstance(cleaned, bytes):  # not the body scan() saw: keep it
                    _copy(body, start, edit.end, out)
                else:
                    if edit.header_start is not None:
                        _copy_fields(body, edit.header_start, edit.body_start, out)
                        out.write(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")
                    out.write(cleaned)
            pos = edit.end
        _copy(body, pos, None, out)
        return self.top_changes


def scan(headers: Sequence[tuple[str, str]], body: IO[bytes],
         settings: DefangSettings) -> ScanResult:
    """Apply the defang rules to the message: top-level ``headers`` as the MTA gave
    them, ``body`` any seekable binary file (a SpooledTemporaryFile) holding the whole
    body from offset 0.  Never raises; leaves ``body`` at offset 0."""
    has_version = any(n.strip().lower() == "mime-version" for n, _ in headers)
    try:
        result = _Scanner(body, settings).run(headers, has_version)
    except Exception as exc:  # a bug or an unreadable file: we cannot vouch for it
        finding = Finding("", "unscannable message")
        try:
            body.seek(0, 2)
            size = body.tell()
        except Exception:
            size = 0
        result = ScanResult((finding,), frozenset(), (f"scanner error: {type(exc).__name__}",),
                            (Edit(finding, None, 0, size),), _top_changes(True, has_version))
    try:
        body.seek(0)
    except Exception:
        pass
    return result


def banned_extension(name: str, exts: frozenset[str]) -> str | None:
    """The banned extension ``name`` ends in (lowercase, no dot), or ``None``.
    Trailing dots and white space are ignored (Windows drops them), and so is
    anything from a NUL on (C string handling)."""
    for candidate in (name, name.split("\x00", 1)[0]):
        base = candidate.rstrip(". \t\r\n\x00\x0b\x0c")
        _, dot, ext = base.rpartition(".")
        if dot and ext.lower() in exts:
            return ext.lower()
    return None


def warning_text(finding: Finding, saved_as: str) -> bytes:
    """The WARNING.TXT body: ASCII, CRLF lines.  Every name in it goes through
    :func:`escape_name`, so no file name can add a line."""
    reason = escape_name(finding.reason, 2 * _NAME_CAP)
    if finding.reason.startswith("banned extension"):
        why = f"its type is not allowed here ({reason})"
    elif finding.reason.startswith("zip member"):
        why = f"it contains a file whose type is not allowed here ({reason})"
    else:
        why = f"it could not be checked safely ({reason})"
    lines = [f"This message contained an attachment that was removed because {why}.",
             f"File name: {escape_name(finding.filename) if finding.filename else '(none)'}"]
    if finding.member is not None:
        lines.append(f"Inside the archive: {escape_name(finding.member)}")
    lines += [f"The original message was saved as: {escape_name(saved_as, 4 * _NAME_CAP)}",
              "Ask your mail administrator if you need it."]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def escape_name(text: str, cap: int = _NAME_CAP) -> str:
    """``text`` as printable ASCII with Python-style backslash escapes: ``\\\\`` for a
    backslash, ``\\xNN`` for control characters, Latin-1 and raw 8-bit bytes (as
    surrogate escapes), ``\\uNNNN``/``\\UNNNNNNNN`` beyond; longer than ``cap``
    characters: cut, with "..." appended."""
    out: list[str] = []
    for ch in text[:cap]:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        elif 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    return "".join(out) + ("..." if len(text) > cap else "")


# --- the scan ------------------------------------------------------------------------

class _Scanner:
    def __init__(self, body: IO[bytes], settings: DefangSettings,
                 limits: mime.Limits | None = None) -> None:
        self.body = body
        self.s = settings
        self.limits = limits or mime.Limits(header_limit=settings.part_header_limit,
                                            rfc822=settings.scan_rfc822)
        self.zip_limits = zipscan.ZipLimits(settings.zip_max_depth, settings.zip_max_members,
                                            settings.zip_max_total, settings.zip_max_ratio)
        self.findings: list[Finding] = []
        self.edits: list[Edit] = []
        self.charsets: set[str] = set()
        self.notes: list[str] = []

    def run(self, headers: Sequence[tuple[str, str]] | None, has_version: bool) -> ScanResult:
        structure = mime.parse(self.body, headers, self.limits)
        self.notes += structure.notes
        root = structure.root
        for part in root.walk():
            if part.content_type.startswith("text/") and part.charset:
                self.charsets.add(part.charset[:40])
            self.charsets |= part.header_charsets
        if structure.truncated:
            self._found(root, Finding("", "too many MIME parts"))
        else:
            self._visit(root)
        top = [e for e in self.edits if e.header_start is None]
        changes = _top_changes(top[0].finding.replace, has_version) if top else ()
        edits = sorted(self.edits, key=lambda e: e.body_start if e.header_start is None
                       else e.header_start)
        return ScanResult(tuple(self.findings), frozenset(self.charsets),
                          tuple(dict.fromkeys(self.notes)), tuple(edits), changes,
                          self.s.html_max_bytes)

    def _found(self, part: mime.Part, finding: Finding, cte: str = "",
               charset: str = "") -> None:
        self.findings.append(finding)
        if finding.replace:
            while part.embedded:  # the attached message is the attachment
                assert part.parent is not None
                part = part.parent
        self.edits.append(Edit(finding, part.header_start, part.body_start, part.end,
                               cte, charset))

    def _visit(self, root: mime.Part) -> None:
        todo = [root]
        while todo:
            part = todo.pop()
            if part.is_multipart:
                todo.extend(reversed(part.children))
                continue
            finding = self._check_names(part)
            if finding is None and part.is_leaf:
                finding = self._check_leaf(part)
            if finding is not None:
                self._found(part, finding, part.cte, part.charset)
            elif part.is_message:
                todo.extend(reversed(part.children))

    def _check_names(self, part: mime.Part) -> Finding | None:
        if part.too_deep:
            what = "MIME" if part.content_type.startswith("multipart/") else "message"
            return Finding(_display(part), f"{what} nested too deep")
        for name in part.names:
            ext = banned_extension(name, self.s.banned_exts)
            if ext is not None:
                return Finding(name, f"banned extension .{ext}")
        return None

    def _check_leaf(self, part: mime.Part) -> Finding | None:
        s = self.s
        ctype = part.content_type
        lowered = [n.rstrip(". \t").lower() for n in part.names]
        if ctype in mime.MESSAGE_TYPES and s.scan_rfc822 and part.cte in ("base64",
                                                                        "quoted-printable"):
            return self._check_encoded_message(part)
        if s.scan_zip and (ctype in ZIP_TYPES or any(n.endswith(".zip") for n in lowered)):
            return self._check_zip(part)
        if s.scan_html and (ctype == "text/html" or (
                ctype == "application/octet-stream"
                and any(n.endswith((".htm", ".html")) for n in lowered))):
            cleaned = _clean_html(self.body, part.body_start, part.end, part.cte, part.charset,
                                  s.html_max_bytes)
            if isinstance(cleaned, _TooBig):
                self.notes.append("HTML part too large to clean")
            elif cleaned is not None:
                return Finding(_display(part), "script in HTML", replace=False)
        return None

    def _check_zip(self, part: mime.Part) -> Finding | None:
        name = next((n for n in part.names if n.rstrip(". \t").lower().endswith(".zip")),
                    _display(part))
        with tempfile.SpooledTemporaryFile(max_size=SPOOL) as tmp:
            if not _decode(self.body, part.body_start, part.end, part.cte, tmp):
                return None  # empty: nothing to open
            problem = zipscan.inspect(tmp, lambda n: banned_extension(n, self.s.banned_exts),
                                      self.zip_limits)
        if problem is None:
            return None
        return Finding(name, problem.reason, problem.member)

    def _check_encoded_message(self, part: mime.Part) -> Finding | None:
        depth_left = self.limits.max_rfc822_depth - part.message_depth - 1
        if depth_left < 0:
            return Finding(_display(part), "message nested too deep")
        with tempfile.SpooledTemporaryFile(max_size=SPOOL) as tmp:
            _decode(self.body, part.body_start, part.end, part.cte, tmp)
            limits = mime.Limits(self.limits.header_limit, True, depth_left,
                                 self.limits.max_multipart_depth, self.limits.max_parts)
            inner = _Scanner(tmp, self.s, limits).run(None, True)
        self.charsets |= inner.charsets
        self.notes += inner.notes
        if not inner.findings:
            return None
        first = inner.findings[0]
        return Finding(first.filename, first.reason, first.member)


def _display(part: mime.Part) -> str:
    return part.names[0] if part.names else ""


def _top_changes(replaced: bool, has_version: bool) -> tuple[tuple[str, str | None], ...]:
    changes: list[tuple[str, str | None]] = (
        list(WARNING_FIELDS) if replaced
        else [("Content-Transfer-Encoding", "quoted-printable")])
    if not has_version:
        changes.append(("MIME-Version", "1.0"))
    return tuple(changes)


# --- decoding and HTML -----------------------------------------------------------------

def _decode(body: IO[bytes], start: int, end: int, cte: str, out: IO[bytes],
            limit: int = -1) -> int:
    """Decode ``body[start:end]`` per ``cte`` (base64 and quoted-printable leniently,
    anything else as is) into ``out``, streaming.  Returns the bytes written; stops
    once more than ``limit`` (if >= 0) were written."""
    body.seek(start)
    left = end - start
    written = 0
    carry = b""

    def put(data: bytes) -> None:
        nonlocal written
        out.write(data)
        written += len(data)

    def flush() -> None:  # the end of a base64 segment: pad what is left
        nonlocal carry
        if len(carry) >= 2:
            put(binascii.a2b_base64(carry + b"=" * (-len(carry) % 4)))
        carry = b""

    while left > 0 and (limit < 0 or written <= limit):
        if cte == "quoted-printable":
            chunk = body.readline(min(mime.LINE_CAP, left))
        else:
            chunk = body.read(min(_CHUNK, left))
        if not chunk:
            break
        left -= len(chunk)
        if cte == "quoted-printable":
            put(binascii.a2b_qp(chunk))
        elif cte == "base64":
            # "=" ends a segment (concatenated encodings decode one after another)
            for i, piece in enumerate(_PADDING.split(chunk.translate(None, _NOT_B64))):
                if i:
                    flush()
                data = carry + piece
                n = len(data) // 4 * 4
                if n:
                    put(binascii.a2b_base64(data[:n]))
                carry = data[n:]
        else:
            put(chunk)
    flush()
    return written


class _TooBig:
    """The HTML part decodes to more than the limit."""


_TOO_BIG = _TooBig()


def _clean_html(body: IO[bytes], start: int, end: int, cte: str, charset: str,
                limit: int) -> bytes | _TooBig | None:
    """The part's HTML without scripts, quoted-printable encoded in its own charset;
    ``None`` when it has no script, ``_TOO_BIG`` when it decodes to over ``limit``."""
    buf = io.BytesIO()
    if _decode(body, start, end, cte, buf, limit) > limit:
        return _TOO_BIG
    raw = buf.getvalue()
    del buf
    codec = _text_codec(raw, charset)
    cleaned, removed = remove_scripts(raw.decode(codec, "surrogateescape"))
    if not removed:
        return None
    try:
        data = cleaned.encode(codec, "surrogateescape")
    except UnicodeError:  # pragma: no cover - _text_codec checked the round trip
        codec = "latin-1"
        data = remove_scripts(raw.decode(codec))[0].encode(codec)
    return _qp_encode(data, text="\n".encode(codec) == b"\n")


def _text_codec(raw: bytes, charset: str) -> str:
    """The declared charset if it decodes and re-encodes ``raw`` exactly (undecodable
    bytes kept as surrogate escapes), else Latin-1 (which always does)."""
    try:
        codec = codecs.lookup(charset or "us-ascii").name
        if raw.decode(codec, "surrogateescape").encode(codec, "surrogateescape") == raw:
            return codec
    except Exception:  # unknown, not a text codec, or an odd codec failing
        pass
    return "latin-1"


def _qp_encode(data: bytes, text: bool) -> bytes:
    """Quoted-printable with CRLF lines.  ``text``: line breaks (LF or CRLF) stay
    line breaks; otherwise every byte is encoded (UTF-16 and the like)."""
    if not text:
        return binascii.b2a_qp(data, istext=False).replace(b"=\n", b"=\r\n")
    lines = data.split(b"\n")
    last = lines.pop()
    out = [binascii.b2a_qp(line[:-1] if line.endswith(b"\r") else line, istext=False)
           .replace(b"=\n", b"=\r\n") + b"\r\n" for line in lines]
    if last:
        out.append(binascii.b2a_qp(last, istext=False).replace(b"=\n", b"=\r\n"))
    return b"".join(out)


# --- copying -----------------------------------------------------------------------

def _copy(body: IO[bytes], start: int, end: int | None, out: IO[bytes]) -> None:
    """``body[start:end]`` (to the end of the file when ``end`` is None) to ``out``."""
    body.seek(start)
    left = -1 if end is None else end - start
    while left:
        chunk = body.read(_CHUNK if left < 0 else min(_CHUNK, left))
        if not chunk:
            break
        out.write(chunk)
        if left > 0:
            left -= len(chunk)


def _copy_fields(body: IO[bytes], start: int, end: int, out: IO[bytes]) -> None:
    """The header block ``body[start:end]`` without its Content-Transfer-Encoding
    fields and without its closing blank line, each line ending in a line break."""
    body.seek(start)
    left = end - start
    at_start, dropping, last = True, False, b"\n"
    while left > 0:
        line = body.readline(min(mime.LINE_CAP, left))
        if not line:
            break
        left -= len(line)
        if at_start:
            if line in (b"\r\n", b"\n"):
                at_start = True
                continue
            if line[:1] not in (b" ", b"\t"):
                dropping = line.split(b":", 1)[0].strip().lower() == b"content-transfer-encoding"
        at_start = line.endswith(b"\n")
        if not dropping:
            out.write(line)
            last = line
    if not last.endswith(b"\n"):
        out.write(b"\r\n")
