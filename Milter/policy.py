"""pymilter's ``Milter.policy``: ``MTAPolicy``, per-sender policy from a
sendmail-style access file (pymilter's ``getPolicy('SPF-Fail')`` and the
like).

pymilter reads the Berkeley DB that ``makemap`` builds; this module reads
the text source of that map (one ``KEY VALUE`` line each, ``#`` comments),
so no DB module is needed: a ``.db`` path is read from the text file beside
it (``access.db`` -> ``access``).  Keys are ``Prefix:subject`` or
``Prefix!subject`` (maps built with ``tr : !``), case-insensitive.

``getPolicy(pfx)`` tries ``pfx!sender``, ``pfx!domain``, then the parent
domains written with a leading dot (``pfx!.example.com`` for
``a@mail.example.com``: pymilter's git version, after 1.0.5), ``pfx!`` and
``pfx``; the first hit wins, and it returns the value or None.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType
from typing import Any

__all__ = ["MTAPolicy", "read_access"]

_cache: dict[str, tuple[tuple[int, int], dict[str, str]]] = {}
_cache_lock = threading.Lock()


def _text_path(path: str) -> str:
    if path.endswith(".db") and os.path.exists(path[:-3]):
        return path[:-3]
    return path


def _parse(lines: list[str]) -> dict[str, str]:
    table: dict[str, str] = {}
    for raw in lines:
        line = raw.strip().rstrip("\x00")
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("\t") if "\t" in line else line.partition(" ")
        key = key.rstrip("\x00").lower()
        if ":" in key and "!" not in key:
            key = key.replace(":", "!", 1)
        table.setdefault(key, value.strip().rstrip("\x00"))
    return table


def read_access(path: str) -> dict[str, str]:
    """The access file ``path`` as {lower-case ``prefix!subject``: value};
    re-read only when the file changes.  ``OSError`` if it cannot be read."""
    text = _text_path(path)
    st = os.stat(text)
    stamp = (st.st_mtime_ns, st.st_size)
    with _cache_lock:
        hit = _cache.get(text)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    with open(text, encoding="utf-8", errors="surrogateescape") as fp:
        table = _parse(fp.readlines())
    with _cache_lock:
        _cache[text] = (stamp, table)
    return table


class MTAPolicy:
    """Policy for one sender.  ``conf`` supplies ``access_file`` (unless
    given) and ``access_file_nulls`` (kept for pymilter configurations; the
    text file has no NULs).  Use as a context manager."""

    def __init__(self, sender: str, conf: Any = None, access_file: str | None = None) -> None:
        if not access_file:
            access_file = getattr(conf, "access_file", None)
        self.use_nulls = bool(getattr(conf, "access_file_nulls", False))
        self.sender = sender
        self.domain = sender.rsplit("@", 1)[-1].lower()
        self.access_file = access_file
        self.acf: dict[str, str] | None = None

    def __enter__(self) -> MTAPolicy:
        self.acf = read_access(self.access_file) if self.access_file else None
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 b: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.acf = None

    def getPolicy(self, pfx: str) -> str | None:
        """The access file's value for ``pfx`` and this sender, or None."""
        if self.acf is None:
            return None
        p = pfx.lower()
        acf = self.acf
        for key in (f"{p}!{self.sender.lower()}", f"{p}!{self.domain}"):
            value = acf.get(key)
            if value is not None:
                return value
        parent = self.domain
        while "." in parent:
            parent = parent.split(".", 1)[1]
            value = acf.get(f"{p}!.{parent}")
            if value is not None:
                return value
        for key in (f"{p}!", p):
            value = acf.get(key)
            if value is not None:
                return value
        return None
