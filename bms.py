"""bms: the policy milter daemon for sendmail and Postfix.

This is the composition root: it reads ``pymilter.cfg`` (``-c``, repeatable,
later files override earlier ones), builds the policy (Milter.runtime), and
serves it on the milter socket (Milter.server) with one
:class:`Milter.glue.BmsMilter` per MTA connection.

Signals: SIGTERM/SIGINT stop (running sessions finish, bounded); SIGHUP
re-reads the configuration, access file and templates (a broken new
configuration is refused with a log line and the old one stays); SIGUSR1
reopens milter.log after logrotate.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence

import Milter
from Milter import connid, lowlevel
from Milter.config import DEFAULT_PATH, Config, ConfigError, load_config
from Milter.glue import BmsMilter
from Milter.log import reopen_logs, setup_logging
from Milter.runtime import Runtime, RuntimeBuildError, build_runtime, describe
from Milter.server import MilterServer, SocketSpecError, parse_socket_spec
from Milter.state.sqlite import SqliteStore

log = logging.getLogger("bms")

EXCEPTION_POLICY = {"CONTINUE": Milter.CONTINUE, "REJECT": Milter.REJECT,
                    "TEMPFAIL": Milter.TEMPFAIL}


def mta_config_lines(socket_spec: str, name: str) -> list[str]:
    """The sendmail X line and the Postfix lines that reach ``socket_spec``."""
    spec = parse_socket_spec(socket_spec)
    if spec.is_unix:
        postfix = f"unix:{spec.address}"
    else:
        assert isinstance(spec.address, tuple)
        host, port = spec.address
        postfix = f"inet:[{host}]:{port}" if ":" in host else f"inet:{host}:{port}"
    return [
        f"sendmail.cf: X{name}, S={socket_spec}, F=T, T=C:5m;S:20s;R:60s;E:5m",
        f"sendmail.cf: O InputMailFilters={name}",
        f"sendmail.mc: INPUT_MAIL_FILTER(`{name}', "
        f"`S={socket_spec}, F=T, T=C:5m;S:20s;R:60s;E:5m')",
        f"postfix main.cf: smtpd_milters = {postfix}",
        f"postfix main.cf: non_smtpd_milters = {postfix}",
        "postfix main.cf: milter_default_action = tempfail",
    ]


class Daemon:
    """Holds the current :class:`Runtime` and replaces it on reload."""

    def __init__(self, paths: Sequence[str], config: Config, runtime: Runtime) -> None:
        self.paths = tuple(paths)
        self.config = config
        self.runtime = runtime
        self._lock = threading.Lock()

    def make_milter(self) -> BmsMilter:
        return BmsMilter(self.runtime.session())

    def allocate_ids(self, count: int) -> int:
        return self.runtime.store.reserve("connid", count)

    def reload(self) -> bool:
        """Re-read config, access file and templates; keep the old ones on error."""
        with self._lock:
            try:
                config = load_config(self.paths)
                runtime = build_runtime(config, store=self._store_for(config))
            except (ConfigError, RuntimeBuildError) as exc:
                log.error("RELOAD REFUSED: %s; keeping the configuration loaded before", exc)
                return False
            except Exception:  # a bug: still keep serving with the old configuration
                log.exception("RELOAD REFUSED: internal error; keeping the configuration "
                              "loaded before")
                return False
            for section, option in STARTUP_ONLY:
                if config.get(section, option) != self.config.get(section, option):
                    log.warning("reload: [%s] %s changed; it takes effect at restart",
                                section, option)
            for warning in config.warnings:
                log.warning("config: %s", warning)
            self.config, self.runtime = config, runtime
            runtime.access.reload()
            log.info("RELOAD: %s", ", ".join(f"{k} {v}" for k, v in describe(runtime).items()))
            return True

    def _store_for(self, config: Config) -> SqliteStore | None:
        """The open store, unless the new config names another one."""
        old = self.runtime
        same = (config.get("state", "backend") == old.config.get("state", "backend")
                and config.get("milter", "datadir") == old.config.get("milter", "datadir"))
        return old.store if same else None


# Options read once at startup: the socket is open, the workers forked.
STARTUP_ONLY = (("milter", "socket"), ("milter", "name"), ("milter", "workers"),
                ("milter", "logdir"), ("milter", "umask"), ("milter", "timeout"))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bms", description=(__doc__ or "").splitlines()[0])
    p.add_argument("-c", "--config", action="append", metavar="PATH",
                   help=f"configuration file (default {DEFAULT_PATH}); repeat to layer "
                        "files, later ones override earlier ones")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration (and access file, templates) and exit")
    p.add_argument("--foreground", action="store_true",
                   help="stay in the foreground (bms never detaches; the init script "
                        "or systemd runs it in the background)")
    p.add_argument("--print-mta-config", action="store_true",
                   help="print the sendmail and Postfix lines for the socket and exit")
    p.add_argument("--socket", help="override [milter] socket (libmilter syntax)")
    p.add_argument("--logdir", help="override [milter] logdir ('-' for stderr)")
    p.add_argument("--workers", type=int, help="override [milter] workers")
    return p.parse_args(argv)


def fail(message: str, code: int = 2) -> int:
    print(f"bms: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    paths = args.config or [DEFAULT_PATH]
    try:
        config = load_config(paths)
    except ConfigError as exc:
        return fail(str(exc), 1 if args.check_config else 2)
    for warning in config.warnings:
        print(f"bms: warning: {warning}", file=sys.stderr)
    socket_spec = args.socket or str(config.get("milter", "socket"))
    name = str(config.get("milter", "name"))
    try:
        lines = mta_config_lines(socket_spec, name)
    except SocketSpecError as exc:
        return fail(str(exc), 1 if args.check_config else 2)
    if args.print_mta_config:
        print("\n".join(lines))
        return 0
    if args.check_config:
        try:
            build_runtime(config)
        except RuntimeBuildError as exc:
            return fail(str(exc), 1)
        print(f"bms: configuration OK ({', '.join(config.files)})")
        return 0

    logdir = args.logdir or str(config.get("milter", "logdir") or
                                config.get("milter", "datadir") or ".")
    setup_logging(None if logdir == "-" else logdir)
    for warning in config.warnings:
        log.warning("config: %s", warning)
    try:
        runtime = build_runtime(config)
    except RuntimeBuildError as exc:
        log.error("cannot start: %s", exc)
        return fail(str(exc))
    daemon = Daemon(paths, config, runtime)
    connid.set_allocator(daemon.allocate_ids)
    workers = args.workers or int(config.get("milter", "workers"))
    umask = config.get("milter", "umask")
    reg = lowlevel.Registration(
        name=name, callbacks=dict(Milter.glue_callbacks(daemon.make_milter)),
        registered=True, conn=socket_spec, timeout=float(config.get("milter", "timeout")),
        workers=workers, umask=None if umask is None else int(umask),
        exception_policy=EXCEPTION_POLICY[str(config.get("milter", "untrapped_exception"))
                                          .upper()])
    server = MilterServer.from_registration(reg)
    server.on_reload = daemon.reload
    server.on_reopen = reopen_logs
    log.info("bms starting on %s (%d worker%s), pid %d", socket_spec,
             workers, "" if workers == 1 else "s", os.getpid())
    log.info("%s", ", ".join(f"{k} {v}" for k, v in describe(runtime).items()))
    for line in lines:
        log.info("%s", line)
    try:
        server.open()
        server.serve_forever()
    except OSError as exc:
        log.error("cannot run: %s", exc)
        return fail(f"cannot listen on {socket_spec}: {exc}", 1)
    log.info("bms stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
