"""Building the greylisting, SRS, DKIM and shared-state parts of the runtime
from the configuration (``[greylist]``, ``[srs]``, ``[dkim]``, ``[state]``).

Each function returns None when its feature is off, and raises
:class:`RuntimeBuildError` with one line naming the option at fault when the
configuration cannot work (a missing key file, a bad Redis URL, SRS without
``fwdomain``), so the daemon refuses to start instead of failing per message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from .config import Config
from .policy.arc import ArcError, ArcSettings, seal
from .policy.dkim import DkimError, DkimSettings, sign
from .policy.dnsbl import BlocklistResolver, Blocklists, DnsblSettings, Zone, parse_zones
from .policy.greylist import GreylistSettings
from .policy.srs import Srs, SrsSettings, validate


class RuntimeBuildError(Exception):
    """The configuration loaded but cannot be put to work (one line)."""


def words(value: object) -> tuple[str, ...]:
    """A list option as words (commas or blanks separate them)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(w for w in value.replace(",", " ").split() if w)
    if isinstance(value, Iterable):
        return tuple(str(w).strip() for w in value if str(w).strip())
    return (str(value),)


def datadir_path(config: Config, path: str) -> str:
    """A data file named in the config: absolute, or relative to datadir."""
    datadir = str(config.get("milter", "datadir") or "")
    return path if os.path.isabs(path) or not datadir else os.path.join(datadir, path)


def where(config: Config, section: str, option: str) -> str:
    """``FILE: [section] option``: where an admin fixes a value."""
    source = config.source(section, option)
    return f"{source}: [{section}] {option}" if source else f"[{section}] {option} (default)"


def path_error(config: Config, section: str, option: str, path: str,
               exc: OSError | str, doing: str = "cannot read") -> RuntimeBuildError:
    """One line naming the config file, section, option and the full path tried."""
    reason = exc if isinstance(exc, str) else (exc.strerror or str(exc))
    return RuntimeBuildError(f"{where(config, section, option)}: {doing} "
                             f"{os.path.abspath(path)}: {reason}")


def greylist_settings(config: Config) -> GreylistSettings | None:
    """``[greylist]`` when greylisting is on (``enabled``, or an old ``dbfile``)."""
    if not config.get("greylist", "enabled"):
        return None
    g = config.get
    return GreylistSettings(time_minutes=float(g("greylist", "time")),
                            expire_hours=float(g("greylist", "expire")),
                            retain_days=float(g("greylist", "retain")))


def srs_settings(config: Config) -> SrsSettings | None:
    """``[srs]`` when a secret is set (SRS on)."""
    g = config.get
    secret = g("srs", "secret")
    if not secret:
        return None
    fwdomain = str(g("srs", "fwdomain") or "").lower()
    ours = {fwdomain} | {d.lower() for key in ("sign", "srs", "ses") for d in words(g("srs", key))}
    settings = SrsSettings(
        secret=str(secret),
        old_secrets=tuple(str(g("srs", f"secret.{i}")) for i in range(3)
                          if g("srs", f"secret.{i}")),
        maxage=int(g("srs", "maxage")), hashlength=int(g("srs", "hashlength")),
        separator=str(g("srs", "separator")), fwdomain=fwdomain,
        srs_domains=frozenset(d for d in ours if d),
        reject_spoofed=bool(g("srs", "reject_spoofed")),
        banned_users=frozenset(u.lower() for u in words(g("srs", "banned_users"))))
    try:
        validate(settings)
    except ValueError as exc:
        raise RuntimeBuildError(str(exc)) from None
    return settings


def srs_from(config: Config, clock: Callable[[], float]) -> Srs | None:
    settings = srs_settings(config)
    return None if settings is None else Srs(settings, clock)


_PROBE = (b"From: probe@example.invalid\r\nSubject: key check\r\n\r\nkey check\r\n")


def _read_key(config: Config, section: str, name: str) -> tuple[str, bytes]:
    """(path, bytes) of a private key file (relative to datadir)."""
    path = datadir_path(config, name)
    try:
        with open(path, "rb") as f:
            return path, f.read()
    except OSError as exc:
        raise path_error(config, section, "privkey", path, exc) from None


def arc_settings(config: Config) -> ArcSettings | None:
    """``[arc]``: the sealing key (read now, and tried once) when ``privkey``
    and ``domain`` are set; None otherwise."""
    g = config.get
    privkey_path = g("arc", "privkey")
    domain = str(g("arc", "domain") or "").lower()
    if not privkey_path or not domain:
        return None
    path, key = _read_key(config, "arc", str(privkey_path))
    settings = ArcSettings(privkey=key, domain=domain,
                           selector=str(g("arc", "selector") or "default"))
    try:
        seal(b"Authentication-Results: probe.invalid; arc=none\r\n" + _PROBE, settings,
             "probe.invalid")
    except ArcError as exc:
        raise RuntimeBuildError(f"[arc] privkey: {path}: {exc}") from None
    return settings


def dkim_settings(config: Config) -> DkimSettings:
    """``[dkim]``: the signing key (read now, and tried once) when ``privkey``
    and ``domain`` are set; verification settings otherwise."""
    g = config.get
    privkey_path = g("dkim", "privkey")
    domain = str(g("dkim", "domain") or "").lower()
    if not privkey_path or not domain:
        return DkimSettings()
    path, key = _read_key(config, "dkim", str(privkey_path))
    settings = DkimSettings(privkey=key, domain=domain,
                            selector=str(g("dkim", "selector") or "default"))
    try:
        sign(_PROBE, settings)
    except DkimError as exc:
        raise RuntimeBuildError(f"{where(config, 'dkim', 'privkey')}: "
                                f"{os.path.abspath(path)}: {exc}") from None
    return settings


def dnsbl_from(config: Config, resolver: BlocklistResolver) -> Blocklists | None:
    """``[dnsbl]``: the blocklists, or None when no zone is configured."""
    zones: dict[str, tuple[Zone, ...]] = {}
    for option in ("zones", "rhsbl"):
        try:
            zones[option] = parse_zones(str(config.get("dnsbl", option) or ""))
        except ValueError as exc:
            raise RuntimeBuildError(f"[dnsbl] {option}: {exc}") from None
    if not zones["zones"] and not zones["rhsbl"]:
        return None
    return Blocklists(DnsblSettings(zones["zones"], zones["rhsbl"]), resolver)
