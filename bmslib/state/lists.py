"""The address lists kept in the state store (SPEC §4 Reputation, inventory
§2.4): the auto-whitelist (recipients of internal senders) and the blacklist.

One entry is a full address ``user@domain`` or a bare domain, lowercased.
An address is listed when the address itself or its domain (the text after
the last ``@``) has an unexpired entry; a bare domain matches only itself,
never its parents.  ``until = math.inf`` is a manual entry that never
expires.  These helpers keep both backends to the same rules.
"""

from __future__ import annotations

WHITELIST = "whitelist"
BLACKLIST = "blacklist"
KINDS = (WHITELIST, BLACKLIST)


def check_kind(kind: str) -> str:
    """``kind`` when it names a list; ValueError (a programming error) otherwise."""
    if kind not in KINDS:
        raise ValueError(f"unknown address list {kind!r} (expected one of {', '.join(KINDS)})")
    return kind


def entry_key(entry: str) -> str:
    """How ``entry`` is stored: stripped and lowercased ('' means nothing to store)."""
    return entry.strip().lower()


def lookup_keys(address: str) -> list[str]:
    """The entries that list ``address``: itself and, for ``user@domain``, the domain."""
    key = entry_key(address)
    if not key:
        return []
    _, at, domain = key.rpartition("@")
    return [key, domain] if at and domain else [key]
