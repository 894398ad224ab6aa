"""The manual pages ``bms(8)`` and ``pymilter.cfg(5)``, written from the
argparse definitions (the daemon's and :func:`bmslib.cli.build_parser`'s)
and from the configuration schema (:data:`bmslib.config.SCHEMA`), so the
pages cannot drift from the program.  ``scripts/manpages.py`` writes them
into ``bmslib/man/``; a test regenerates them and compares the bytes; the
package installs them into ``share/man/man8`` and ``share/man/man5``.

The output is plain man(7) roff, the same bytes on every run (no date)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence

from . import __version__
from .config import DEFAULT_PATH, SCHEMA, Option, Section, default_text

PAGES = {"bms.8": "man8", "pymilter.cfg.5": "man5"}


def roff(text: str) -> str:
    """``text`` safe in roff: backslashes and hyphens escaped, no line
    starting with a control character."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line
                     for line in out.split("\n"))


def _bold(text: str) -> str:
    return f"\\fB{roff(text)}\\fR"


def _italic(text: str) -> str:
    return f"\\fI{roff(text)}\\fR"


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    return formatter._expand_help(action) if action.help else ""


def _option_heading(action: argparse.Action) -> str:
    """``\\fB\\-c\\fR, \\fB\\-\\-config\\fR \\fIPATH\\fR`` for an option or positional."""
    if not action.option_strings:
        return _italic(str(action.metavar or action.dest))
    names = ", ".join(_bold(name) for name in action.option_strings)
    if action.nargs == 0:
        return names
    return f"{names} {_italic(str(action.metavar or action.dest.upper()))}"


def _options(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.dest in skip:
            continue
        yield ".TP"
        yield _option_heading(action)
        yield roff(_help(parser, action))


def _usage(parser: argparse.ArgumentParser) -> str:
    usage = " ".join(parser.format_usage().split())
    return usage.removeprefix("usage: ")


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def _command_sections(cli: argparse.ArgumentParser) -> Iterator[str]:
    for name, group in _subcommands(cli):
        yield f".SS {_bold('bms ' + name)}"
        yield roff(group.description or "")
        actions = _subcommands(group)
        for action_name, parser in actions or [("", group)]:
            yield ".PP"
            yield _bold(_usage(parser))
            if action_name:
                yield ".br"
                yield roff(parser.description or "")
            yield ".RS"
            yield from _options(parser, skip=("config", "help"))  # under OPTIONS
            yield ".RE"


DESCRIPTION = """\
bms is a policy milter for sendmail and Postfix: the MTA hands it every SMTP
connection, and bms decides at each stage (connect, HELO, MAIL FROM, RCPT TO,
headers, end of message) from the client's name and address, SPF, the sendmail
access file, reputation (bans, auto-whitelist, blacklist), greylisting,
call-back verification, DKIM, SRS and the message content; it logs one line per
decision with its reason tag and the connection id.

Signals: SIGTERM and SIGINT stop it (running sessions finish); SIGHUP re-reads
the configuration, the access file and the DSN templates (a broken new
configuration is refused with a log line and the old one stays); SIGUSR1
reopens milter.log after logrotate.
"""


def bms_page(daemon: argparse.ArgumentParser, cli: argparse.ArgumentParser) -> str:
    """bms(8): the daemon's options, then every admin command."""
    lines = [
        f'.TH BMS 8 "" "bms {__version__}" "System Administration"',
        ".SH NAME",
        "bms \\- policy milter daemon for sendmail and Postfix, and its admin commands",
        ".SH SYNOPSIS",
        _bold(_usage(daemon)),
        ".br",
        f"{_bold('bms')} [{_bold('-c')} {_italic('PATH')}] {_italic('COMMAND')} "
        f"{_italic('ACTION')} ...",
        ".SH DESCRIPTION",
        *[".PP\n" + roff(" ".join(p.split())) for p in DESCRIPTION.strip().split("\n\n")],
        ".PP",
        "Without a command, " + _bold("bms") + roff(" is the daemon. With one, it runs that "
                                                     "command against the state store, access "
                                                     "file and policy the same ") + _bold("-c")
        + roff(" files configure, prints the result and exits."),
        ".SH OPTIONS",
        *_options(daemon),
        ".SH COMMANDS",
        *_command_sections(cli),
        ".SH EXIT STATUS",
        roff("The daemon and the commands exit 0 on success, 1 when the configuration check "
             "fails, a ban or list entry to delete is not there, or nothing applies to an "
             "access query, and 2 when they cannot run (bad configuration, unreachable state "
             "store). bms test exits 0 accept, 1 reject, 2 tempfail, 3 discard, 4 when it "
             "cannot run."),
        ".SH FILES",
        ".TP", _bold(DEFAULT_PATH), roff("the configuration, see pymilter.cfg(5)"),
        ".TP", _bold("/etc/mail/access"), roff("the sendmail access file ([spf] access_file)"),
        ".TP", _bold("/var/lib/milter"), roff("datadir: the state database, DSN templates"),
        ".SH SEE ALSO",
        roff("pymilter.cfg(5), sendmail(8), postconf(5), milter-greylist(8)"),
    ]
    return "\n".join(lines) + "\n"


def _option_item(opt: Option) -> Iterator[str]:
    names = " / ".join((opt.name, *opt.aliases))
    yield ".TP"
    yield f"{_bold(names)} = {_italic(opt.type.expected)} (default: {roff(default_text(opt))})"
    yield roff(opt.doc[:1].upper() + opt.doc[1:] + ".")
    if opt.unimplemented:
        yield ".br"
        yield roff("Not implemented: " + opt.unimplemented)


def config_page(sections: Sequence[Section] | None = None) -> str:
    """pymilter.cfg(5): every section and option of the schema."""
    lines = [
        f'.TH PYMILTER.CFG 5 "" "bms {__version__}" "File Formats"',
        ".SH NAME",
        "pymilter.cfg \\- configuration of the bms policy milter",
        ".SH SYNOPSIS",
        _bold(DEFAULT_PATH),
        ".SH DESCRIPTION",
        roff("An INI file: [section] headers, then option = value lines; # and ; start "
             "comments. bms -c takes several files, later ones override earlier ones. An "
             "unknown section or option, or a value of the wrong type, stops bms with one "
             "line naming the file, section and option. Paths are relative to datadir."),
    ]
    for section in sections or list(SCHEMA.values()):
        lines += [f".SH [{roff(section.name)}]",
                  roff(section.doc[:1].upper() + section.doc[1:] + ".")]
        if section.unimplemented:
            lines.append(roff("Any option here: " + section.unimplemented))
        for opt in section.options.values():
            lines += list(_option_item(opt))
    lines += [".SH SEE ALSO", roff("bms(8)")]
    return "\n".join(lines) + "\n"


def pages(daemon: argparse.ArgumentParser, cli: argparse.ArgumentParser) -> dict[str, str]:
    """File name -> text of every page."""
    return {"bms.8": bms_page(daemon, cli), "pymilter.cfg.5": config_page()}
