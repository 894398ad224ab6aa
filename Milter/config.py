"""pymilter's ``Milter.config``: ``MilterConfigParser``, a ``ConfigParser``
with per-option defaults that do not leak into every section, and readers
for the list and address options milter configurations use.
"""

from __future__ import annotations

import os.path
from collections.abc import Mapping
from configparser import ConfigParser
from typing import Any

__all__ = ["MilterConfigParser"]


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",")]


class MilterConfigParser(ConfigParser):
    """``defaults`` maps option names to the value ``get`` returns when a
    section lacks the option (ConfigParser's own defaults would show up as
    options of every section)."""

    def __init__(self, defaults: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self._fallbacks: dict[str, Any] = dict(defaults or {})
        # pymilter's attribute (it hides ConfigParser's defaults() method).
        self.defaults = self._fallbacks  # type: ignore[assignment,method-assign]

    def get(self, section: str, option: str, *, raw: bool = False,  # type: ignore[override]
            vars: Mapping[str, str] | None = None, fallback: Any = None) -> Any:
        if not fallback and option in self._fallbacks and not self.has_option(section, option):
            return self._fallbacks[option]
        return super().get(section, option, raw=raw, vars=vars, fallback=fallback)

    def getlist(self, sect: str, opt: str) -> list[str]:
        """A comma-separated option as a list ([] when absent)."""
        if self.has_option(sect, opt):
            return _items(self.get(sect, opt))
        return []

    def getaddrset(self, sect: str, opt: str, dir: str = "") -> dict[str, list[str]]:
        """``user@domain`` items (or ``file:DOMAIN``, a file in ``dir`` listing
        that domain's users) as {domain: [users]}."""
        if not self.has_option(sect, opt):
            return {}
        result: dict[str, list[str]] = {}
        for item in _items(self.get(sect, opt)):
            if item.startswith("file:"):
                domain = item[5:].lower()
                with open(os.path.join(dir, domain), encoding="utf-8") as fp:
                    result.setdefault(domain, []).extend(fp.read().split())
            else:
                user, _, domain = item.rpartition("@")
                if not _:
                    raise ValueError(f"[{sect}] {opt}: {item!r} is not user@domain")
                result.setdefault(domain.lower(), []).append(user)
        return result

    def getaddrdict(self, sect: str, opt: str, dir: str = "") -> dict[str, str]:
        """``opt`` names other options of ``sect``; each lists addresses (or
        ``file:NAME`` files in ``dir`` of them).  Returns {address: option}."""
        if not self.has_option(sect, opt):
            return {}
        result: dict[str, str] = {}
        for name in _items(self.get(sect, opt)):
            if not self.has_option(sect, name):
                continue
            for addr in _items(self.get(sect, name)):
                if addr.startswith("file:"):
                    with open(os.path.join(dir, addr[5:]), encoding="utf-8") as fp:
                        for a in fp.read().split():
                            result[a] = name
                else:
                    result[addr] = name
        return result

    def getdefault(self, sect: str, opt: str, default: Any = None) -> Any:
        """The option's value, or ``default`` when absent."""
        if self.has_option(sect, opt):
            return self.get(sect, opt)
        return default

    def getintdefault(self, sect: str, opt: str, default: int | None = None) -> int | None:
        """The option as an integer, or ``default`` when absent."""
        if self.has_option(sect, opt):
            return self.getint(sect, opt)
        return default
