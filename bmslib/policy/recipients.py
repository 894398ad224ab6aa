"""The recipient changes made at end of message (SPEC §4 "eom"): wiretap
copies, ``discard`` (censor), smart aliases and ``hide_path``.

:func:`plan_recipients` is pure: it turns the envelope into a
:class:`RecipientPlan` that the glue applies with ``delrcpt``, ``addrcpt``,
``addheader`` and ``chgheader``, and whose log lines it writes.

Addresses compare with the domain lowercased and the local part lowercased
unless ``case_sensitive_localpart``.  Address sets (``[wiretap] users``,
``discard``) map a domain to its local parts; the local part ``""`` (from a
config entry ``@domain``) means every user of the domain.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .address import Address, domain_parents, parse_address


@dataclass(frozen=True)
class SmartAlias:
    """Mail from ``sender`` (a full address, or ``@domain``) to ``recipient``
    goes to ``dests`` instead."""

    name: str
    sender: str
    recipient: str
    dests: tuple[str, ...]


@dataclass(frozen=True)
class RecipientSettings:
    wiretap_users: Mapping[str, frozenset[str]] = field(default_factory=dict)
    wiretap_dest: str | None = None
    wiretap_blind: bool = True
    discard: Mapping[str, frozenset[str]] = field(default_factory=dict)
    smart_aliases: tuple[SmartAlias, ...] = ()
    hide_path: frozenset[str] = frozenset()  # recipient domains, lowercased
    case_sensitive_localpart: bool = False


def _bare(text: str) -> str:
    return text.strip().strip("<>").strip()


def smart_aliases_from(entries: Mapping[str, tuple[str, ...]]) -> tuple[SmartAlias, ...]:
    """Aliases from the config's ``{name: (sender, recipient, dest...)}``, in
    order; the destination defaults to the alias name (a local user).  Raises
    ValueError (one line) for an entry with fewer than two fields."""
    out: list[SmartAlias] = []
    for name, fields in entries.items():
        values = [_bare(f) for f in fields]
        values = [v for v in values if v]
        if len(values) < 2:
            raise ValueError(f"malformed smart alias {name!r}: expected "
                             f"sender, recipient[, destination...], got {', '.join(fields)!r}")
        dests = tuple(values[2:]) or (_bare(name),)
        out.append(SmartAlias(name, values[0], values[1], dests))
    return tuple(out)


def address_set(entries: Iterable[str], case_sensitive: bool) -> dict[str, frozenset[str]]:
    """``user@domain`` and ``@domain`` entries as domain -> local parts
    (``""`` for ``@domain``); an entry without ``@`` is a local part of the
    domain ``""`` (unqualified addresses)."""
    sets: dict[str, set[str]] = {}
    for entry in entries:
        text = _bare(entry)
        if not text:
            continue
        local, _at, domain = text.rpartition("@")
        if not _at:
            local, domain = text, ""
        sets.setdefault(domain.lower().rstrip("."), set()).add(
            local if case_sensitive else local.lower())
    return {domain: frozenset(users) for domain, users in sets.items()}


@dataclass(frozen=True)
class RecipientPlan:
    delete: tuple[str, ...]  # recipients to delrcpt, as the MTA gave them (Address.raw)
    add: tuple[str, ...]  # "<user@domain>" to addrcpt; none that stays a recipient
    cc: str | None  # value of a Cc: header to add (non-blind wiretap)
    hide_path: bool  # delete every Received: header
    log: tuple[str, ...]  # "WIRETAP: ...", "DISCARD RCPT: ...", "SMART ALIAS: ...", ...

    @property
    def empty(self) -> bool:
        """Nothing to change (there may still be log lines)."""
        return not (self.delete or self.add or self.cc or self.hide_path)


_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")


def angle(addr: Address) -> str:
    """``<user@domain>`` for addrcpt, the local part quoted when it needs it."""
    local = addr.local
    if local and not _ATOM.fullmatch(local):
        local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"<{local}@{addr.domain}>" if addr.domain else f"<{local}>"


class _Keys:
    """Comparison keys under the settings' case rule."""

    def __init__(self, case_sensitive: bool) -> None:
        self.case_sensitive = case_sensitive

    def local(self, local: str) -> str:
        return local if self.case_sensitive else local.lower()

    def mailbox(self, addr: Address) -> str:
        return f"{self.local(addr.local)}@{addr.domain}"

    def text(self, text: str) -> str:
        """A configured full address or ``@domain``, as a key."""
        local, _at, domain = _bare(text).rpartition("@")
        if not _at:
            local, domain = _bare(text), ""
        return f"{self.local(local)}@{domain.lower().rstrip('.')}"

    def listed(self, sets: Mapping[str, frozenset[str]], addr: Address) -> bool:
        users = sets.get(addr.domain)
        return users is not None and ("" in users or self.local(addr.local) in users)


def _alias_dests(settings: RecipientSettings, keys: _Keys, sender: Address,
                 rcpt: Address) -> tuple[str, ...]:
    """Destinations of the aliases for (sender, rcpt): those naming the full
    sender address, or failing those the ones naming ``@domain``; several
    with the same key contribute their destinations in config order."""
    rcpt_key = keys.mailbox(rcpt)
    full = keys.mailbox(sender)
    by_domain = f"@{sender.domain}"
    exact: list[str] = []
    domain: list[str] = []
    for alias in settings.smart_aliases:
        if keys.text(alias.recipient) != rcpt_key:
            continue
        sender_key = keys.text(alias.sender)
        if sender_key == full:
            exact.extend(alias.dests)
        elif sender.domain and sender_key == by_domain:
            domain.extend(alias.dests)
    return tuple(exact or domain)


def plan_recipients(settings: RecipientSettings, sender: Address,
                    recipients: Sequence[Address]) -> RecipientPlan:
    """What to change for this message, in a fixed order:

    1. each recipient: a listed ``discard`` sender deletes it (``DISCARD
       RCPT``); a smart alias for (sender, recipient) replaces it by the
       alias destinations (``SMART ALIAS``; applied under discard too, as
       the original did, so the message still reaches alias destinations);
    2. a listed wiretap sender adds ``wiretap_dest``, or the destinations of
       the smart aliases for (sender, wiretap_dest), so one wiretap can fan
       out (``WIRETAP``); not blind: ``cc`` is the destination;
    3. an address both deleted and added is neither; additions are
       deduplicated and never repeat a recipient that stays (``APPEND RCPT``);
    4. a recipient domain, or a parent of it, in ``hide_path``: delete the
       ``Received:`` headers (``HIDE PATH``).
    """
    keys = _Keys(settings.case_sensitive_localpart)
    log: list[str] = []
    deleted: dict[str, list[Address]] = {}  # key -> deleted recipients
    added: dict[str, Address] = {}  # key -> address to add (insertion order)

    def add(dest: str) -> None:
        addr = parse_address(dest)
        added.setdefault(keys.mailbox(addr), addr)

    discard = keys.listed(settings.discard, sender)
    for rcpt in recipients:
        dests = _alias_dests(settings, keys, sender, rcpt)
        if discard or dests:
            deleted.setdefault(keys.mailbox(rcpt), []).append(rcpt)
        if discard:
            log.append(f"DISCARD RCPT: {rcpt.mailbox}")
        if dests:
            log.append(f"SMART ALIAS: {rcpt.mailbox} -> {', '.join(dests)}")
            for dest in dests:
                add(dest)

    cc: str | None = None
    if settings.wiretap_dest and keys.listed(settings.wiretap_users, sender):
        tap = parse_address(settings.wiretap_dest)
        log.append(f"WIRETAP: copy of mail from {sender.mailbox or '<>'} to {tap.mailbox}")
        dests = _alias_dests(settings, keys, sender, tap)
        if dests:
            log.append(f"SMART ALIAS: {tap.mailbox} -> {', '.join(dests)}")
        for dest in dests or (settings.wiretap_dest,):
            add(dest)
        if not settings.wiretap_blind:
            cc = tap.mailbox

    staying = {keys.mailbox(r) for r in recipients} - deleted.keys()
    for key in list(added):
        if key in deleted:  # deleted and re-added: leave it as the MTA has it
            del deleted[key]
            del added[key]
        elif key in staying:
            del added[key]
    add_list = tuple(angle(a) for a in added.values())
    log.extend(f"APPEND RCPT: {a}" for a in add_list)

    hide = False
    for rcpt in recipients:
        hit = next((d for d in domain_parents(rcpt.domain) if d in settings.hide_path), None)
        if hit is not None:
            log.append(f"HIDE PATH: {rcpt.domain}")
            hide = True
            break

    delete = tuple(r.raw for rs in deleted.values() for r in rs)
    return RecipientPlan(delete, add_list, cc, hide, tuple(log))
