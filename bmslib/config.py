"""``pymilter.cfg``: one schema for every option, typed, with its default.

Every option bms reads is declared once in :data:`SCHEMA` with its type, its
default and a one-line description (SPEC §3; ARCHITECTURE.md rule 9).  The
option names of the original bms stay valid, including the ones its code and
its sample disagreed on (``[wiretap] mail_archive`` / ``archive``,
``discard_users`` / ``discard``), and the ``[defang]`` options it also read
from ``[milter]``.

Contract:

* :func:`load_config` reads the files in order; a later file overrides an
  earlier one option by option (``-c sample -c local``).  An empty list gives
  the defaults.
* Anything wrong stops the load with :class:`ConfigError`, whose text is one
  line naming the file, the section, the option, what was expected and what
  was found.  All problems of a load are collected in ``ConfigError.errors``
  (:func:`check_config` returns them), the exception text is the first.
* Options of features bms deliberately does not implement (``[dspam]``,
  ``[gossip]``, ``[milter] errors_url``) are ignored with one line each in
  :attr:`Config.warnings`; they never stop startup.
* Values are parsed by configparser with interpolation off (a ``%`` is just a
  character) and inline comments: ``#`` or ``;`` after whitespace.  Files are
  UTF-8; a file that is not is read as latin-1, as the original did.
* Paths are kept as written: a relative path is relative to the working
  directory of the daemon, not to the config file.  (Data files named by the
  policy, like ``check_user = file:NAME`` or the state database, are resolved
  against ``datadir`` by their consumers, as the original did with ``chdir``.)
* ``[srs] config = FILE`` reads pysrs's own file too; options set in the
  config files themselves win over the ones found there.
"""

from __future__ import annotations

import configparser
import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PATH = "/etc/mail/pymilter.cfg"


class ConfigError(Exception):
    """A configuration that cannot be used.  ``str()`` is one line;
    ``errors`` holds every problem found (the first is ``str()``)."""

    def __init__(self, message: str, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.errors: tuple[str, ...] = tuple(errors) or (message,)


# --------------------------------------------------------------------------
# Value types: a converter from the text in the file to the typed value.


class _Bad(ValueError):
    """A value that does not convert: what was expected, and the offending
    part when it is not the whole value."""

    def __init__(self, expected: str, got: str | None = None) -> None:
        super().__init__(expected)
        self.expected = expected
        self.got = got


@dataclass(frozen=True)
class ValueType:
    name: str  # short name for schema_doc: "bool", "int", "words", ...
    expected: str  # "an integer": completes "expected ..."
    parse: Callable[[str], Any]
    is_list: bool = False


_TRUE = frozenset({"1", "yes", "true", "on"})
_FALSE = frozenset({"0", "no", "false", "off"})


def _bool(text: str) -> bool:
    t = text.lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise _Bad("a boolean (yes/no, true/false, on/off, 1/0)")


BOOL = ValueType("bool", "a boolean (yes/no, true/false, on/off, 1/0)", _bool)
STR = ValueType("str", "a text value", lambda t: t)


def _int_type(minimum: int | None = None, maximum: int | None = None) -> ValueType:
    bounds = _bounds_text(minimum, maximum)
    expected = f"an integer{bounds}"

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise _Bad(expected) from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise _Bad(expected)
        return value

    return ValueType("int", expected, parse)


def _number_type(minimum: float = 0.0, *, positive: bool = False) -> ValueType:
    expected = "a number greater than 0" if positive else f"a number >= {minimum:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise _Bad(expected) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise _Bad(expected)
        if value < minimum or (positive and value <= 0):
            raise _Bad(expected)
        return value

    return ValueType("number", expected, parse)


def _bounds_text(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def _choice_type(*choices: str) -> ValueType:
    expected = "one of " + ", ".join(choices)

    def parse(text: str) -> str:
        for c in choices:
            if text.upper() == c.upper():
                return c
        raise _Bad(expected)

    return ValueType("choice", expected, parse)


def _path(text: str) -> str:
    if "\0" in text:
        raise _Bad("a path")
    return text


PATH = ValueType("path", "a path", _path)


def _split_words(text: str) -> tuple[str, ...]:
    return tuple(w for w in re.split(r"[\s,]+", text) if w)


WORDS = ValueType("words", "a list of words (separated by commas and/or spaces)",
                  _split_words, is_list=True)


def _split_phrases(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in re.split(r"[,\n]", text) if p.strip())


PHRASES = ValueType("phrases", "a comma-separated list (an item may contain spaces)",
                    _split_phrases, is_list=True)

_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")


def _is_domain(name: str) -> bool:
    name = name.rstrip(".")
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return False
    return not labels[-1].isdigit()  # "1" or "10.0.0.1" is no domain name


def _domain(text: str) -> str:
    d = text.lower().rstrip(".")
    if not _is_domain(d):
        raise _Bad("a domain name", text)
    return d


DOMAIN = ValueType("domain", "a domain name", _domain)


def _domains(text: str) -> tuple[str, ...]:
    out = []
    for word in _split_words(text):
        try:
            out.append(_domain(word))
        except _Bad:
            raise _Bad("a list of domain names", word) from None
    return tuple(out)


DOMAINS = ValueType("domains", "a list of domain names", _domains, is_list=True)

ALL_DOMAINS = "*"


def _domains_or_bool(text: str) -> tuple[str, ...]:
    t = text.lower()
    if t in _TRUE:
        return (ALL_DOMAINS,)
    if t in _FALSE:
        return ()
    return _domains(text)


# The original's [spf] reject_neutral/accept_softfail/accept_fail are domain
# lists; "yes" means every domain: ("*",).
DOMAINS_OR_ALL = ValueType("domains|bool", "a list of domain names, or yes/no",
                           _domains_or_bool, is_list=True)


def _nameserver(text: str) -> str:
    """IP, IP:PORT, [IPv6] or [IPv6]:PORT (what ``bmslib.dns`` accepts)."""
    expected = "nameservers as IP, IP:PORT or [IPv6]:PORT"
    host, port = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise _Bad(expected, text)
        port = rest[1:]
        if rest and not port:
            raise _Bad(expected, text)
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise _Bad(expected, text) from None
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise _Bad(expected, text)
    return text


def _nameservers(text: str) -> tuple[str, ...]:
    return tuple(_nameserver(w) for w in _split_words(text))


NAMESERVERS = ValueType("nameservers", "nameservers as IP, IP:PORT or [IPv6]:PORT",
                        _nameservers, is_list=True)

_ADDRESSES_EXPECTED = ("networks (192.168.0.0/16, 2001:db8::/32), addresses, globs (127.*) "
                       "or host names")


def _address_item(item: str) -> str:
    """One ``internal_connect``-style item, as :class:`bmslib.policy.connection.IpList`
    reads it; a typo that would silently become a host name is refused."""
    if any(c in item for c in "*?["):
        if all(c in "0123456789abcdefABCDEF.:*?[]-!" for c in item):
            return item
        raise _Bad(f"a list of {_ADDRESSES_EXPECTED}", item)
    try:
        ipaddress.ip_network(item, strict=False)
        return item
    except ValueError:
        pass
    name, slash, bits = item.partition("/")
    if _is_domain(name.lower()) and not (slash and not (bits.isdigit() and int(bits) <= 128)):
        return item
    if ":" in name or name.replace(".", "").isdigit():
        try:
            ipaddress.ip_address(name)
        except ValueError:
            raise _Bad(f"a list of {_ADDRESSES_EXPECTED}", item) from None
        raise _Bad(f"a list of {_ADDRESSES_EXPECTED} (a network's prefix length is at "
                   "most 32 for IPv4, 128 for IPv6)", item)
    raise _Bad(f"a list of {_ADDRESSES_EXPECTED}", item)


ADDRESSES = ValueType("addresses", f"a list of {_ADDRESSES_EXPECTED}",
                      lambda text: tuple(_address_item(w) for w in _split_words(text)),
                      is_list=True)

_SOCKET_EXPECTED = ("a milter socket: unix:/path, local:/path, /path, inet:PORT@HOST or "
                    "inet6:PORT@HOST")


def _port_ok(text: str) -> bool:
    return text.isdigit() and int(text) < 65536


def _socket(text: str) -> str:
    """libmilter's socket syntax (PROTOCOL.md §1), checked without resolving
    host names: that happens when the socket is opened."""
    kind, sep, rest = text.partition(":")
    if not sep:
        if text.startswith("/"):
            return text
        raise _Bad(_SOCKET_EXPECTED)
    kind = kind.lower()
    if kind in ("unix", "local"):
        if rest.startswith("/"):
            return text
        raise _Bad(_SOCKET_EXPECTED)
    if kind not in ("inet", "inet6"):
        raise _Bad(_SOCKET_EXPECTED)
    port, at, host = rest.partition("@")
    if not _port_ok(port):
        if ":" in rest and not at:
            raise _Bad(_SOCKET_EXPECTED + " (Postfix's inet:HOST:PORT is written "
                       "inet:PORT@HOST here)")
        raise _Bad(_SOCKET_EXPECTED)
    if at and (not host or any(c.isspace() for c in host)):
        raise _Bad(_SOCKET_EXPECTED)
    return text


SOCKET = ValueType("socket", _SOCKET_EXPECTED, _socket)


def _octal(text: str) -> int:
    expected = "an octal file mode from 000 to 777, like 007 or 0o117"
    t = text.lower()
    t = t[2:] if t.startswith("0o") else t
    if not t or any(c not in "01234567" for c in t):
        raise _Bad(expected)
    value = int(t, 8)
    if value > 0o777:
        raise _Bad(expected)
    return value


OCTAL = ValueType("octal", "an octal file mode from 000 to 777, like 007 or 0o117", _octal)


def _listen(text: str) -> str:
    expected = "a listen address HOST:PORT, [IPv6]:PORT or :PORT"
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise _Bad(expected)
        port = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _Bad(expected) from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host or any(c.isspace() for c in host):
            raise _Bad(expected)
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise _Bad(expected)
    return text


LISTEN = ValueType("listen", "a listen address HOST:PORT, [IPv6]:PORT or :PORT", _listen)


def _backend(text: str) -> str:
    expected = "sqlite:PATH or redis://HOST[:PORT][/DB]"
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if sep and scheme == "sqlite":
        return "sqlite:" + rest
    if sep and scheme in ("redis", "rediss") and rest.startswith("//") and len(rest) > 2:
        return text
    raise _Bad(expected)


BACKEND = ValueType("backend", "sqlite:PATH or redis://HOST[:PORT][/DB]", _backend)


SYSLOG_FACILITIES = ("mail", "daemon", "user", "local0", "local1", "local2", "local3",
                     "local4", "local5", "local6", "local7")


def _log_target(text: str) -> str:
    """``file``, ``stderr``, ``syslog`` or ``syslog:FACILITY`` (lowercased)."""
    t = text.strip().lower()
    kind, colon, facility = t.partition(":")
    if t in ("file", "stderr", "syslog") or (kind == "syslog" and colon
                                             and facility in SYSLOG_FACILITIES):
        return t
    raise _Bad("file, stderr, syslog or syslog:FACILITY (FACILITY one of "
               + ", ".join(SYSLOG_FACILITIES) + ")")


LOG_TARGET = ValueType("log", "file, stderr or syslog[:FACILITY]", _log_target)


# --------------------------------------------------------------------------
# The schema.


@dataclass(frozen=True)
class Option:
    name: str
    type: ValueType
    default: Any
    doc: str
    optional: bool = False  # an empty value means "unset" (None)
    aliases: tuple[str, ...] = ()  # other names in the same section
    # Set for options bms knows but deliberately does not implement: the
    # reason, given once as a warning; the value is ignored.
    unimplemented: str = ""


@dataclass(frozen=True)
class Section:
    name: str
    doc: str
    options: Mapping[str, Option]
    free_form: bool = False  # any option name, values handled by the section
    unimplemented: str = ""  # every option warns with this reason


def cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_WORKERS = _int_type(1, 256)
WORKERS_EXPECTED = f"{_WORKERS.expected}, or auto (one per core)"


def parse_workers(text: str) -> int:
    """An integer 1-256, or ``auto``: one worker per core."""
    if text.strip().lower() == "auto":
        return cores()
    try:
        return int(_WORKERS.parse(text))
    except _Bad:
        raise _Bad(WORKERS_EXPECTED) from None


def _opt(name: str, vtype: ValueType, default: Any, doc: str, **kw: Any) -> Option:
    return Option(name, vtype, default, doc, **kw)


BANNED_EXTS: tuple[str, ...] = (
    "ade", "adp", "asd", "asx", "asp", "bas", "bat", "chm", "cmd", "com", "cpl", "crt", "dll",
    "exe", "hlp", "hta", "inf", "ins", "isp", "js", "jse", "lnk", "mdb", "mde", "msc", "msi",
    "msp", "mst", "ocx", "pcd", "pif", "reg", "scr", "sct", "shs", "url", "vb", "vbe", "vbs",
    "wsc", "wsf", "wsh")

EMAIL_PROVIDERS: tuple[str, ...] = (
    "yahoo.com", "gmail.com", "aol.com", "hotmail.com", "me.com", "googlegroups.com",
    "att.net", "nokiamail.com")

_DEFANG_OPTIONS: tuple[Option, ...] = (
    _opt("scan_rfc822", BOOL, True, "also scan attached messages (message/rfc822)"),
    _opt("scan_zip", BOOL, False, "also look inside zip attachments (nested, with limits)"),
    _opt("scan_html", BOOL, False,
         "remove scripts from HTML parts, disarm on* handlers and javascript: URLs"),
    _opt("block_chinese", BOOL, False, "reject mail in the CJK charsets (big5, gb2312, ...)"),
    _opt("block_charsets", WORDS, (), "reject mail in these charsets (Subject and MIME parts)"),
    _opt("block_forward", WORDS, (),
         "recipients (user@domain) who refuse unedited forwards (Subject Fwd:/[Fw)"),
    _opt("porn_words", PHRASES, (), "reject a Subject containing one of these (any case)"),
    _opt("spam_words", PHRASES, (), "reject a Subject containing one of these (exact case)"),
    _opt("from_words", PHRASES, (),
         "reject these words in the From display name; or one item file:PATH"),
    _opt("banned_exts", WORDS, BANNED_EXTS,
         "attachment name extensions replaced by a warning (the original is saved)"),
)

_MILTER_OPTIONS: tuple[Option, ...] = (
    _opt("socket", SOCKET, "/var/run/milter/pythonsock",
         "where the MTA connects (must match the sendmail X line / Postfix smtpd_milters)",
         aliases=("socketname",)),
    _opt("name", STR, "pythonfilter", "milter name, as in the sendmail X line"),
    _opt("datadir", PATH, "/var/lib/milter",
         "persistent data: state database, DSN templates, word lists"),
    _opt("logdir", PATH, None, "where milter.log is written (default: datadir)",
         optional=True),
    _opt("log", LOG_TARGET, "file",
         "where the log goes: file (milter.log in logdir), syslog[:FACILITY] (the "
         "syslog_socket, facility mail unless given) or stderr (journald under systemd)"),
    _opt("log_format", _choice_type("text", "json"), "text",
         "text (the milter.log lines) or json: one object a line with the connection id, "
         "stage, verdict, reason, client IP, sender, recipients and queue id as fields"),
    _opt("syslog_socket", PATH, "/dev/log", "the syslog socket for log = syslog"),
    _opt("tempdir", PATH, "/var/log/milter/save",
         "originals of defanged messages and other saved copies"),
    _opt("tempdir_max_age", _number_type(0), 7.0,
         "days after which files in tempdir are deleted (0: never)"),
    _opt("timeout", _number_type(positive=True), 600.0,
         "seconds to wait for the MTA before dropping its connection"),
    _opt("umask", OCTAL, None, "process umask, e.g. 007 (unset: leave it as inherited)",
         optional=True),
    _opt("workers", ValueType("int", WORKERS_EXPECTED, parse_workers), 1,
         "worker processes sharing the socket; auto: one per core"),
    _opt("user", STR, None, "run as this user when started as root (e.g. mail)",
         optional=True),
    _opt("group", STR, None,
         "with user: run with this group instead of the user's primary group", optional=True),
    _opt("socket_mode", OCTAL, None,
         "mode of a unix socket file, e.g. 0660 (unset: from the umask)", optional=True),
    _opt("socket_group", STR, None,
         "group of a unix socket file, e.g. postfix (unset: the group bms runs as)",
         optional=True),
    _opt("internal_connect", ADDRESSES, (),
         "internal clients: IPs, CIDRs (IPv4/IPv6), globs like 127.*, host names"),
    _opt("internal_domains", WORDS, (),
         "our MAIL FROM domains (globs); internal clients sending other ones are zombies"),
    _opt("trusted_relay", ADDRESSES, (), "relays (e.g. secondary MXes) that skip SPF"),
    _opt("private_relay", WORDS, (),
         "recipient domains only internal clients may relay to"),
    _opt("internal_mta", ADDRESSES, (),
         "the only internal hosts that may send DSNs (MAIL FROM:<>); empty: all"),
    _opt("hello_blacklist", WORDS, (),
         "our own names: an outsider using one as HELO is rejected"),
    _opt("check_user", WORDS, (),
         "valid recipients: user@domain or file:DOMAIN (file of local parts, in datadir)"),
    _opt("case_sensitive_localpart", BOOL, False,
         "compare local parts in this file case-sensitively"),
    _opt("max_demerits", _int_type(0), None,
         "demerits on one connection that ban its IP (unset: never ban)", optional=True),
    _opt("ban_days", _number_type(positive=True), 7.0, "days a ban lasts"),
    _opt("email_providers", DOMAINS, EMAIL_PROVIDERS,
         "free-mail domains: ban the sender, never the whole domain"),
    _opt("untrapped_exception", _choice_type("CONTINUE", "REJECT", "TEMPFAIL"), "TEMPFAIL",
         "reply when a callback fails unexpectedly (TEMPFAIL: 451 4.3.0)"),
    _opt("log_headers", BOOL, False, "log every header, not only Subject/From/X-Mailer"),
    _opt("dry_run", BOOL, False,
         "evaluate and log (DRYRUN REJECT: ...) but never refuse or change mail"),
    _opt("cbv_timeout", _number_type(positive=True), 20.0,
         "seconds for a whole call-back verification or DSN"),
    _opt("errors_url", STR, "", "web page for reject explanations", unimplemented=(
        "bms does not put a URL in reject replies (it leaked sender data to a web "
        "server); ignored")),
    # Limits (issue 13): no session or client can exhaust the daemon.
    _opt("session_deadline", _number_type(0), 3600.0,
         "seconds an MTA connection may last in all, however it trickles (0: no limit)"),
    _opt("message_deadline", _number_type(0), 1800.0,
         "seconds from MAIL FROM to the verdict at end of message (0: no limit)"),
    _opt("max_connections", _int_type(0), 500,
         "MTA connections served at once per process; more are closed at once (0: no limit)"),
    _opt("max_argument_length", _int_type(0), 2048,
         "longest HELO name or MAIL/RCPT argument list; longer: 501 (0: no limit)"),
)

_LEGACY_MILTER_DEFANG = tuple(o.name for o in _DEFANG_OPTIONS)

SCHEMA: Mapping[str, Section] = {s.name: s for s in (
    Section("milter", "the daemon and the connection policy",
            {o.name: o for o in _MILTER_OPTIONS}),
    Section("defang", "content checks: attachments, Subject words, charsets",
            {o.name: o for o in _DEFANG_OPTIONS}),
    Section("srs", "Sender Rewriting Scheme (pysrs); on when secret is set", {o.name: o for o in (
        _opt("config", PATH, None,
             "pysrs's own file (e.g. /etc/mail/pysrs.cfg), read too; this file wins",
             optional=True),
        _opt("secret", STR, None, "HMAC secret, as used by the pysrs socketmap; turns SRS on",
             optional=True),
        _opt("maxage", _int_type(1), 8, "days an SRS address stays valid"),
        _opt("hashlength", _int_type(1, 64), 8, "hash characters in SRS addresses"),
        _opt("separator", _choice_type("=", "-", "+"), "=", "SRS separator"),
        _opt("database", PATH, None, "pysrs database for opaque rewriting (SRS.DB)",
             optional=True, unimplemented=(
                 "bms signs SRS addresses (pysrs Guarded); the opaque database mode is "
                 "not supported; ignored")),
        _opt("fwdomain", DOMAIN, None,
             "domain of rewritten senders; required when SRS is on", optional=True),
        _opt("sign", DOMAINS, (), "our domains whose senders are signed, not rewritten"),
        _opt("srs", DOMAINS, (), "other domains whose bounces must carry a valid SRS address"),
        _opt("ses", DOMAINS, (), "domains using SES signatures"),
        _opt("reject_spoofed", BOOL, False, "reject bounces to our domains without SRS"),
        _opt("banned_users", WORDS, (),
             "local parts (postmaster, mailer-daemon) whose mail is treated as a DSN"),
        _opt("nosrs", DOMAINS, (), "pysrs socketmap: domains never rewritten (bms ignores)"),
        _opt("socket", STR, None, "pysrs socketmap socket (bms ignores)", optional=True),
        _opt("secret.0", STR, None, "pysrs: older secret still accepted", optional=True),
        _opt("secret.1", STR, None, "pysrs: older secret still accepted", optional=True),
        _opt("secret.2", STR, None, "pysrs: older secret still accepted", optional=True),
    )}),
    Section("spf", "SPF checks and the access file policy", {o.name: o for o in (
        _opt("access_file", PATH, "/etc/mail/access",
             "sendmail access file (text; a .db name reads the text file beside it); "
             "empty: none", optional=True),
        _opt("access_file_colon", BOOL, True,
             "access keys are Tag:subject (no: Tag!subject, as for old makemap files)"),
        _opt("access_file_nulls", BOOL, False,
             "access keys end in NUL (postmap -N); irrelevant for the text file"),
        _opt("best_guess", BOOL, False,
             "evaluate SPF none as v=spf1 a/24 mx/24 ptr for policy"),
        _opt("reject_noptr", BOOL, False,
             "3 strikes (no PTR, no valid HELO, no SPF) default REJECT instead of CBV"),
        _opt("reject_neutral", DOMAINS_OR_ALL, (),
             "sender domains whose SPF neutral and softfail default to REJECT "
             "(yes: every domain)"),
        _opt("accept_softfail", DOMAINS_OR_ALL, (),
             "sender domains whose softfail defaults to OK (yes: every domain)"),
        _opt("accept_fail", DOMAINS_OR_ALL, (),
             "sender domains whose fail defaults to CBV (yes: every domain)"),
        _opt("delegate", DOMAIN, None,
             "look up missing SPF records under DOMAIN._spf.<delegate>", optional=True),
        _opt("trusted_forwarder", DOMAINS, (),
             "forwarders whose SPF pass (for postmaster@forwarder) is trusted",
             aliases=("trusted_relay",)),
        _opt("supply_sender", BOOL, False,
             "add Sender: <MAIL FROM> when From: is another domain"),
    )}),
    Section("scrub", "outgoing mail", {o.name: o for o in (
        _opt("hide_path", DOMAINS, (),
             "recipient domains for which all Received headers are removed"),
        _opt("reject_virus_from", DOMAINS, (),
             "sender domains whose banned attachments are rejected, not replaced"),
        _opt("internal_policy", BOOL, False, "apply the SPF-Pass policy to internal senders"),
    )}),
    Section("wiretap", "copies and archive", {o.name: o for o in (
        _opt("blind", BOOL, True, "wiretap copies are not shown in a Cc: header",
             aliases=("blind_wiretap",)),
        _opt("users", WORDS, (), "senders (user@domain, @domain) whose mail is copied to dest"),
        _opt("dest", STR, None, "where wiretap copies go; required with users",
             optional=True),
        _opt("discard", WORDS, (), "senders whose mail silently goes to nobody else",
             aliases=("discard_users",)),
        _opt("archive", STR, None,
             "append every accepted message to this mbox file, or maildir:/path",
             optional=True, aliases=("mail_archive",)),
        _opt("smart_alias", WORDS, (),
             "names of further options in [wiretap] holding smart aliases"),
    )}),
    Section("smart_alias", "NAME = sender, recipient[, destination...]", {}, free_form=True),
    Section("greylist", "greylisting; data in the state store", {o.name: o for o in (
        _opt("enabled", BOOL, False, "greylist (also on when dbfile is given, for old configs)"),
        _opt("dbfile", PATH, None, "old configs: turns greylisting on; the file is not used",
             optional=True),
        _opt("time", _number_type(0), 5.0, "minutes a retry must wait"),
        _opt("expire", _number_type(0), 6.0, "hours within which the first retry must come"),
        _opt("retain", _number_type(0), 36.0, "days a known triplet is kept since last seen"),
    )}),
    Section("dkim", "DKIM signing of internal mail (verification is always on)",
            {o.name: o for o in (
                _opt("privkey", PATH, None, "PEM private key; with domain turns signing on",
                     optional=True),
                _opt("domain", DOMAIN, None, "signing domain (d=); required with privkey",
                     optional=True),
                _opt("selector", STR, "default", "selector (s=)"),
            )}),
    Section("dmarc", "DMARC for outside mail (policy from the DMARC-* access keys)",
            {o.name: o for o in (
                _opt("enabled", BOOL, True, "evaluate DMARC after SPF and DKIM"),
                _opt("trusted_arc_sealers", WORDS, (),
                     "ARC sealers (d= of the newest ARC-Seal) whose valid chain lets a "
                     "DMARC or SPF failure of forwarded mail through"),
                _opt("report_org", STR, "", "org_name of aggregate reports (bms dmarc report; "
                     "empty: bms)"),
                _opt("report_email", STR, "", "email of aggregate reports (the reporter's "
                     "contact address)"),
            )}),
    Section("arc", "ARC: chains of outside mail are always verified; with privkey and "
            "domain, mail with our Authentication-Results is sealed", {o.name: o for o in (
                _opt("privkey", PATH, None, "PEM private key; with domain turns sealing on",
                     optional=True),
                _opt("domain", DOMAIN, None, "sealing domain (d=); required with privkey",
                     optional=True),
                _opt("selector", STR, "default", "selector (s=)"),
            )}),
    Section("dnsbl", "DNS blocklists (policy from the DNSBL:/RHSBL: access keys)",
            {o.name: o for o in (
                _opt("zones", STR, "", "IP lists for the client: zone or "
                     "zone=127.0.0.2,127.0.0.4 (only those answers list), blank-separated"),
                _opt("rhsbl", STR, "", "domain lists for the HELO name, the MAIL FROM "
                     "domain and the From: domain (same form)"),
            )}),
    Section("dns", "the resolver used for SPF, PTR, MX", {o.name: o for o in (
        _opt("nameservers", NAMESERVERS, (),
             "IP, IP:PORT or [IPv6]:PORT; empty: those of /etc/resolv.conf"),
        _opt("timeout", _number_type(positive=True), 2.0, "seconds per query to one server"),
        _opt("lifetime", _number_type(positive=True), 5.0,
             "seconds for one lookup, all servers and retries"),
        _opt("cache_size", _int_type(0), 10000, "answers cached (0: no cache)"),
        _opt("max_ttl", _int_type(0), 86400, "cap on cached answer lifetimes (seconds)"),
        _opt("max_negative_ttl", _int_type(0), 3600,
             "cap on cached 'no such name/record' lifetimes (seconds)"),
    )}),
    Section("state", "greylist, bans, whitelists, CBV cache", {o.name: o for o in (
        _opt("backend", BACKEND, "sqlite:bms.sqlite",
             "sqlite:PATH (relative to datadir) or redis://HOST[:PORT][/DB]"),
    )}),
    Section("metrics", "Prometheus endpoint", {o.name: o for o in (
        _opt("listen", LISTEN, None, "HOST:PORT to serve /metrics on (unset: off)",
             optional=True),
    )}),
    Section("dspam", "dspam content filter", {}, free_form=True, unimplemented=(
        "dspam is not part of bms (use a content scanner in the MTA); ignored")),
    Section("gossip", "GOSSiP reputation", {}, free_form=True, unimplemented=(
        "GOSSiP is not part of bms; ignored")),
)}


def _alias_table() -> dict[tuple[str, str], tuple[str, str]]:
    table: dict[tuple[str, str], tuple[str, str]] = {}
    for section in SCHEMA.values():
        for opt in section.options.values():
            table[(section.name, opt.name)] = (section.name, opt.name)
            for alias in opt.aliases:
                table[(section.name, alias)] = (section.name, opt.name)
    # The original read these from [milter] when there was no [defang].
    for name in _LEGACY_MILTER_DEFANG:
        table[("milter", name)] = ("defang", name)
    return table


_ALIASES = _alias_table()


def _resolve(section: str, option: str) -> tuple[str, str] | None:
    return _ALIASES.get((section.lower(), option.lower()))


# --------------------------------------------------------------------------
# The loaded configuration.

Key = tuple[str, str]


@dataclass(frozen=True)
class Config:
    """A loaded configuration: typed values over the schema defaults."""

    files: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    _values: Mapping[Key, Any] = field(default_factory=dict, repr=False)
    _sources: Mapping[Key, str] = field(default_factory=dict, repr=False)
    _free: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict,
                                                                repr=False)

    def get(self, section: str, option: str) -> Any:
        """The typed value, or the schema default; KeyError for an option that
        is not in the schema (or is ignored, like the dspam ones)."""
        key = _resolve(section, option)
        if key is None:
            raise KeyError(f"[{section}] {option}")
        opt = SCHEMA[key[0]].options[key[1]]
        if opt.unimplemented:
            raise KeyError(f"[{section}] {option}")
        if key in self._values:
            return self._values[key]
        if key == ("milter", "logdir"):
            return self.get("milter", "datadir")
        if key == ("greylist", "enabled"):
            return ("greylist", "dbfile") in self._values
        return opt.default

    def is_set(self, section: str, option: str) -> bool:
        """Whether a file gave the option (under any of its names)."""
        key = _resolve(section, option)
        if key is None:
            raise KeyError(f"[{section}] {option}")
        return key in self._values

    def source(self, section: str, option: str) -> str | None:
        """The file that gave the option's value, or None for a default."""
        key = _resolve(section, option)
        if key is None:
            raise KeyError(f"[{section}] {option}")
        return self._sources.get(key)

    def section_items(self, section: str) -> dict[str, Any]:
        """For ``[smart_alias]``: alias name -> ``(sender, recipient, dest...)``
        (at least two fields; the destination defaults to the name), including
        the aliases named by ``[wiretap] smart_alias``.  For a schema section:
        every option with its value."""
        name = section.lower()
        if name not in SCHEMA or SCHEMA[name].unimplemented:
            raise KeyError(f"[{section}]")
        if SCHEMA[name].free_form:
            return dict(self._free.get(name, {}))
        return {opt: self.get(name, opt) for opt in SCHEMA[name].options
                if not SCHEMA[name].options[opt].unimplemented}


# --------------------------------------------------------------------------
# Loading.


def _show(text: str, limit: int = 80) -> str:
    """A value quoted for a one-line message (control characters escaped)."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return repr(text)


@dataclass
class _Value:
    value: Any
    source: str
    spelled: str  # "[section] option" as written


class _Loader:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.warned: set[Key] = set()
        self.values: dict[Key, _Value] = {}
        self.free: dict[str, dict[str, tuple[str, str]]] = {}  # section -> name -> (raw, file)
        self.wiretap_extra: dict[str, tuple[str, str]] = {}  # name -> (raw, file)
        self.files: list[str] = []

    # -- one file -----------------------------------------------------------

    def read_text(self, path: str) -> str | None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            self.errors.append(f"{path}: cannot read: {exc.strerror or exc}")
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self.warnings.append(f"{path}: not UTF-8, read as latin-1")
            return data.decode("latin-1")

    def parse(self, path: str, text: str) -> configparser.ConfigParser | None:
        cp = configparser.ConfigParser(
            interpolation=None, inline_comment_prefixes=("#", ";"),
            comment_prefixes=("#", ";"), strict=True, empty_lines_in_values=False,
            default_section="\0no default section")
        try:
            cp.read_string(text, source=path)
        except configparser.MissingSectionHeaderError as exc:
            self.errors.append(f"{path}: line {exc.lineno}: expected a [section] header, "
                               f"got {_show(exc.line.strip())}")
            return None
        except configparser.DuplicateSectionError as exc:
            self.errors.append(f"{path}: line {exc.lineno}: section [{exc.section}] "
                               "appears twice")
            return None
        except configparser.DuplicateOptionError as exc:
            self.errors.append(f"{path}: line {exc.lineno}: [{exc.section}] {exc.option}: "
                               "given twice in the section")
            return None
        except configparser.ParsingError as exc:
            lineno, line = exc.errors[0] if exc.errors else (0, "")
            self.errors.append(f"{path}: line {lineno}: expected 'option = value', "
                               f"got {_show(str(line).strip())}")
            return None
        except configparser.Error as exc:
            self.errors.append(f"{path}: {str(exc).splitlines()[0]}")
            return None
        return cp

    def read_file(self, path: str, *, include: bool = False) -> None:
        text = self.read_text(path)
        if text is None:
            return
        self.files.append(path)
        cp = self.parse(path, text)
        if cp is None:
            return
        in_file: dict[Key, str] = {}
        for raw_section in cp.sections():
            sname = raw_section.strip().lower()
            section = SCHEMA.get(sname)
            if section is None:
                close = difflib.get_close_matches(sname, list(SCHEMA), n=1)
                hint = f"did you mean [{close[0]}]?" if close else \
                    "expected one of " + ", ".join(f"[{s}]" for s in SCHEMA)
                self.errors.append(f"{path}: [{raw_section}]: unknown section ({hint})")
                continue
            for option in cp.options(raw_section):
                raw = cp.get(raw_section, option).strip()
                self.option(path, section, option, raw, in_file, include=include)

    def option(self, path: str, section: Section, option: str, raw: str,
               in_file: dict[Key, str], *, include: bool) -> None:
        where = f"[{section.name}] {option}"
        if section.unimplemented:
            self.warn((section.name, ""), f"{path}: [{section.name}]: {section.unimplemented}")
            return
        if section.free_form:
            if include and option in self.free.get(section.name, {}):
                return
            self.free.setdefault(section.name, {})[option] = (raw, path)
            return
        key = _resolve(section.name, option)
        if key is None:
            if section.name == "wiretap":  # maybe a name listed in [wiretap] smart_alias
                if not (include and option in self.wiretap_extra):
                    self.wiretap_extra[option] = (raw, path)
                return
            self.errors.append(f"{path}: {where}: unknown option{self.suggest(section, option)}")
            return
        opt = SCHEMA[key[0]].options[key[1]]
        if opt.unimplemented:
            self.warn(key, f"{path}: {where}: {opt.unimplemented}")
            return
        if key in in_file and in_file[key] != where:
            self.errors.append(f"{path}: {where}: given twice, also as {in_file[key]}")
            return
        in_file[key] = where
        if include and key in self.values:
            return  # the config files themselves win over the included file
        try:
            value = self.convert(opt, raw)
        except _Bad as bad:
            got = raw if bad.got is None else bad.got
            self.errors.append(f"{path}: {where}: expected {bad.expected}, got {_show(got)}")
            return
        self.values[key] = _Value(value, path, where)

    @staticmethod
    def convert(opt: Option, raw: str) -> Any:
        if raw == "":
            if opt.optional:
                return None
            if opt.type.is_list:
                return ()
            if opt.type is STR or opt.type is PATH:
                return ""  # a path "": the working directory
            raise _Bad(opt.type.expected)
        return opt.type.parse(raw)

    @staticmethod
    def suggest(section: Section, option: str) -> str:
        names = list(section.options)
        names += [a for o in section.options.values() for a in o.aliases]
        if section.name == "milter":
            names += list(_LEGACY_MILTER_DEFANG)
        close = difflib.get_close_matches(option, names, n=1)
        return f" (did you mean {close[0]}?)" if close else ""

    def warn(self, key: Key, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self.warnings.append(message)

    # -- after all files ------------------------------------------------------

    def read_include(self) -> None:
        v = self.values.get(("srs", "config"))
        if v is None or not v.value:
            return
        path = v.value
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            self.warnings.append(f"{v.source}: [srs] config: cannot read {path}: "
                                 f"{exc.strerror or exc}; SRS settings from it are not used")
            return
        self.read_file(path, include=True)

    def smart_aliases(self) -> dict[str, tuple[str, ...]]:
        aliases: dict[str, tuple[str, ...]] = {}
        listed = self.values.get(("wiretap", "smart_alias"))
        names: tuple[str, ...] = listed.value if listed else ()
        entries: list[tuple[str, str, str, str]] = []  # (section, name, raw, file)
        for name in names:
            key = name.lower()
            if key not in self.wiretap_extra:
                assert listed is not None
                self.errors.append(
                    f"{listed.source}: [wiretap] smart_alias: expected names of options "
                    f"in [wiretap], got {_show(name)} (no such option)")
                continue
            raw, path = self.wiretap_extra[key]
            entries.append(("wiretap", key, raw, path))
        listed_names = {n.lower() for n in names}
        for name, (_raw, path) in self.wiretap_extra.items():
            if name not in listed_names:
                self.errors.append(f"{path}: [wiretap] {name}: unknown option"
                                   f"{self.suggest(SCHEMA['wiretap'], name)}")
        for name, (raw, path) in self.free.get("smart_alias", {}).items():
            entries.append(("smart_alias", name, raw, path))
        for sname, name, raw, path in entries:
            fields = tuple(f.strip() for f in raw.split(","))
            if len(fields) < 2 or not all(fields):
                self.errors.append(
                    f"{path}: [{sname}] {name}: expected 'sender, recipient[, destination...]'"
                    f", got {_show(raw)}")
                continue
            aliases[name] = fields if len(fields) > 2 else (*fields, name)
        return aliases

    def require(self, when: Key, needs: Key, expected: str) -> None:
        """``needs`` must be set when ``when`` is."""
        if when in self.values and needs not in self.values:
            src = self.values[when]
            self.errors.append(
                f"{src.source}: [{needs[0]}] {needs[1]}: expected {expected} "
                f"(required by {src.spelled}), got nothing")

    def check(self) -> None:
        def truthy(key: Key) -> bool:
            v = self.values.get(key)
            return v is not None and bool(v.value)

        # An empty value of an optional option whose default is "unset" is the
        # default: drop it, so that "set" means "has a value".  (An empty
        # access_file, whose default is a file, stays: no access file.)
        for key in [k for k, v in self.values.items()
                    if v.value is None and SCHEMA[k[0]].options[k[1]].default is None]:
            del self.values[key]
        # SRS: on when a secret is given; then fwdomain is needed by pysrs.
        self.require(("srs", "secret"), ("srs", "fwdomain"), "a domain name")
        if ("srs", "secret") not in self.values:
            for name in ("sign", "srs", "ses", "reject_spoofed"):
                if truthy(("srs", name)):
                    src = self.values[("srs", name)]
                    self.errors.append(
                        f"{src.source}: [srs] secret: expected the SRS secret "
                        f"(required by {src.spelled}), got nothing")
                    break
        self.require(("dkim", "domain"), ("dkim", "privkey"), "a private key file")
        self.legacy_defaults()
        if truthy(("wiretap", "users")):
            self.require(("wiretap", "users"), ("wiretap", "dest"), "an address")


    def legacy_defaults(self) -> None:
        """What the original did with its own sample config: a DKIM key
        without a domain did not sign, and no access file was the default."""
        key = self.values.get(("dkim", "privkey"))
        if key is not None and ("dkim", "domain") not in self.values:
            self.warnings.append(f"{key.source}: [dkim] privkey without [dkim] domain: "
                                 "not signing (set domain to sign)")
        access = ("spf", "access_file")
        default = SCHEMA["spf"].options["access_file"].default
        if access not in self.values and not os.path.exists(default):
            self.warnings.append(f"[spf] access_file not set and {default} does not exist: "
                                 "no access file, the built-in SPF defaults apply")
            self.values[access] = _Value("", "", "[spf] access_file")


def _load(paths: Sequence[str]) -> tuple[_Loader, dict[str, tuple[str, ...]]]:
    loader = _Loader()
    for path in paths:
        loader.read_file(path)
    if not loader.errors:
        loader.read_include()
    aliases = loader.smart_aliases()
    loader.check()
    return loader, aliases


def load_config(paths: Sequence[str]) -> Config:
    """Read ``paths`` in order (later files override earlier ones)."""
    loader, aliases = _load(paths)
    if loader.errors:
        raise ConfigError(loader.errors[0], loader.errors)
    return Config(
        files=tuple(loader.files),
        warnings=tuple(loader.warnings),
        _values={k: v.value for k, v in loader.values.items()},
        _sources={k: v.source for k, v in loader.values.items()},
        _free={"smart_alias": aliases},
    )


def check_config(paths: Sequence[str]) -> list[str]:
    """``[]`` when ``paths`` load, else one line per problem (not warnings)."""
    loader, _ = _load(paths)
    return list(loader.errors)


def _default_text(opt: Option) -> str:
    value = opt.default
    if value is None:
        if opt.name == "logdir":
            return "(datadir)"
        return "(unset)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ", ".join(value) if value else "(empty)"
    if isinstance(value, int) and opt.type is OCTAL:
        return f"{value:03o}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def default_text(opt: Option) -> str:
    """An option's default as the docs show it (``yes``, ``(unset)``, ``007``, ...)."""
    return _default_text(opt)


def schema_doc() -> str:
    """Every section and option with its type, default and meaning."""
    lines: list[str] = []
    for section in SCHEMA.values():
        lines.append(f"[{section.name}]  {section.doc}")
        if section.unimplemented:
            lines.append(f"  (any option: {section.unimplemented})")
        for opt in section.options.values():
            names = " / ".join((opt.name, *opt.aliases))
            lines.append(f"  {names} ({opt.type.name}) = {_default_text(opt)}: {opt.doc}")
            if opt.unimplemented:
                lines.append(f"      {opt.unimplemented}")
        if section.name == "defang":
            lines.append("  (these may also be given in [milter], as the original allowed)")
        lines.append("")
    return "\n".join(lines)


def option_names(sections: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """``(section, option)`` for every option of the schema (canonical names)."""
    wanted = set(sections) if sections is not None else None
    return [(s.name, o) for s in SCHEMA.values() for o in s.options
            if wanted is None or s.name in wanted]
