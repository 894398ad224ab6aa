"""The address lists kept in the state store (SPEC §4 Reputation, inventory
§2.4): the auto-whitelist (recipients of internal senders) and the blacklist.

One entry is a full address ``user@domain`` or a bare domain, lowercased.
An address is listed when the address itself or its domain (the text after
the last ``@``) has an unexpired entry; a bare domain matches only itself,
never its parents.  ``until = math.inf`` is a manual entry that never
expires.  These helpers keep both backends to the same rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..interfaces import AddressLists, BanStore, SenderStanding

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


if TYPE_CHECKING:
    class _Reads(AddressLists, BanStore, Protocol):
        """The separate reads of a store."""


def standing_of(store: _Reads, domain: str | None, address: str | None, ip: str | None,
                now: float) -> SenderStanding:
    """``StateStore.standing`` from the separate reads, for a store that has
    no cheaper way (the dry-run overlay, test fakes)."""
    from ..interfaces import SenderStanding
    return SenderStanding(
        domain is not None and store.domain_banned(domain, now),
        address is not None and store.listed(BLACKLIST, address, now),
        address is not None and store.listed(WHITELIST, address, now),
        ip is not None and store.ip_banned(ip, now))
