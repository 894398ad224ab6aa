"""Header-level content checks (SPEC §4 "header / eoh"): words in the
Subject and in the From display name, unedited forwards, and charset
blocking (``block_chinese``, ``block_charsets``).

Every function here is pure and total: header values arrive as the milter
gives them (8-bit bytes as surrogate-escaped ``str``, folds included, any
length, any garbage) and nothing raises on them.  Verdicts are
:class:`~bmslib.policy.decision.Decision` rejects with 550 5.7.1, never
delayed; their log texts are one line (CR/LF removed) but not escaped —
the caller escapes them (:func:`bmslib.log.escape`).

Charset names are compared in :func:`normalize_charset` form.  Python's
codec registry is consulted only for names it has a codec module for, so a
sender inventing a new charset name per message cannot grow the registry's
failure cache (``encodings._cache`` keeps every unknown name forever).
"""

from __future__ import annotations

import binascii
import codecs
import encodings
import encodings.aliases
import pkgutil
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from types import MappingProxyType
from typing import Final

from .address import Address
from .decision import CONTINUE, Decision

# Codec modules of the running Python ("big5", "gb18030", "utf_8", ...).
_CODEC_MODULES: Final = frozenset(m.name for m in pkgutil.iter_modules(encodings.__path__))

# Names seen in mail that Python does not know, to the name it does (or,
# for charsets Python has no codec for, to one spelling of them).
_EXTRA_ALIASES: Final = MappingProxyType({
    "euc-tw": "euc-tw",
    "iso-2022-cn": "iso-2022-cn",
    "iso-2022-cn-ext": "iso-2022-cn-ext",
    "cn-big5": "big5",
    "x-x-big5": "big5",
    "big5-tw": "big5",
    "x-euc-tw": "euc-tw",
    "x-euc-cn": "gb2312",
    "x-gb2312": "gb2312",
})

_MAX_CHARSET_NAME = 64


def normalize_charset(name: str) -> str:
    """The comparable form of a charset name: lowercased, stripped of quotes
    and whitespace, then mapped to Python's codec name when Python has that
    codec (``BIG5``, ``csbig5``, ``cn-big5`` -> ``big5``; ``x-gbk``, ``cp936``
    -> ``gbk``; an ``x-`` prefix is dropped when that makes a known name),
    else the lowercased name itself (``iso-2022-cn``, which Python cannot
    decode, is still blockable by name)."""
    text = name.strip().strip("\"'").strip().lower()[:_MAX_CHARSET_NAME]
    text = _EXTRA_ALIASES.get(text, text)
    candidate = text
    while True:
        known = _python_codec(candidate)
        if known is not None:
            return known
        if not candidate.startswith("x-"):  # x-gbk, x-x-big5, x-mac-roman
            return text
        candidate = _EXTRA_ALIASES.get(candidate[2:], candidate[2:])
        if candidate in _EXTRA_ALIASES.values():
            return candidate


def _python_codec(name: str) -> str | None:
    """Python's name for the codec called ``name``, or None when it has none.
    Only names that lead to a codec module reach :func:`codecs.lookup`."""
    key = encodings.normalize_encoding(name).replace(".", "_")
    module = encodings.aliases.aliases.get(key, key)
    if not module or module not in _CODEC_MODULES:
        return None
    try:
        return codecs.lookup(module).name
    except (LookupError, ValueError):
        return None


CJK_CHARSETS: Final = frozenset(normalize_charset(n) for n in (
    "big5", "big5-hkscs", "cn-big5", "x-x-big5", "gb2312", "gbk", "x-gbk", "cp936",
    "gb18030", "hz-gb-2312", "iso-2022-cn", "iso-2022-cn-ext", "euc-cn", "x-euc-tw",
    "euc-tw"))


@dataclass(frozen=True)
class ContentSettings:
    blocked_charsets: frozenset[str] = frozenset()  # normalize_charset() names
    porn_words: tuple[str, ...] = ()  # lowercased; matched case-insensitively
    spam_words: tuple[str, ...] = ()  # matched case-sensitively; length <= 1 ignored
    from_words: tuple[str, ...] = ()  # lowercased; matched case-insensitively
    # recipients refusing unedited forwards: lowercased "user@domain", or
    # "@domain" for every user of the domain
    block_forward: frozenset[str] = frozenset()


def content_settings(*, block_chinese: bool, block_charsets: Iterable[str],
                     porn_words: Iterable[str], spam_words: Iterable[str],
                     from_words: Iterable[str], block_forward: Iterable[str]
                     ) -> ContentSettings:
    """Settings from the config values: charsets normalized (``block_chinese``
    adds :data:`CJK_CHARSETS`), case-insensitive words lowercased, empty words
    and spam words of one character dropped, addresses lowercased and
    stripped of ``<>``."""
    charsets = {normalize_charset(c) for c in block_charsets if c.strip()}
    if block_chinese:
        charsets |= CJK_CHARSETS
    return ContentSettings(
        blocked_charsets=frozenset(charsets),
        porn_words=tuple(w.lower() for w in porn_words if w.strip()),
        spam_words=tuple(w for w in spam_words if len(w) > 1 and w.strip()),
        from_words=tuple(w.lower() for w in from_words if w.strip()),
        block_forward=frozenset(a.strip().strip("<>").strip().lower()
                                for a in block_forward if a.strip().strip("<>").strip()))


# --- decoding ----------------------------------------------------------------------------

# RFC 2047 encoded word, with an optional RFC 2231 language (=?big5*zh?B?...?=).
_ENCODED_WORD = re.compile(r"=\?([^?*\s]+)(?:\*[^?\s]*)?\?([qQbB])\?([^?\s]*)\?=")
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_LINE_BREAK = re.compile(r"[\r\n]+")
_BAD_SURROGATE = re.compile(r"[\ud800-\udc7f\udd00-\udfff]")


def header_bytes(raw: str) -> bytes:
    """The header value as the bytes the MTA sent (surrogate escapes back to
    8-bit bytes; a surrogate that cannot have come from one becomes U+FFFD)."""
    try:
        return raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _BAD_SURROGATE.sub("\ufffd", raw).encode("utf-8", "surrogateescape")


def _unfolded_text(raw: str) -> str:
    """Folds joined, 8-bit decoded as UTF-8 when valid, else as latin-1."""
    data = _FOLD.sub(b"", header_bytes(raw))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


_MAX_ENCODED_WORD = 8192  # RFC 2047 says 75; some codecs (punycode) are quadratic


def _decode_word(match: re.Match[str]) -> str:
    """One encoded word's text; the word as written when it cannot be decoded
    (a charset Python lacks, broken base64, longer than 8 KiB)."""
    codec = _python_codec(normalize_charset(match.group(1)))
    if codec is None or len(match.group(3)) > _MAX_ENCODED_WORD:
        return match.group()
    encoded = match.group(3).encode("ascii", "replace")
    try:
        if match.group(2) in "qQ":
            data = binascii.a2b_qp(encoded, header=True)
        else:
            data = binascii.a2b_base64(encoded + b"=" * (-len(encoded) % 4))
        return data.decode(codec, "replace")
    except Exception:  # codecs are arbitrary code: no failure of one may escape
        return match.group()


def _decode_words(text: str) -> str:
    out: list[str] = []
    pos = 0
    previous_word = False
    for match in _ENCODED_WORD.finditer(text):
        between = text[pos:match.start()]
        if not (previous_word and (between.isspace() or not between)):
            out.append(between)  # whitespace between two encoded words is dropped
        out.append(_decode_word(match))
        pos = match.end()
        previous_word = True
    out.append(text[pos:])
    return "".join(out)


def decode_header_text(raw: str) -> str:
    """A header value as a reader sees it: folds unfolded, raw 8-bit decoded
    as UTF-8 (else latin-1), RFC 2047 encoded words decoded (undecodable bytes
    replaced; a word in an unknown charset or with broken base64 left as
    written), any remaining CR/LF turned into a space.  Never raises."""
    return _LINE_BREAK.sub(" ", _decode_words(_unfolded_text(raw)))


def header_charsets(raw: str) -> frozenset[str]:
    """The charsets (normalized) named by RFC 2047 encoded words in the value."""
    text = _unfolded_text(raw)
    return frozenset(normalize_charset(m.group(1)) for m in _ENCODED_WORD.finditer(text))


# --- raw 8-bit CJK -----------------------------------------------------------------------

_CJK_PROBE_BYTES = 8192
_IDEOGRAPH_MIN, _IDEOGRAPH_MAX = 0x4E00, 0x9FFF


def _frequent(ch: str, charset: str) -> bool:
    """``ch`` is an ideograph of the charset's level-1 (frequent) block:
    Big5 A440-C67E, GB2312 B0A1-D7F9.  Real Chinese text is almost all
    level-1; latin-1 words read as Big5/GB (``Übermäßig``) almost never are."""
    if not _IDEOGRAPH_MIN <= ord(ch) <= _IDEOGRAPH_MAX:
        return False
    try:
        if charset == "big5":
            return 0xA4 <= ch.encode("big5")[0] <= 0xC6
        return 0xB0 <= ch.encode("gb2312")[0] <= 0xD7
    except UnicodeEncodeError:
        return False


def raw_cjk(raw: str) -> tuple[str, str] | None:
    """``(charset, text)`` when the value is raw 8-bit that is not UTF-8 and
    reads strictly as Big5 or GB18030 as Chinese: at least 2 ideographs
    (U+4E00-U+9FFF) of the charset's frequent block, making up at least half
    of the non-ASCII characters.  Only the first 8 KiB are examined."""
    data = header_bytes(raw)[:_CJK_PROBE_BYTES]
    if data.isascii():
        return None
    try:
        data.decode("utf-8")
        return None
    except UnicodeDecodeError:
        pass
    best: tuple[int, str, str] | None = None
    for charset in ("big5", "gb18030"):
        try:
            text = codecs.getincrementaldecoder(charset)("strict").decode(data, final=False)
        except UnicodeDecodeError:
            continue
        frequent = sum(1 for ch in text if _frequent(ch, charset))
        non_ascii = sum(1 for ch in text if not ch.isascii())
        if frequent >= 2 and 2 * frequent >= non_ascii and (best is None or frequent > best[0]):
            best = (frequent, charset, text)
    return None if best is None else (best[1], best[2])


# --- checks ------------------------------------------------------------------------------

def _one_line(text: str) -> str:
    return _LINE_BREAK.sub(" ", text)


def _charset_reject(charset: str, where: str) -> Decision:
    return Decision.reject("charset", f"We don't accept mail in that charset ({charset}).",
                           log=_one_line(f"charset {charset} in {where}"))


def check_charsets(settings: ContentSettings, charsets: Iterable[str], where: str) -> Decision:
    """The first of ``charsets`` (any spelling) that is blocked: 550 naming it;
    ``where`` ("a text part", "Subject: ...") goes into the log line."""
    if not settings.blocked_charsets:
        return CONTINUE
    for name in charsets:
        charset = normalize_charset(name)
        if charset in settings.blocked_charsets:
            return _charset_reject(charset, where)
    return CONTINUE


def check_subject(settings: ContentSettings, raw: str) -> Decision:
    """Charset first: an encoded word in a blocked charset, or (when a CJK
    charset is blocked) a raw 8-bit Big5/GB18030 Subject (:func:`raw_cjk`).
    A UTF-8 Subject in Chinese is not blocked: only charsets are.  Then the
    words: a porn word anywhere in the decoded Subject (any case) or a spam
    word (exact case) gives "That subject is not allowed."."""
    subject = decode_header_text(raw)
    if settings.blocked_charsets:
        blocked = sorted(header_charsets(raw) & settings.blocked_charsets)
        if blocked:
            return _charset_reject(blocked[0], f"Subject: {subject}")
        if settings.blocked_charsets & CJK_CHARSETS:
            found = raw_cjk(raw)
            if found is not None:
                return _charset_reject(found[0], f"Subject: {found[1]}")
    lowered = subject.lower()
    if (any(w and w in lowered for w in settings.porn_words)
            or any(len(w) > 1 and w in subject for w in settings.spam_words)):
        return Decision.reject("subject", "That subject is not allowed.",
                               log=_one_line(f"Subject: {subject}"))
    return CONTINUE


_MAX_ADDRESS_PARSE = 16384
_MAX_COMMENT_NESTING = 32  # email._parseaddr recurses once per "(" level
_ANGLE_ADDR = re.compile(r"<[^<>]*>")
_NOT_AN_ADDRESS = re.compile(r'[\s<>"]')


def from_display_names(raw: str) -> str:
    """The display names of a From value, decoded, joined by ", ".  A value
    without ``@`` or ``<`` is all name; an "address" the parser made of
    words (an unbalanced quote) counts as name text; a value the parser
    cannot take (too long, too deeply nested, it fails or finds nothing)
    counts as its text without the ``<...>`` parts."""
    text = _unfolded_text(raw)
    names: list[str]
    if "@" not in text and "<" not in text:
        names = [text]
    elif len(text) <= _MAX_ADDRESS_PARSE and text.count("(") <= _MAX_COMMENT_NESTING:
        try:
            pairs = getaddresses([text])
            names = []
            for name, addr in pairs:
                names.append(name)
                if _NOT_AN_ADDRESS.search(addr):
                    names.append(_ANGLE_ADDR.sub(" ", addr))
            if not any(name or addr for name, addr in pairs):  # strict parsers give ('', '')
                names = [_ANGLE_ADDR.sub(" ", text)]
        except Exception:  # the stdlib parser on hostile input: fall back
            names = [_ANGLE_ADDR.sub(" ", text)]
    else:
        names = [_ANGLE_ADDR.sub(" ", text)]
    return _LINE_BREAK.sub(" ", ", ".join(_decode_words(n) for n in names if n))


def check_from(settings: ContentSettings, raw: str) -> Decision:
    """A ``from_words`` word (any case) or spam word (exact case) in the From
    display name: "No soliciting."; a porn word (any case): "Watch your
    language.".  The address itself is not searched."""
    if not (settings.from_words or settings.spam_words or settings.porn_words):
        return CONTINUE
    name = from_display_names(raw)
    lowered = name.lower()
    log = _one_line(f"From: {decode_header_text(raw)}")
    if (any(w and w in lowered for w in settings.from_words)
            or any(len(w) > 1 and w in name for w in settings.spam_words)):
        return Decision.reject("from words", "No soliciting.", log=log)
    if any(w and w in lowered for w in settings.porn_words):
        return Decision.reject("from words", "Watch your language.", log=log)
    return CONTINUE


_FORWARD_PREFIXES = ("fwd:", "fw:", "[fw")


def check_forward(settings: ContentSettings, raw_subject: str,
                  recipients: Sequence[Address]) -> Decision:
    """A recipient listed in ``block_forward`` (as ``user@domain`` or
    ``@domain``) and a Subject starting, after whitespace and in any case,
    with ``fwd:``, ``fw:`` or ``[fw``: "I find unedited forwards annoying."."""
    if not settings.block_forward:
        return CONTINUE
    subject = decode_header_text(raw_subject).lstrip().lower()
    if not subject.startswith(_FORWARD_PREFIXES):
        return CONTINUE
    for rcpt in recipients:
        if (rcpt.mailbox.lower() in settings.block_forward
                or (rcpt.domain and f"@{rcpt.domain}" in settings.block_forward)):
            return Decision.reject("forward", "I find unedited forwards annoying.",
                                   log=_one_line(f"unedited forward to {rcpt.mailbox}"))
    return CONTINUE
