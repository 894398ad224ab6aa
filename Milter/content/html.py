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

Only ``<script>`` elements are handled: event-handler attributes, ``javascript:``
URLs, iframes and styles are left alone (as the original bms did).
"""

from __future__ import annotations

import re

SCRIPT_WARNING = "<!-- WARNING: embedded script removed -->"

_OPEN = re.compile(r"<script(?=[\s/>]|\Z)", re.IGNORECASE)
_CLOSE = re.compile(r"</script(?=[\s/>]|\Z)[^>]*(?:>|\Z)", re.IGNORECASE)


def remove_scripts(text: str) -> tuple[str, int]:
    """``text`` without script elements, and how many were removed."""
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
    if not count:
        return text, 0
    out.append(text[pos:])
    return "".join(out), count
