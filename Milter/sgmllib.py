"""pymilter's ``Milter.sgmllib``: ``SGMLParser``, the event-driven parser of
Python 2's ``sgmllib`` that pymilter's ``mime.py`` subclasses to filter HTML.

Feed text with :meth:`SGMLParser.feed` (any split: incomplete constructs
wait for more text) and finish with :meth:`SGMLParser.close`.  Events:

* a start tag ``<tag a=v ...>`` calls ``start_tag(attrs)`` (and the tag is
  pushed on :attr:`stack`, so its end tag calls ``end_tag()``), else
  ``do_tag(attrs)``, else ``unknown_starttag(tag, attrs)``; ``attrs`` is a
  list of (lower-case name, value) with quotes removed and character and
  entity references in values resolved; ``get_starttag_text()`` is the raw
  text of the tag;
* an end tag ``</tag>`` closes the open ``start_`` tags down to the
  matching one (``end_tag()`` for each), else ``unknown_endtag(tag)``;
  ``report_unbalanced(tag)`` when a tag with an ``end_`` method was not
  open;
* text calls ``handle_data``; ``&#N;`` calls ``handle_charref('N')``,
  ``&name;`` ``handle_entityref('name')``; ``<!--x-->`` calls
  ``handle_comment('x')``; ``<?x>`` ``handle_pi('x')``; ``<!DOCTYPE x>``
  ``handle_decl('DOCTYPE x')``; marked sections ``<![if x]>``
  ``unknown_decl('if x')``.

Unlike Python 2's sgmllib, the SGML "null end tag" shorthand ``<tag/data/``
is not recognised: ``<br/>`` is the start tag ``br`` (an XHTML empty
element), so a stray slash can never stall the parser and let the rest of a
document through unparsed.

>>> class Tags(SGMLParser):
...     def __init__(self):
...         super().__init__()
...         self.seen = []
...     def unknown_starttag(self, tag, attrs):
...         self.seen.append((tag, attrs))
...     def unknown_endtag(self, tag):
...         self.seen.append('/' + tag)
>>> p = Tags()
>>> p.feed('<A HREF="x&amp;y" target=_top>link</a><br/>')
>>> p.close()
>>> p.seen
[('a', [('href', 'x&y'), ('target', '_top')]), '/a', ('br', [])]
"""

from __future__ import annotations

import _markupbase
import re
from collections.abc import Callable
from html.entities import name2codepoint
from typing import Any

__all__ = ["SGMLParseError", "SGMLParser"]

_interesting = re.compile(r"[&<]")
_starttagopen = re.compile(r"<[>a-zA-Z]")
_tagfind = re.compile(r"[a-zA-Z][-_.a-zA-Z0-9]*")
_endbracket = re.compile(r"[<>]")
_endtag = re.compile(r"</\s*([a-zA-Z][-_.a-zA-Z0-9]*)?\s*>")
_charref = re.compile(r"&#([0-9]+)[^0-9]")
_entityref = re.compile(r"&([a-zA-Z][-.a-zA-Z0-9]*)[^a-zA-Z0-9]")
_incomplete = re.compile(
    r"&([a-zA-Z][a-zA-Z0-9]*|#[0-9]*)?|<([a-zA-Z][^<>]*|/([a-zA-Z][^<>]*)?|![^<>]*)?")
_attrfind = re.compile(
    r"\s*/?\s*([a-zA-Z_][-:.a-zA-Z_0-9]*)"
    r"(\s*=\s*('[^']*'|\"[^\"]*\"|[][\-a-zA-Z0-9./,:;+*%?!&$()_#=~'\"@]*))?")
_ref_in_value = re.compile(r"&(?:#([0-9]+)|([a-zA-Z][-.a-zA-Z0-9]*));")


class SGMLParseError(RuntimeError):
    """Exception raised for all parse errors."""


class SGMLParser(_markupbase.ParserBase):
    """The Python 2 ``sgmllib.SGMLParser`` event API (see the module text)."""

    #: Entity names ``convert_entityref`` knows (the HTML 4 set, as text).
    entitydefs: dict[str, str] = {name: chr(cp) for name, cp in name2codepoint.items()}

    def __init__(self, verbose: int = 0) -> None:
        self.verbose = verbose
        self.reset()

    def reset(self) -> None:
        """Forget all state: unprocessed text, open tags, modes."""
        self.rawdata = ""
        self.stack: list[str] = []
        self.lasttag = "???"
        self.nomoretags = 0
        self.literal = 0
        self._starttag_text: str | None = None
        super().reset()

    def setnomoretags(self) -> None:
        """Treat the rest of the input as text (no tags recognised)."""
        self.nomoretags = self.literal = 1

    def setliteral(self, *args: Any) -> None:
        """Treat the input as text until the next end tag (CDATA)."""
        self.literal = 1

    def feed(self, data: str) -> None:
        """Process ``data``; an incomplete construct at its end waits."""
        self.rawdata += data
        self.goahead(0)

    def close(self) -> None:
        """Process everything left, incomplete constructs as text."""
        self.goahead(1)

    def error(self, message: str) -> None:
        raise SGMLParseError(message)

    def get_starttag_text(self) -> str | None:
        """The raw text of the most recent start tag."""
        return self._starttag_text

    # -- the scanner ---------------------------------------------------------

    def goahead(self, end: int) -> None:
        """Process as much of :attr:`rawdata` as is complete (everything when
        ``end`` is true)."""
        rawdata = self.rawdata
        i, n = 0, len(rawdata)
        while i < n:
            if self.nomoretags:
                self.handle_data(rawdata[i:n])
                i = n
                break
            found = _interesting.search(rawdata, i)
            j = found.start() if found else n
            if i < j:
                self.handle_data(rawdata[i:j])
            i = j
            if i == n:
                break
            k = self._markup(i) if rawdata[i] == "<" else self._reference(i)
            if k is None:
                k = self._stray(i, n)
            if k < 0:
                break
            i = k
        if end and i < n:
            self.handle_data(rawdata[i:n])
            i = n
        self.rawdata = rawdata[i:]

    def _markup(self, i: int) -> int | None:
        """Parse the construct at ``<``: the new index, -1 if incomplete,
        None if it is no construct."""
        rawdata = self.rawdata
        if _starttagopen.match(rawdata, i):
            if self.literal:
                self.handle_data("<")
                return i + 1
            return self.parse_starttag(i)
        if rawdata.startswith("</", i):
            k = self.parse_endtag(i)
            if k >= 0:
                self.literal = 0
            return k
        if self.literal:
            if len(rawdata) > i + 1:
                self.handle_data("<")
                return i + 1
            return -1
        if rawdata.startswith("<!--", i):
            return self.parse_comment(i)
        if rawdata.startswith("<?", i):
            return self.parse_pi(i)
        if rawdata.startswith("<!", i):
            return self.parse_declaration(i)
        return None

    def _reference(self, i: int) -> int | None:
        """Parse a reference at ``&``: the new index or None if it is none."""
        rawdata = self.rawdata
        if self.literal:
            self.handle_data("&")
            return i + 1
        for pattern, handler in ((_charref, self.handle_charref),
                                 (_entityref, self.handle_entityref)):
            m = pattern.match(rawdata, i)
            if m:
                handler(m.group(1))
                k = m.end()
                return k if rawdata[k - 1] == ";" else k - 1
        return None

    def _stray(self, i: int, n: int) -> int:
        """A ``<`` or ``&`` that starts nothing complete: text, or wait."""
        m = _incomplete.match(self.rawdata, i)
        if not m:
            self.handle_data(self.rawdata[i])
            return i + 1
        j = m.end()
        if j == n:
            return -1  # really incomplete: wait for more
        self.handle_data(self.rawdata[i:j])
        return j

    def parse_pi(self, i: int) -> int:
        """``<?...>``: calls ``handle_pi``; the index after it or -1."""
        j = self.rawdata.find(">", i + 2)
        if j < 0:
            return -1
        self.handle_pi(self.rawdata[i + 2:j])
        return j + 1

    def parse_declaration(self, i: int) -> int:
        """``<!...>``; a declaration the SGML grammar rejects is text."""
        try:
            return super().parse_declaration(i)
        except (AssertionError, SGMLParseError):
            j = self.rawdata.find(">", i)
            if j < 0:
                return -1
            self.handle_data(self.rawdata[i:j + 1])
            return j + 1

    def parse_starttag(self, i: int) -> int:
        """``<tag ...>``: dispatches it; the index after it or -1."""
        rawdata = self.rawdata
        bracket = _endbracket.search(rawdata, i + 1)
        if not bracket:
            return -1
        j = bracket.start()
        attrs: list[tuple[str, str]] = []
        if rawdata.startswith("<>", i):
            k, tag = j, self.lasttag  # "<>": the previous tag again
        else:
            m = _tagfind.match(rawdata, i + 1)
            if not m:
                self.error("unexpected call to parse_starttag")
                return -1
            k = m.end()
            tag = self.lasttag = rawdata[i + 1:k].lower()
        while k < j:
            m = _attrfind.match(rawdata, k)
            if not m or m.end() == k:
                break
            name, rest, value = m.group(1, 2, 3)
            if not rest:
                value = name
            else:
                if value[:1] == value[-1:] and value[:1] in ("'", '"') and len(value) > 1:
                    value = value[1:-1]
                value = _ref_in_value.sub(self._convert_ref, value)
            attrs.append((name.lower(), value))
            k = m.end()
        if rawdata[j] == ">":
            j += 1
        self._starttag_text = rawdata[i:j]
        self.finish_starttag(tag, attrs)
        return j

    def _convert_ref(self, m: re.Match[str]) -> str:
        if m.group(1):
            text = self.convert_charref(m.group(1))
        else:
            text = self.convert_entityref(m.group(2))
        return m.group() if text is None else text

    def parse_endtag(self, i: int) -> int:
        """``</tag>``: dispatches it; the index after it or -1."""
        m = _endtag.match(self.rawdata, i)
        if not m:
            close = self.rawdata.find(">", i)
            if close < 0:
                return -1
            self.handle_data(self.rawdata[i:close + 1])  # "</ 1>": not a tag
            return close + 1
        self.finish_endtag((m.group(1) or "").lower())
        return m.end()

    # -- tag dispatch --------------------------------------------------------

    def finish_starttag(self, tag: str, attrs: list[tuple[str, str]]) -> int:
        """Dispatch a start tag: 1 if pushed, 0 for ``do_``, -1 if unknown."""
        method = getattr(self, "start_" + tag, None)
        if method is not None:
            self.stack.append(tag)
            self.handle_starttag(tag, method, attrs)
            return 1
        method = getattr(self, "do_" + tag, None)
        if method is not None:
            self.handle_starttag(tag, method, attrs)
            return 0
        self.unknown_starttag(tag, attrs)
        return -1

    def finish_endtag(self, tag: str) -> None:
        """Dispatch an end tag (``""``, from ``</>``, closes the last one)."""
        if not tag:
            found = len(self.stack) - 1
            if found < 0:
                self.unknown_endtag(tag)
                return
        elif tag not in self.stack:
            if getattr(self, "end_" + tag, None) is not None:
                self.report_unbalanced(tag)
            else:
                self.unknown_endtag(tag)
            return
        else:
            found = len(self.stack) - 1 - self.stack[::-1].index(tag)
        while len(self.stack) > found:
            open_tag = self.stack[-1]
            method = getattr(self, "end_" + open_tag, None)
            if method is not None:
                self.handle_endtag(open_tag, method)
            else:
                self.unknown_endtag(open_tag)
            del self.stack[-1]

    def handle_starttag(self, tag: str, method: Callable[[list[tuple[str, str]]], object],
                        attrs: list[tuple[str, str]]) -> None:
        method(attrs)

    def handle_endtag(self, tag: str, method: Callable[[], object]) -> None:
        method()

    def report_unbalanced(self, tag: str) -> None:
        if self.verbose:
            print("*** Unbalanced </" + tag + ">")
            print("*** Stack:", self.stack)

    # -- references ----------------------------------------------------------

    def convert_charref(self, name: str) -> str | None:
        """The character ``&#name;`` stands for, None if out of range."""
        try:
            n = int(name)
        except ValueError:
            return None
        if 0 <= n < 0x110000 and not 0xD800 <= n < 0xE000:
            return self.convert_codepoint(n)
        return None

    def convert_codepoint(self, codepoint: int) -> str:
        return chr(codepoint)

    def handle_charref(self, name: str) -> None:
        text = self.convert_charref(name)
        if text is None:
            self.unknown_charref(name)
        else:
            self.handle_data(text)

    def convert_entityref(self, name: str) -> str | None:
        """The text ``&name;`` stands for, None if unknown."""
        return self.entitydefs.get(name)

    def handle_entityref(self, name: str) -> None:
        text = self.convert_entityref(name)
        if text is None:
            self.unknown_entityref(name)
        else:
            self.handle_data(text)

    # -- events for subclasses to override -------------------------------------

    def handle_data(self, data: str) -> None:
        pass

    def handle_comment(self, data: str) -> None:
        pass

    def handle_decl(self, decl: str) -> None:
        pass

    def handle_pi(self, data: str) -> None:
        pass

    def unknown_decl(self, data: str) -> None:
        pass

    def unknown_starttag(self, tag: str, attrs: list[tuple[str, str]]) -> None:
        pass

    def unknown_endtag(self, tag: str) -> None:
        pass

    def unknown_charref(self, ref: str) -> None:
        pass

    def unknown_entityref(self, ref: str) -> None:
        pass
