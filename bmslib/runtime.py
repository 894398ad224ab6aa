"""Build the policy objects of the daemon from a loaded configuration.

:func:`build_runtime` turns a :class:`~bmslib.config.Config` into a
:class:`Runtime`: the frozen policy settings plus the adapters to the outside
world (access file, state store, DNS resolver, SPF and CBV steps).  bms.py
keeps one Runtime current and swaps in a new one on SIGHUP; each MTA
connection takes the Runtime current when it starts and keeps it to the end,
so a reload never changes the rules in the middle of a transaction.

Everything here may raise :class:`RuntimeBuildError` with a one-line message
that names the config option at fault.
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .access import AccessFile
from .archive import Archive, ArchiveError, open_archive
from .config import Config
from .content.defang import DefangSettings
from .dns import DnsResolver, DnsSettings
from .interfaces import AdminStore, StateStore
from .policy import dsnreply, dynip
from .policy.cbv import CallbackVerifier, CbvSettings
from .policy.checks import CheckSettings
from .policy.connection import ConnectionSettings, IpList
from .policy.content import content_settings
from .policy.decision import AccessValue
from .policy.dmarc import DmarcCheck
from .policy.dsn import TemplateError, load_templates
from .policy.greylist import StoreUnavailable
from .policy.message import MessageSettings, Saver
from .policy.pipeline import PolicySettings, Services, SmtpSession
from .policy.recipients import RecipientSettings, address_set, smart_aliases_from
from .policy.reputation import ReputationSettings
from .policy.spf import SpfPolicy, SpfSettings
from .policy.spfquery import SpfResolver
from .runtime_features import RuntimeBuildError as RuntimeBuildError
from .runtime_features import (
    arc_settings,
    datadir_path,
    dkim_settings,
    dnsbl_from,
    greylist_settings,
    path_error,
    srs_from,
    where,
)
from .runtime_features import words as _words
from .smtpclient import SmtplibTransport, SmtpTransport
from .spool import MessageSpool, save_original
from .state.cbvcache import StoreCbvCache
from .state.legacy import import_legacy
from .state.redis import RedisStore, public_url
from .state.reportbuffer import ReportBuffer
from .state.sqlite import SqliteStore

log = logging.getLogger("bms")

DEFAULT_STATE_FILE = "bms.sqlite"


class SystemClock:
    def now(self) -> float:
        return time.time()


@dataclass(frozen=True)
class Runtime:
    config: Config
    settings: PolicySettings
    services: Services
    store: StateStore
    ids: SqliteStore  # connection ids (local to this host)
    access: AccessFile | NoAccess
    reports: ReportBuffer  # DMARC report counts on their way to the store
    warnings: tuple[str, ...] = ()  # one line each, for the admin (start, reload)

    def session(self) -> SmtpSession:
        return SmtpSession(self.settings, self.services)


def address_sets(config: Config, entries: Iterable[str], option: str,
                 case_sensitive: bool = False) -> dict[str, frozenset[str]]:
    """The original's "addrset": ``user@domain`` entries grouped by domain
    (local parts lowercased unless ``case_sensitive``), and ``file:PATH``
    entries whose file lists the local parts of domain ``basename(PATH)``."""
    def fold(user: str) -> str:
        return user if case_sensitive else user.lower()

    sets: dict[str, set[str]] = {}
    for entry in entries:
        if entry.startswith("file:"):
            path = datadir_path(config, entry[5:])
            try:
                text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
            except OSError as exc:
                raise path_error(config, "milter", option, path, exc) from None
            domain = os.path.basename(path).lower()
            sets.setdefault(domain, set()).update(fold(w) for w in text.split())
            continue
        user, at, domain = entry.rpartition("@")
        if not at:
            raise RuntimeBuildError(
                f"[milter] {option}: expected user@domain or file:PATH, got {entry!r}")
        sets.setdefault(domain.lower(), set()).add(fold(user))
    return {d: frozenset(u) for d, u in sets.items()}


def ip_list(config: Config, option: str) -> IpList:
    try:
        return IpList(_words(config.get("milter", option)))
    except ValueError as exc:
        raise RuntimeBuildError(f"[milter] {option}: {exc}") from None


def policy_settings(config: Config) -> PolicySettings:
    g = config.get
    max_demerits = g("milter", "max_demerits")
    case_sensitive = bool(g("milter", "case_sensitive_localpart"))
    return PolicySettings(
        connection=ConnectionSettings(
            internal_connect=ip_list(config, "internal_connect"),
            trusted_relay=ip_list(config, "trusted_relay")),
        checks=CheckSettings(
            internal_domains=tuple(d.lower() for d in _words(g("milter", "internal_domains"))),
            internal_mta=ip_list(config, "internal_mta"),
            hello_blacklist=frozenset(h.lower() for h in _words(g("milter", "hello_blacklist"))),
            private_relay=frozenset(d.lower() for d in _words(g("milter", "private_relay"))),
            check_user=address_sets(config, _words(g("milter", "check_user")), "check_user",
                                    case_sensitive),
            case_sensitive_localpart=case_sensitive),
        reputation=ReputationSettings(
            max_demerits=None if max_demerits is None else int(max_demerits),
            ban_days=float(g("milter", "ban_days"))),
        dry_run=bool(g("milter", "dry_run")),
        log_headers=bool(g("milter", "log_headers")),
        supply_sender=bool(g("spf", "supply_sender")),
        message=message_settings(config),
        greylist=greylist_settings(config),
        dkim=dkim_settings(config),
        arc=arc_settings(config),
        trusted_arc_sealers=frozenset(d.lower() for d in _words(g("dmarc",
                                                                  "trusted_arc_sealers"))),
        email_providers=frozenset(d.lower() for d in _words(g("milter", "email_providers"))),
        max_argument_length=int(g("milter", "max_argument_length")),
    )


def word_list(config: Config, section: str, option: str) -> tuple[str, ...]:
    """A word list option; a single ``file:PATH`` item names a file (in
    datadir when relative) with one phrase per line, ``#`` comments."""
    items = tuple(config.get(section, option) or ())
    if len(items) == 1 and items[0].startswith("file:"):
        path = datadir_path(config, items[0][5:].strip())
        try:
            text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            raise path_error(config, section, option, path, exc) from None
        return tuple(line.strip() for line in text.splitlines()
                     if line.strip() and not line.lstrip().startswith("#"))
    return items


def defang_settings(config: Config) -> DefangSettings | None:
    """None when nothing about attachments is to be checked."""
    g = config.get
    exts = frozenset(e.lower().lstrip(".") for e in _words(g("defang", "banned_exts")))
    settings = DefangSettings(banned_exts=exts - {""}, scan_zip=bool(g("defang", "scan_zip")),
                              scan_rfc822=bool(g("defang", "scan_rfc822")),
                              scan_html=bool(g("defang", "scan_html")))
    if not settings.banned_exts and not settings.scan_html and not settings.scan_zip:
        return None
    return settings


def message_settings(config: Config) -> MessageSettings:
    g = config.get
    case_sensitive = bool(g("milter", "case_sensitive_localpart"))
    try:
        aliases = smart_aliases_from(config.section_items("smart_alias"))
    except ValueError as exc:
        raise RuntimeBuildError(f"[smart_alias]: {exc}") from None
    return MessageSettings(
        content=content_settings(
            block_chinese=bool(g("defang", "block_chinese")),
            block_charsets=_words(g("defang", "block_charsets")),
            porn_words=word_list(config, "defang", "porn_words"),
            spam_words=word_list(config, "defang", "spam_words"),
            from_words=word_list(config, "defang", "from_words"),
            block_forward=(w.lower() for w in _words(g("defang", "block_forward")))),
        defang=defang_settings(config),
        recipients=RecipientSettings(
            wiretap_users=address_set(_words(g("wiretap", "users")), case_sensitive),
            wiretap_dest=g("wiretap", "dest") or None,
            wiretap_blind=bool(g("wiretap", "blind")),
            discard=address_set(_words(g("wiretap", "discard")), case_sensitive),
            smart_aliases=aliases,
            hide_path=frozenset(d.lower() for d in _words(g("scrub", "hide_path"))),
            case_sensitive_localpart=case_sensitive),
        reject_virus_from=frozenset(d.lower() for d in _words(g("scrub", "reject_virus_from"))),
        tempdir=str(g("milter", "tempdir") or "") or None,
    )


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def tempdir_saver(config: Config) -> Saver | None:
    """Where originals of defanged mail go: ``[milter] tempdir``, created
    (mode 0700) when missing; it must be writable now, not weeks later."""
    tempdir = str(config.get("milter", "tempdir") or "")
    if not tempdir:
        return None
    try:
        os.makedirs(tempdir, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise path_error(config, "milter", "tempdir", tempdir, exc,
                         f"cannot create as user {_user()}") from None
    if not os.access(tempdir, os.W_OK | os.X_OK):
        raise path_error(config, "milter", "tempdir", tempdir,
                         f"not writable by user {_user()}", "cannot use")

    def save(spool: MessageSpool) -> str:
        return save_original(spool, tempdir)

    return save


def archive_from(config: Config) -> Archive | None:
    """``[wiretap] archive`` (mbox path or ``maildir:PATH``), checked writable."""
    spec = str(config.get("wiretap", "archive") or "").strip()
    if not spec:
        return None
    kind, colon, rest = spec.partition(":")
    if colon and kind == "maildir":
        spec = "maildir:" + datadir_path(config, rest)
    else:
        spec = datadir_path(config, spec)
    archive = open_archive(spec)
    try:
        archive.check_writable()
    except ArchiveError as exc:
        raise RuntimeBuildError(f"[wiretap] archive: {exc}") from None
    return archive


def dns_settings(config: Config) -> DnsSettings:
    servers = _words(config.get("dns", "nameservers")) or system_nameservers()
    try:
        return DnsSettings(nameservers=servers, timeout=float(config.get("dns", "timeout")),
                           lifetime=float(config.get("dns", "lifetime")),
                           cache_size=int(config.get("dns", "cache_size")))
    except ValueError as exc:
        raise RuntimeBuildError(f"[dns]: {exc}") from None


def system_nameservers(path: str = "/etc/resolv.conf") -> tuple[str, ...]:
    """The ``nameserver`` lines of resolv.conf (``[dns] nameservers`` unset)."""
    servers: list[str] = []
    try:
        for line in Path(path).read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                servers.append(parts[1].split("%", 1)[0])
    except OSError:
        pass
    return tuple(servers) or ("127.0.0.1",)


_TRUE = frozenset({"1", "yes", "true", "on"})
_FALSE = frozenset({"0", "no", "false", "off"})


def domains_or_all(value: object) -> bool | tuple[str, ...]:
    """``reject_neutral``-style options: a domain list, or a boolean word for
    every domain (``reject_neutral = 1`` in old configs)."""
    words = _words(value)
    if "*" in words:  # bmslib.config.ALL_DOMAINS: "yes"
        return True
    if len(words) == 1 and words[0].lower() in _TRUE | _FALSE:
        return words[0].lower() in _TRUE
    return tuple(w.lower() for w in words)


def spf_settings(config: Config) -> SpfSettings:
    g = config.get
    return SpfSettings(
        best_guess=bool(g("spf", "best_guess")),
        reject_noptr=bool(g("spf", "reject_noptr")),
        reject_neutral=domains_or_all(g("spf", "reject_neutral")),
        accept_softfail=domains_or_all(g("spf", "accept_softfail")),
        accept_fail=domains_or_all(g("spf", "accept_fail")),
        delegate=g("spf", "delegate") or None,
        trusted_forwarder=tuple(_words(g("spf", "trusted_forwarder"))),
    )


def _sqlite(config: Config, path: str) -> SqliteStore:
    path = datadir_path(config, path or DEFAULT_STATE_FILE)
    try:
        return SqliteStore(path)
    except (OSError, Exception) as exc:  # sqlite3.Error, permission problems
        raise RuntimeBuildError(f"{where(config, 'state', 'backend')}: cannot open "
                                f"{os.path.abspath(path)}: {exc}") from None


def open_store(config: Config) -> AdminStore:
    """``[state] backend``: ``sqlite:PATH`` (relative to datadir) or
    ``redis://host:port/db`` (shared by every MX host; connected lazily, so a
    Redis that is down at startup only tempfails greylisting until it is back)."""
    backend = str(config.get("state", "backend") or "")
    scheme, _, rest = backend.partition(":")
    if scheme in ("redis", "rediss", "unix"):
        try:
            return RedisStore(backend)
        except (ValueError, TypeError) as exc:
            raise RuntimeBuildError(f"[state] backend: {public_url(backend)}: {exc}") from None
    if backend and scheme != "sqlite":
        raise RuntimeBuildError(
            f"[state] backend: expected sqlite:PATH or redis://HOST:PORT/DB, got {backend!r}")
    return _sqlite(config, rest)


def id_store(config: Config, store: StateStore) -> SqliteStore:
    """Where connection ids come from: the SQLite store, or with Redis a
    local SQLite file (ids are per host, and must not stop when Redis does)."""
    return store if isinstance(store, SqliteStore) else _sqlite(config, DEFAULT_STATE_FILE)


class NoAccess:
    """``[spf] access_file`` empty: no entries, the built-in defaults apply."""

    path = "(none)"

    def lookup(self, tag: str, subject: str) -> AccessValue | None:
        return None

    def reload(self) -> bool:
        return True


def open_access(config: Config) -> AccessFile | NoAccess:
    path = config.get("spf", "access_file")
    if not path:
        return NoAccess()
    try:
        return AccessFile(os.path.abspath(path),
                          colon=bool(config.get("spf", "access_file_colon")),
                          nulls=bool(config.get("spf", "access_file_nulls")))
    except Exception as exc:  # AccessError: one line naming the file
        raise RuntimeBuildError(f"{where(config, 'spf', 'access_file')}: {exc}") from None


def build_runtime(config: Config, *, store: StateStore | None = None,
                  ids: SqliteStore | None = None,
                  reports: ReportBuffer | None = None,
                  resolver: SpfResolver | None = None,
                  transport: SmtpTransport | None = None,
                  hostname: str | None = None) -> Runtime:
    """Everything the policy needs, from ``config``; ``store``, ``ids`` and
    ``reports`` (kept across reloads), ``resolver`` and ``transport`` may be
    given (tests)."""
    clock = SystemClock()
    settings = policy_settings(config)
    access = open_access(config)
    store = store or open_store(config)
    ids = ids or id_store(config, store)
    if resolver is None:
        resolver = DnsResolver(dns_settings(config))
    datadir = str(config.get("milter", "datadir") or "") or None
    try:
        templates = load_templates(datadir)
    except TemplateError as exc:
        raise RuntimeBuildError(f"DSN template: {exc}") from None
    srs = srs_from(config, clock.now)
    cbv = CallbackVerifier(
        CbvSettings(hostname=hostname or socket.getfqdn(),
                    timeout=float(config.get("milter", "cbv_timeout")), datadir=datadir),
        resolver, transport or SmtplibTransport(), clock, StoreCbvCache(store, clock),
        templates, message_id=None if srs is None else partial(dsnreply.message_id, srs))
    warnings = resolve_address_lists(settings, resolver)
    dmarc = DmarcCheck(resolver) if config.get("dmarc", "enabled") else None
    reports = reports or ReportBuffer(store, clock)
    spf = SpfPolicy(spf_settings(config), resolver, access)
    services = Services(access=access, store=store, clock=clock, resolver=resolver,
                        spf=spf, cbv=cbv, is_dynamic=dynip.is_dynamic,
                        archive=archive_from(config), save=tempdir_saver(config), srs=srs,
                        dmarc=dmarc, dnsbl=dnsbl_from(config, resolver),
                        reports=reports)
    return Runtime(config, settings, services, store, ids, access, reports, warnings)


def resolve_address_lists(settings: PolicySettings, resolver: SpfResolver) -> tuple[str, ...]:
    """Host names in ``internal_connect``, ``trusted_relay`` and ``internal_mta``
    resolved once per (re)load; one warning per name that does not resolve."""
    lists = (("internal_connect", settings.connection.internal_connect),
             ("trusted_relay", settings.connection.trusted_relay),
             ("internal_mta", settings.checks.internal_mta))
    return tuple(f"[milter] {option}: {problem}" for option, ips in lists
                 for problem in ips.resolve(resolver))


def maintain_store(runtime: Runtime, logdir: str | None) -> None:
    """At startup: import the old bms files (``banned_ips*``,
    ``banned_domains*``, ``auto_whitelist.log``, ``blacklist.log`` in logdir)
    once, and purge expired records.  A store that is down is only logged."""
    store, now = runtime.store, time.time()
    try:
        if logdir:
            done = import_legacy(store, logdir, now, runtime.settings.reputation.ban_days)
            for warning in done.warnings:
                log.warning("legacy import: %s", warning)
            if done.files:
                log.info("%s", done.summary())
        purged = store.purge(now)
        greylist = runtime.settings.greylist
        if greylist is not None:
            purged_grey = store.purge_greylist(now, greylist)
            if purged_grey:
                log.info("Expired %d greylist records.", purged_grey)
        if purged:
            log.info("Expired %d bans, list and cache entries.", purged)
    except (StoreUnavailable, OSError, sqlite3.Error) as exc:
        log.warning("state store maintenance skipped: %s", exc)


def describe(runtime: Runtime) -> Mapping[str, str]:
    """What an admin wants to see at startup and after a reload."""
    cfg = runtime.config
    return {"config": ", ".join(cfg.files), "access": runtime.access.path,
            "state": runtime.store.path,
            "greylist": "on" if runtime.settings.greylist else "off",
            "srs": "on" if runtime.services.srs else "off",
            "dkim signing": (runtime.settings.dkim.domain if runtime.settings.dkim else "")
            or "off",
            "dry_run": "yes" if runtime.settings.dry_run else "no"}
