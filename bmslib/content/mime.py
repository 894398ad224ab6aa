"""Streaming MIME structure scanner.

:func:`parse` reads a message body from a seekable binary file once (header blocks
line by line, a line longer than :data:`LINE_CAP` in pieces; content in windows, see
"Speed") and returns the tree of entities as byte offsets into that file.  Only the
Content-* header fields are kept in memory, so a 20 MB body costs what its structure
costs, not what its size is.  The file position is left anywhere; callers seek.

Offsets of a :class:`Part`, all into the body file:

* ``header_start``: first byte of its header block; ``None`` for the top-level
  entity, whose header fields the MTA passed separately;
* ``body_start``: first byte after the blank line that ends the header block (when
  the block has none: the first line that is not a header field, or the delimiter
  that cut it short);
* ``end``: end of its content, exclusive.  The line break before a delimiter line
  belongs to the delimiter (RFC 2046 §5.1.1), not to the content.

So replacing ``[header_start, end)`` of a part with a new header block and body
leaves every delimiter, preamble and epilogue byte untouched.

Leniency (mail clients show what they can, so we look at least as far as they do):

* a delimiter is ``--boundary`` at the start of a line, then optional spaces or tabs
  (transport padding; a stray CR too); ``--boundary--`` closes.  A boundary
  parameter's own trailing white space is ignored;
* a delimiter of any open multipart closes every entity nested deeper; a multipart
  closed that way or by the end of the body gets the note "missing final boundary"
  ("boundary never appears" when it got no part at all);
* after ``--boundary--`` a further ``--boundary`` line opens another part (note
  "part after final boundary");
* a multipart without a usable boundary parameter is a single leaf (note "no
  boundary parameter"); a part without Content-Type is text/plain (message/rfc822
  directly inside multipart/digest);
* a header block ends at a blank line, at a line that cannot be a header field
  (note "missing blank line after part headers"), or at a delimiter;
* a header block larger than ``Limits.header_limit`` gets the note "part header too
  large" and keeps only its Content-* fields; when even those exceed the limit the
  part has no usable headers and counts as text/plain (``headers_usable`` false);
* message/rfc822 and message/global parts with an identity transfer encoding are
  parsed as messages when ``Limits.rfc822``; an encoded one stays a leaf (the
  caller may decode it and :func:`parse` the result on its own).

Bounds: multipart nesting beyond ``Limits.max_multipart_depth`` and attached
messages beyond ``Limits.max_rfc822_depth`` become leaves marked ``too_deep``;
after ``Limits.max_parts`` entities parsing stops with ``Structure.truncated``.
The caller decides what those mean (defang treats them as suspicious).

Header fields: Content-Type, Content-Disposition and Content-Transfer-Encoding are
interpreted (the first four and last four of each kind).  Their parameter lists are
split here, in linear time, at semicolons outside quoted strings; only ``name``,
``filename``, ``charset`` and ``boundary`` are kept (the first and last eight per
field).  Values: quoted strings with quoted pairs, tokens with comments, RFC 2231
sections (``filename*=utf-8''…``, ``filename*0*=…; filename*1=…``, joined in number
order; of more than 256 the first and last 128), and RFC 2047 encoded words
anywhere in a value (Outlook quotes them) through :func:`email.header.decode_header`.
Every name or filename parameter of every such field ends up in ``Part.names``.
(The email package's own header parsers are not used: ``policy.default`` costs
~0.2 ms per part, 13 ms for one 256-section parameter and seconds for a hostile
20 KB parameter list, and ``compat32`` is quadratic in the number of parameters.)

Speed: in content (between delimiters) the file is searched for ``\n--`` in
256 KiB windows instead of being read line by line, so base64 lines, blank lines
and the like cost nothing per line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.header import decode_header
from typing import IO
from urllib.parse import unquote_to_bytes

LINE_CAP = 1 << 16  # longest line piece read at once
MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
IDENTITY_CTES = frozenset({"", "7bit", "8bit", "binary"})

_FIELD_NAMES = frozenset({b"content-type", b"content-disposition", b"content-transfer-encoding"})
_KEPT_PARAMS = frozenset({"name", "filename", "charset", "boundary"})
_FIELDS_EACH = 4  # first and last four fields of each kind are interpreted
_MAX_GROUPS = 16  # kept parameters per field
_MAX_SECTIONS = 256  # RFC 2231 sections per parameter
_MAX_CHARSETS = 64  # per header block
_MAX_NOTES = 64
_WINDOW = 1 << 18  # bytes searched at once for the next "--" line

_FIELD_START = re.compile(rb"From |[\x21-\x39\x3b-\x7e]+[ \t]*:")
_CHARSET_NAME = rb"([A-Za-z0-9!#$%&+^_`{}~.-]{1,40})"
_ENCODED_WORD = re.compile(rb"=\?" + _CHARSET_NAME + rb"(?:\*[A-Za-z0-9-]*)?\?[BbQq]\?")
_RFC2231_CHARSET = re.compile(rb"\*[ \t]*=[ \t]*\"?" + _CHARSET_NAME + rb"'[A-Za-z0-9-]*'")
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[^;"]+|;', re.S)
_COMMENT = re.compile(r"\([^()]*\)")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"?', re.S)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+/[!#$%&'*+.^_`|~0-9a-z-]+\Z")


@dataclass(frozen=True)
class Limits:
    header_limit: int = 64 * 1024  # bytes of Content-* fields kept per header block
    rfc822: bool = True  # parse message/rfc822 parts as messages
    max_rfc822_depth: int = 10  # attached messages inside attached messages
    max_multipart_depth: int = 100  # nested multiparts on one path
    max_parts: int = 2000  # entities in all


@dataclass(eq=False, slots=True)
class Part:
    """One MIME entity.  Containers: a multipart (``boundary`` set, parts in
    ``children``) or a parsed message/rfc822 (its one child is the attached
    message, whose header block starts at this part's ``body_start``)."""

    header_start: int | None
    body_start: int = -1
    end: int = -1
    content_type: str = "text/plain"  # lowercased type/subtype
    params: dict[str, str] = field(default_factory=dict)  # first Content-Type's kept params
    names: tuple[str, ...] = ()  # every decoded name/filename parameter, in order
    filename: str = ""  # first Content-Disposition filename
    name: str = ""  # first Content-Type name
    cte: str = ""  # lowercased Content-Transfer-Encoding token; "" when absent
    header_charsets: frozenset[str] = frozenset()  # RFC 2047 / 2231 charsets in the block
    boundary: bytes | None = None  # set for a multipart container
    closed: bool = False  # multipart: its final delimiter was seen
    too_deep: bool = False  # a container beyond the depth limits, left a leaf
    headers_usable: bool = True
    message_depth: int = 0  # message/rfc822 containers above
    multipart_depth: int = 0  # multipart containers on the path, itself included
    level: int = 0  # index in the parser's stack while open
    parent: Part | None = field(default=None, repr=False)
    children: list[Part] = field(default_factory=list)

    @property
    def is_multipart(self) -> bool:
        return self.boundary is not None

    @property
    def is_message(self) -> bool:
        """A message/rfc822 part that was parsed (its child is the message)."""
        return self.content_type in MESSAGE_TYPES and bool(self.children)

    @property
    def is_leaf(self) -> bool:
        return not self.is_multipart and not self.is_message

    @property
    def embedded(self) -> bool:
        """This entity is the message inside a parsed message/rfc822 part."""
        return self.parent is not None and self.parent.is_message

    @property
    def charset(self) -> str:
        return self.params.get("charset", "").strip().lower()

    def walk(self) -> Iterator[Part]:
        """This part and all below it, depth first, in body order."""
        todo = [self]
        while todo:
            part = todo.pop()
            yield part
            todo.extend(reversed(part.children))


@dataclass(frozen=True)
class Structure:
    root: Part
    notes: tuple[str, ...]
    size: int  # bytes in the body
    truncated: bool  # Limits.max_parts reached: parsing stopped


def parse(fp: IO[bytes], headers: Sequence[tuple[str, str]] | None,
          limits: Limits = Limits()) -> Structure:
    """The structure of the message in ``fp``.  ``headers``: the top-level fields as
    the MTA passed them (the body starts at offset 0); ``None``: ``fp`` holds a whole
    message, header block first.  Raises only what ``fp`` raises."""
    return _Parser(fp, limits).run(headers)


# --- header blocks -----------------------------------------------------------------

class _HeaderBlock:
    """One header block's Content-* fields (the first four and the last four of each
    kind), collected within a byte limit, and the charsets named anywhere in it."""

    __slots__ = ("big", "charsets", "current", "fields", "kept", "limit", "size",
                 "unusable")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.fields: dict[bytes, list[bytearray]] = {}
        self.current: bytearray | None = None  # the kept field being read
        self.size = 0
        self.kept = 0
        self.big = False
        self.unusable = False
        self.charsets: set[str] = set()

    def add(self, chunk: bytes, new_field: bool) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.big = True
        if len(self.charsets) < _MAX_CHARSETS:
            if b"=?" in chunk:
                self.charsets.update(m.group(1).decode("ascii").lower()
                                     for m in _ENCODED_WORD.finditer(chunk))
            if b"'" in chunk:
                self.charsets.update(m.group(1).decode("ascii").lower()
                                     for m in _RFC2231_CHARSET.finditer(chunk))
        if new_field:
            self.current = None
            name = chunk.split(b":", 1)[0].strip().lower()
            if name in _FIELD_NAMES and not self.unusable:
                kind = self.fields.setdefault(name, [])
                if len(kind) == 2 * _FIELDS_EACH:
                    self.kept -= len(kind.pop(_FIELDS_EACH))
                self.current = bytearray()
                kind.append(self.current)
        if self.current is None:
            return
        self.kept += len(chunk)
        if self.kept > self.limit:
            self.unusable, self.current = True, None
            self.fields.clear()
            return
        self.current.extend(chunk)

    def result(self) -> list[tuple[str, str, str]] | None:
        """(lowercased name, unfolded value, the codec it was decoded with);
        ``None`` when the fields did not fit."""
        if self.unusable:
            return None
        out = []
        for name, raws in self.fields.items():
            for raw in raws:
                value = bytes(raw).partition(b":")[2].replace(b"\r", b"").replace(b"\n", b"")
                value = value.strip(b" \t")
                try:
                    text, codec = value.decode("utf-8"), "utf-8"
                except UnicodeDecodeError:
                    text, codec = value.decode("latin-1"), "latin-1"
                out.append((name.decode("ascii"), text, codec))
        return out


@dataclass
class _HeaderInfo:
    content_type: str
    params: dict[str, str]
    names: tuple[str, ...]
    filename: str
    name: str
    cte: str
    boundary: bytes | None
    notes: list[str]


def _split_params(value: str) -> list[str]:
    """``value`` cut at the semicolons outside quoted strings (linear time)."""
    if "\\" not in value:  # no quoted pairs: a quote always opens or closes a string
        segments = value.split('"')
        if len(segments) == 1:
            return value.split(";")
        last = len(segments) - 1
        cut: list[str] = []
        held: list[str] = []
        for i, segment in enumerate(segments):
            if i % 2:  # inside a quoted string (the last one may be unterminated)
                held += ('"', segment, '"' if i < last else "")
                continue
            first, *rest = segment.split(";")
            held.append(first)
            if rest:
                cut.append("".join(held))
                cut += rest[:-1]
                held = [rest[-1]]
        cut.append("".join(held))
        return cut
    pieces: list[str] = []
    cur: list[str] = []
    for m in _TOKEN.finditer(value):
        token = m.group()
        if token == ";":
            pieces.append("".join(cur))
            cur = []
        else:
            cur.append(token)
    pieces.append("".join(cur))
    return pieces


def _uncomment(text: str) -> str:
    """``text`` without its (innermost) comments; a comment needs a "("."""
    return _COMMENT.sub("", text) if "(" in text else text


def _decode_words(text: str) -> str:
    """RFC 2047 encoded words (also inside quotes, as Outlook writes names) decoded,
    joined to the text around them as written (``make_header`` would add spaces)."""
    if "=?" not in text:
        return text
    try:
        pieces = decode_header(text)
    except Exception:  # malformed beyond what decode_header tolerates: keep as written
        return text
    out = []
    for chunk, charset in pieces:
        if isinstance(chunk, str):
            out.append(chunk)
            continue
        if charset is None:  # text between encoded words, as decode_header keeps it
            out.append(chunk.decode("raw-unicode-escape", "replace"))
            continue
        try:
            out.append(chunk.decode(charset, "replace"))
        except Exception:  # as in _rfc2231
            out.append(chunk.decode("latin-1"))
    return "".join(out)


def _value(raw: str) -> str:
    """A parameter value as written: a quoted string (quoted pairs undone, anything
    after its closing quote ignored) or a token (comments removed)."""
    raw = raw.strip()
    if raw.startswith('"'):
        if "\\" not in raw:  # no quoted pairs: the string runs to the next quote
            end = raw.find('"', 1)
            return raw[1:end] if end >= 0 else raw[1:]
        m = _QUOTED.match(raw)
        return _QUOTED_PAIR.sub(r"\1", m.group(1)) if m else raw[1:]
    return _uncomment(raw).strip()


def _rfc2231(sections: list[tuple[int, bool, str]]) -> str:
    """RFC 2231 sections (number, percent-encoded?, raw value) joined in number order
    and decoded with the charset of the first section (``charset'lang'value``); an
    unknown charset falls back to UTF-8, then Latin-1.  Of more than
    ``_MAX_SECTIONS`` sections the lowest- and highest-numbered half each are used
    (a name's end, its extension, is never lost)."""
    sections.sort(key=lambda s: s[0])
    if len(sections) > _MAX_SECTIONS:
        half = _MAX_SECTIONS // 2
        sections = sections[:half] + sections[-half:]
    data = bytearray()
    charset = ""
    for i, (_num, encoded, raw) in enumerate(sections):
        value = _value(raw)
        if encoded:
            if i == 0 and value.count("'") >= 2:
                charset, _lang, value = value.split("'", 2)
            data += unquote_to_bytes(value)
        else:
            data += value.encode("utf-8", "surrogatepass")
    try:
        return data.decode(charset.strip() or "us-ascii", "replace")
    except Exception:  # LookupError, ValueError ("utf\x00-8"), a bytes-to-bytes codec, …
        pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _params(pieces: list[str]) -> dict[str, list[str]]:
    """Kept parameters by name, each value decoded, duplicates in order (of more than
    ``_MAX_GROUPS``, the first and the last half each)."""
    groups: list[tuple[str, str | list[tuple[int, bool, str]]]] = []
    sections: dict[str, list[tuple[int, bool, str]]] = {}
    for piece in pieces:
        attr, eq, raw = piece.partition("=")
        if not eq:
            continue
        attr = attr.strip().lower()
        base, star, rest = attr.partition("*")
        if base not in _KEPT_PARAMS:
            continue
        number = rest.rstrip("*")
        if not star:
            groups.append((base, raw))
        elif not number:  # name*=charset'lang'value: one encoded section
            groups.append((base, [(0, True, raw)]))
        elif number.isdigit():  # name*0*=, name*1=, …
            if base not in sections:
                sections[base] = []
                groups.append((base, sections[base]))
            num = int(number) if len(number) < 10 else 10**10
            sections[base].append((num, attr.endswith("*"), raw))
    if len(groups) > _MAX_GROUPS:
        groups = groups[:_MAX_GROUPS // 2] + groups[-(_MAX_GROUPS // 2):]
    out: dict[str, list[str]] = {}
    for base, value in groups:
        text = _value(value) if isinstance(value, str) else _rfc2231(value)
        out.setdefault(base, []).append(_decode_words(text))
    return out


def _interpret(fields: list[tuple[str, str, str]], default_type: str) -> _HeaderInfo:
    by: dict[str, list[tuple[str, str]]] = {}
    for name, text, codec in fields:
        by.setdefault(name, []).append((text, codec))
    info = _HeaderInfo(default_type, {}, (), "", "", "", None, [])
    names: list[str] = []
    cts = by.get("content-type", [])
    if len(cts) > 1:
        info.notes.append("duplicate Content-Type")
    for i, (text, codec) in enumerate(cts):
        pieces = _split_params(text)
        head = _uncomment(pieces[0]).strip().lower()
        if "=" in head:  # "Content-Type: name=x.exe": no type, parameters only
            head, rest = "", pieces
        else:
            rest = pieces[1:]
        values = _params(rest)
        names += values.get("name", []) + values.get("filename", [])
        if i:
            continue
        if _TYPE.match(head):
            info.content_type = head
        else:
            info.notes.append("invalid Content-Type")
        info.params = {k: v[0] for k, v in values.items()}
        info.name = values.get("name", [""])[0]
        boundary = info.params.get("boundary", "").rstrip(" \t")
        if boundary:
            try:
                info.boundary = boundary.encode(codec)
            except UnicodeEncodeError:
                info.boundary = boundary.encode("utf-8", "surrogatepass")
    for text, _codec in by.get("content-disposition", []):
        pieces = _split_params(text)
        values = _params(pieces if "=" in pieces[0] else pieces[1:])
        found = values.get("filename", []) + values.get("name", [])
        if found and not info.filename:
            info.filename = found[0]
        names += found
    ctes = by.get("content-transfer-encoding", [])
    if ctes:
        tokens = _uncomment(ctes[0][0]).split()
        info.cte = tokens[0].lower() if tokens else ""
    if names:
        info.names = tuple(dict.fromkeys(n for n in names if n))
    return info


# --- the parser ----------------------------------------------------------------------

class _Parser:
    def __init__(self, fp: IO[bytes], limits: Limits) -> None:
        self.fp = fp
        self.limits = limits
        self.notes: list[str] = []
        self.stack: list[Part] = []  # open entities, outermost first
        self.bounds: dict[bytes, list[Part]] = {}  # open multiparts by boundary
        self.nbounds = 0
        self.block: _HeaderBlock | None = None  # header block of stack[-1] being read
        self.count = 0
        self.truncated = False
        self.prev_eol = 0  # line-break length of the previous line
        self.win = b""  # the cached window of the file
        self.win_start = -1

    def note(self, text: str) -> None:
        if text not in self.notes and len(self.notes) < _MAX_NOTES:
            self.notes.append(text)

    def run(self, headers: Sequence[tuple[str, str]] | None) -> Structure:
        self.fp.seek(0)
        root = self._new(None, 0 if headers is None else None)
        assert root is not None
        if headers is None:
            self.block = _HeaderBlock(self.limits.header_limit)
        else:
            self._open_body(root, _top_block(headers, self.limits.header_limit), 0)
        pos, at_start = 0, True
        while not self.truncated:
            if self.block is None:  # content: only a delimiter line matters
                found = self._next_delimiter(pos) if self.nbounds else None
                if found is None:
                    break
                pos, self.prev_eol, line, hit = found
                self._on_delimiter(hit[0], hit[1], pos, pos + len(line))
            else:
                line = self._line_at(pos)
                if not line:
                    break
                self._line(line, pos, at_start, _eol(line))
            eol = _eol(line)
            at_start = eol > 0
            pos += len(line)
            self.prev_eol = eol
        if self.block is None or self.truncated:  # the rest is content
            self.fp.seek(0, 2)
            pos = self.fp.tell()
        self.prev_eol = 0
        self._close_above(-1, pos)
        return Structure(root, tuple(self.notes), pos, self.truncated)

    def _window(self, offset: int, after: int = 1024) -> tuple[bytes, int]:
        """File bytes from ``offset`` or before, at least ``after`` of them from
        ``offset`` on unless the file ends first, and the offset they start at.
        One window is cached; a new one starts at ``offset``."""
        win, start = self.win, self.win_start
        if not 0 <= start <= offset or (offset + after > start + len(win)
                                        and len(win) == _WINDOW):
            self.fp.seek(offset)
            win = self.win = self.fp.read(_WINDOW)
            start = self.win_start = offset
        return win, start

    def _line_at(self, pos: int) -> bytes:
        """The line starting at ``pos`` with its line break (at most ``LINE_CAP``
        bytes of it: a longer line comes in pieces); ``b""`` at the end."""
        win, start = self._window(pos, LINE_CAP + 1)
        i = pos - start
        j = win.find(b"\n", i, i + LINE_CAP)
        return win[i:j + 1] if j >= 0 else win[i:i + LINE_CAP]

    def _next_delimiter(self, pos: int) -> tuple[int, int, bytes, tuple[Part, bool]] | None:
        """The first delimiter line of an open multipart that starts at or after
        ``pos`` (at ``pos`` only if a line starts there): its offset, the length of
        the line break before it, the line, and what :meth:`_delimiter` said.
        Searches whole windows for "\n--", so content costs nothing per line."""
        if pos == 0:
            line = self._line_at(0)
            hit = self._delimiter(line, _eol(line)) if line.startswith(b"--") else None
            if hit is not None:
                return 0, 0, line, hit
        need = max(0, pos - 1)  # where the "\n" before the line may be
        while True:
            win, start = self._window(max(0, need - 1))
            i = _find_dashes(win, need - start)
            while i >= 0:
                first = i + 1
                j = win.find(b"\n", first, first + LINE_CAP)
                if j < 0 and len(win) == _WINDOW and len(win) - first < LINE_CAP:
                    break  # the line runs past the window
                line = win[first:j + 1] if j >= 0 else win[first:first + LINE_CAP]
                rest = line[2:].rstrip(b" \t\r\n")  # a cheap test before the full one
                if rest in self.bounds or rest[:-2] in self.bounds:
                    hit = self._delimiter(line, _eol(line))
                    if hit is not None:
                        return start + first, 2 if i and win[i - 1] == 0x0D else 1, line, hit
                i = _find_dashes(win, j if j >= 0 else first)
            else:
                if len(win) < _WINDOW:
                    return None
                need = start + len(win) - 2
                continue
            need = start + i  # a window that holds the whole line
            self._window(need - 1, LINE_CAP + 2)

    def _new(self, parent: Part | None, header_start: int | None,
             message: bool = False) -> Part | None:
        """A new open entity below ``parent`` (``message``: the one inside a
        message/rfc822 part); ``None`` once ``Limits.max_parts`` is spent."""
        self.count += 1
        if self.count > self.limits.max_parts:
            self.truncated = True
            self.note("too many MIME parts")
            return None
        part = Part(header_start, level=len(self.stack), parent=parent)
        if parent is not None:
            part.message_depth = parent.message_depth + (1 if message else 0)
            part.multipart_depth = parent.multipart_depth
            parent.children.append(part)
        self.stack.append(part)
        return part

    def _line(self, line: bytes, pos: int, line_start: bool, eol: int) -> None:
        if line_start and self.nbounds and line.startswith(b"--"):
            hit = self._delimiter(line, eol)
            if hit is not None:
                self._on_delimiter(hit[0], hit[1], pos, pos + len(line))
                return
        block = self.block
        if block is None:
            return  # content
        if not line_start:
            block.add(line, False)  # the rest of a long line
        elif eol and len(line) == eol:  # the blank line
            self.block = None
            self._open_body(self.stack[-1], block, pos + len(line))
        elif line[:1] in (b" ", b"\t"):
            block.add(line, False)
        elif _FIELD_START.match(line):
            block.add(line, True)
        else:  # not a header field: the body starts here
            self.note("missing blank line after part headers")
            self.block = None
            self._open_body(self.stack[-1], block, pos)
            if self.block is not None:  # an attached message begins with this line
                self._line(line, pos, line_start, eol)

    def _delimiter(self, line: bytes, eol: int) -> tuple[Part, bool] | None:
        """(the innermost open multipart whose delimiter this is, closing?)."""
        if not eol and len(line) >= LINE_CAP:
            return None
        rest = line[2:len(line) - eol].rstrip(b" \t\r")
        best: tuple[Part, bool] | None = None
        found = self.bounds.get(rest)
        if found:
            best = (found[-1], False)
        if rest.endswith(b"--"):
            found = self.bounds.get(rest[:-2])
            if found and (best is None or found[-1].level > best[0].level):
                best = (found[-1], True)
        return best

    def _on_delimiter(self, multipart: Part, closing: bool, pos: int, after: int) -> None:
        self._close_above(multipart.level, pos)
        if closing:
            multipart.closed = True
            return
        if multipart.closed:
            self.note("part after final boundary")
            multipart.closed = False
        if self._new(multipart, after) is not None:
            self.block = _HeaderBlock(self.limits.header_limit)

    def _close_above(self, level: int, pos: int) -> None:
        """Close every open entity deeper than ``level`` at a delimiter line (or the
        end of the body) starting at ``pos``."""
        end = pos - self.prev_eol
        while len(self.stack) > level + 1:
            part = self.stack.pop()
            if part.body_start < 0:  # cut short inside its header block
                assert self.block is not None
                self._apply_headers(part, self.block)  # (a boundary is never registered)
                self.block = None
                part.body_start = part.end = pos
            else:
                part.end = max(part.body_start, end)
            if part.boundary is not None:
                self.bounds[part.boundary].pop()
                if not self.bounds[part.boundary]:
                    del self.bounds[part.boundary]
                self.nbounds -= 1
                if not part.closed:
                    self.note("missing final boundary" if part.children
                              else "boundary never appears")

    def _apply_headers(self, part: Part, block: _HeaderBlock) -> bytes | None:
        """Fill ``part`` from its header block; returns the boundary parameter."""
        if block.big:
            self.note("part header too large")
        part.header_charsets = frozenset(block.charsets)
        fields = block.result()
        if fields is None:
            part.headers_usable = False
            return None
        parent = part.parent
        digest = (parent is not None and parent.is_multipart
                  and parent.content_type == "multipart/digest")
        info = _interpret(fields, "message/rfc822" if digest else "text/plain")
        for text in info.notes:
            self.note(text)
        part.content_type = info.content_type
        part.params = info.params
        part.names = info.names
        part.filename = info.filename
        part.name = info.name
        part.cte = info.cte
        return info.boundary

    def _open_body(self, part: Part, block: _HeaderBlock, body_start: int) -> None:
        """The header block of ``part`` (top of the stack) ended: look at what follows."""
        part.body_start = body_start
        boundary = self._apply_headers(part, block)
        ctype = part.content_type
        if ctype.startswith("multipart/"):
            if boundary is None:
                self.note("no boundary parameter")
            elif part.multipart_depth >= self.limits.max_multipart_depth:
                part.too_deep = True
                self.note("multipart nested too deep")
            else:
                part.boundary = boundary
                part.multipart_depth += 1
                self.bounds.setdefault(boundary, []).append(part)
                self.nbounds += 1
        elif ctype in MESSAGE_TYPES and self.limits.rfc822 and part.cte in IDENTITY_CTES:
            if part.message_depth >= self.limits.max_rfc822_depth:
                part.too_deep = True
                self.note("message/rfc822 nested too deep")
            elif self._new(part, body_start, message=True) is not None:
                self.block = _HeaderBlock(self.limits.header_limit)


_DASHES = re.compile(rb"\n--")


def _find_dashes(data: bytes, pos: int) -> int:
    """``data.find(b"\\n--", pos)`` for ``pos >= 0``; the regex engine's literal
    search is about twice as fast as ``bytes.find`` on long content (base64)."""
    m = _DASHES.search(data, pos)
    return m.start() if m else -1


def _eol(line: bytes) -> int:
    return 2 if line.endswith(b"\r\n") else 1 if line.endswith(b"\n") else 0


def _top_block(headers: Sequence[tuple[str, str]], limit: int) -> _HeaderBlock:
    """The Content-* fields of the top-level header list as a header block."""
    block = _HeaderBlock(limit)
    for name, value in headers:
        if name.strip().lower().encode("ascii", "replace") not in _FIELD_NAMES:
            continue
        text = f"{name}: {value}".replace("\r\n", "\n").replace("\r", "\n")
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = text.encode("utf-8", "replace")
        for i, line in enumerate(raw.split(b"\n")):
            block.add(line + b"\r\n", i == 0)
    return block
