"""Script removal from HTML text (``[defang] scan_html``).

:func:`remove_scripts` cuts every ``<script …>…</script>`` element out of a string
and puts :data:`SCRIPT_WARNING` in its place.  Matching is case-insensitive and
follows what browsers do, not what is well-formed:

* an element starts at ``<script`` followed by white space, ``/``, ``>`` or the end
  of the text (``<scripts>`` is another tag); attributes may span lines;
* it ends at the first ``</script`` (again followed by white space, ``/`` or ``>``)
  up to the next ``>``, as the HTML tokenizer ends script data there even inside a
  JavaScript string; without such an end tag (or without its ``>``) it runs to the
  end of the text;
* everything else, byte for byte, stays: the text is never re-serialised.

Outside scripts, every start tag is disarmed in place: an event-handler
attribute (``onclick=``, ``onload=``, ...) is renamed ``data-bms-removed-onclick=``
(inert: browsers ignore unknown ``data-`` attributes) and a ``javascript:`` URL
in an attribute becomes ``blocked:`` (a scheme nothing runs).  Iframes, styles
and entity-encoded schemes (``jav&#x61;script:``) are left alone.
"""

from __future__ import annotations

import re

SCRIPT_WARNING = "<!-- WARNING: embedded script removed -->"

_OPEN = re.compile(r"<script(?=[\s/>]|\Z)", re.IGNORECASE)
_CLOSE = re.compile(r"</script(?=[\s/>]|\Z)[^>]*(?:>|\Z)", re.IGNORECASE)
_TAG = re.compile(r"<[A-Za-z][^<>]*>")  # a start tag; attributes may span lines
_HANDLER = re.compile(r"(?<=[\s/\"'])(on[a-z]+\s*=)", re.IGNORECASE)
_JS_URL = re.compile(r"(=\s*[\"']?\s*)javascript(\s*:)", re.IGNORECASE)


def remove_scripts(text: str) -> tuple[str, int]:
    """``text`` without script elements and with its tags disarmed, and how
    many scripts, handlers and ``javascript:`` URLs went."""
    out: list[str] = []
    pos = count = 0
    while True:
        start = _OPEN.search(text, pos)
        if start is None:
            break
        out.append(text[pos:start.start()])
        out.append(SCRIPT_WARNING)
        count += 1
        close = _CLOSE.search(text, start.end())
        pos = len(text) if close is None else close.end()
    out.append(text[pos:])
    disarmed, n = _disarm("".join(out) if count else text)
    return disarmed, count + n


def _disarm(text: str) -> tuple[str, int]:
    if "=" not in text:
        return text, 0
    found = 0

    def tag(m: re.Match[str]) -> str:
        nonlocal found
        t, handlers = _HANDLER.subn(r"data-bms-removed-\1", m.group())
        t, urls = _JS_URL.subn(r"\1blocked\2", t)
        found += handlers + urls
        return t

    result = _TAG.sub(tag, text)
    return (result, found) if found else (text, 0)
