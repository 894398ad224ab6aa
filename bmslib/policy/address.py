"""Envelope addresses as the MTA passes them (``<user@example.com>``).

Parsing never raises: whatever the client sent becomes an :class:`Address`
whose ``domain`` is empty when there is none (``<>``, an unqualified
``<postmaster>``, garbage), so every check can ask ``addr.qualified``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Address:
    raw: str  # as given, e.g. '<"john doe"@Example.COM>'
    local: str  # local part without quotes, case kept: 'john doe'
    domain: str  # lowercased; '' when there is none; '[1.2.3.4]' for a literal

    @property
    def null(self) -> bool:
        """The null sender ``<>``."""
        return not self.local and not self.domain

    @property
    def qualified(self) -> bool:
        return bool(self.local) and bool(self.domain)

    @property
    def mailbox(self) -> str:
        """``local@domain`` (or just the local part), for lookups and logs."""
        return f"{self.local}@{self.domain}" if self.domain else self.local

    def __str__(self) -> str:
        return self.mailbox


def _unquote(local: str) -> str:
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        inner = local[1:-1]
        out, escaped = [], False
        for ch in inner:
            if escaped or ch != "\\":
                out.append(ch)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return local


def _split_at(text: str) -> tuple[str, str]:
    """Split at the last '@' outside a quoted local part."""
    in_quote, escaped, at = False, False, -1
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and in_quote:
            escaped = True
        elif ch == '"':
            in_quote = not in_quote
        elif ch == "@" and not in_quote:
            at = i
    if at < 0:
        return text, ""
    return text[:at], text[at + 1:]


def parse_address(raw: str) -> Address:
    """Parse a MAIL FROM / RCPT TO argument: angle brackets optional, source
    routes (``<@relay:user@domain>``) dropped, quoted local parts unquoted,
    the domain lowercased and stripped of a trailing dot."""
    text = raw.strip()
    if text.startswith("<"):
        end = text.rfind(">")
        text = text[1:end] if end > 0 else text[1:]
    text = text.strip()
    if text.startswith("@"):  # source route: <@a,@b:user@c>
        colon = text.find(":")
        text = text[colon + 1:] if colon >= 0 else ""
    local, domain = _split_at(text)
    domain = domain.strip().rstrip(".").lower()
    return Address(raw, _unquote(local.strip()), domain)


def domain_parents(domain: str) -> list[str]:
    """``a.b.example.com`` -> ``[a.b.example.com, b.example.com, example.com, com]``."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels)) if labels[i]]
