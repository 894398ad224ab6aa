"""bms: the policy milter daemon for sendmail and Postfix.

This is the composition root: it reads ``pymilter.cfg`` (``-c``, repeatable,
later files override earlier ones), builds the policy (bmslib.runtime), and
serves it on the milter socket (Milter.server) with one
:class:`bmslib.milter.BmsMilter` per MTA connection.

Signals: SIGTERM/SIGINT stop (running sessions finish, bounded); SIGHUP
re-reads the configuration, access file and templates (a broken new
configuration is refused with a log line and the old one stays); SIGUSR1
reopens milter.log after logrotate.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

import bmslib
import Milter
from bmslib import (
    cli,
    exitcodes,
    logtarget,
    metrics,
    preload,
    privileges,
    sdnotify,
    startcheck,
    tempclean,
)
from bmslib.access import AccessFile
from bmslib.config import (
    DEFAULT_PATH,
    WORKERS_EXPECTED,
    Config,
    ConfigError,
    load_config,
    parse_workers,
)
from bmslib.interfaces import StateStore
from bmslib.log import install_handler, reopen_logs
from bmslib.milter import BmsMilter
from bmslib.pidfile import Pidfile, PidfileError
from bmslib.privileges import PrivilegeError
from bmslib.runtime import (
    Runtime,
    RuntimeBuildError,
    build_runtime,
    describe,
    maintain_store,
)
from Milter import connid, lowlevel
from Milter.observer import NULL_OBSERVER
from Milter.server import SocketSpecError, parse_socket_spec

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
        "sendmail.cf: O Milter.macros.connect=j, _, {daemon_name}, {daemon_port}, "
        "{if_name}, {if_addr}",
        "sendmail.mc: define(`confMILTER_MACROS_CONNECT', "
        "`j, _, {daemon_name}, {daemon_port}, {if_name}, {if_addr}')",
        f"postfix main.cf: smtpd_milters = {postfix}",
        f"postfix main.cf: non_smtpd_milters = {postfix}",
        "postfix main.cf: milter_default_action = tempfail",
        "postfix main.cf: milter_connect_macros = j {daemon_name} {daemon_addr} "
        "{daemon_port} v _",
        *unix_socket_notes(spec.is_unix),
    ]


def unix_socket_notes(is_unix: bool) -> list[str]:
    """What a unix socket needs from the MTAs (sendmail runs as root)."""
    if not is_unix:
        return []
    return [
        "note: Postfix's smtpd (user postfix) must be able to write the socket: "
        "[milter] socket_group = postfix, socket_mode = 0660",
        "note: Postfix's smtpd may run chrooted (master.cf chroot column y, Debian's "
        "default): it then looks for the socket below /var/spool/postfix, so put the socket "
        "there (and smtpd_milters = unix:/PATH-BELOW-IT) or use inet:PORT@127.0.0.1",
    ]


class Daemon:
    """Holds the current :class:`Runtime` and replaces it on reload."""

    def __init__(self, paths: Sequence[str], config: Config, runtime: Runtime,
                 logdir: str | None = None) -> None:
        self.paths = tuple(paths)
        self.config = config
        self.runtime = runtime
        self.logdir = logdir  # None: stderr (--logdir -)
        # The configuration the log handler was built from: after a move that
        # failed it differs from self.config, and the next reload tries again.
        self._log_config = config
        self._lock = threading.Lock()

    def make_milter(self) -> BmsMilter:
        return BmsMilter(self.runtime.session())

    def allocate_ids(self, count: int) -> int:
        return self.runtime.ids.reserve("connid", count)

    def reload(self) -> bool:
        """Re-read config, access file and templates; keep the old ones on error."""
        with self._lock:
            try:
                config = load_config(self.paths)
                store = self._store_for(config)
                runtime = build_runtime(
                    config, store=store, ids=self.runtime.ids if store is not None else None,
                    reports=self.runtime.reports if store is not None else None)
            except (ConfigError, RuntimeBuildError) as exc:
                log.error("RELOAD REFUSED: %s; keeping the configuration loaded before", exc)
                metrics.reload(False)
                return False
            except Exception:  # a bug: still keep serving with the old configuration
                log.exception("RELOAD REFUSED: internal error; keeping the configuration "
                              "loaded before")
                metrics.reload(False)
                return False
            for section, option in STARTUP_ONLY:
                if config.get(section, option) != self.config.get(section, option):
                    log.warning("reload: [%s] %s changed; it takes effect at restart",
                                section, option)
            if any(config.get(*o) != self._log_config.get(*o) for o in logtarget.LOG_OPTIONS):
                self._move_log(config)
            for warning in config.warnings + runtime.warnings:
                log.warning("config: %s", warning)
            before, self.config, self.runtime = self.runtime, config, runtime
            before.reports.flush()  # a report run after SIGHUP sees every count
            runtime.access.reload()
            log.info("RELOAD: %s", ", ".join(f"{k} {v}" for k, v in describe(runtime).items()))
            metrics.reload(True)
            return True

    def stopped(self) -> None:
        """Every connection is done: write what waits for the store."""
        self.runtime.reports.flush()

    def _move_log(self, config: Config) -> None:
        """Send the log where the reloaded ``config`` says: the new target is
        opened first, and the old one says where the log went."""
        before = logtarget.describe(self._log_config, self.logdir)
        after = logtarget.describe(config, self.logdir)
        try:
            handler = logtarget.build(config, self.logdir)
        except OSError as exc:
            log.error("reload: cannot log to %s: %s; the log stays in %s",
                      after, exc.strerror or exc, before)
            return
        log.info("reload: the log moves to %s", after)
        install_handler(handler, logging.getLogger().level)
        self._log_config = config
        log.info("reload: the log moved here from %s", before)

    def _store_for(self, config: Config) -> StateStore | None:
        """The open store, unless the new config names another one."""
        old = self.runtime
        same = (config.get("state", "backend") == old.config.get("state", "backend")
                and config.get("milter", "datadir") == old.config.get("milter", "datadir"))
        return old.store if same else None


# Options read once at startup: the socket is open, the workers forked.
STARTUP_ONLY = (("milter", "socket"), ("milter", "name"), ("milter", "workers"),
                ("milter", "logdir"), ("milter", "umask"), ("milter", "timeout"),
                ("milter", "user"), ("milter", "group"), ("milter", "socket_mode"),
                ("milter", "socket_group"), ("metrics", "listen"))


def _workers_arg(text: str) -> int:
    try:
        return parse_workers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected {WORKERS_EXPECTED}, got {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    """The daemon's options (also what bms(8) documents, bmslib.manpage)."""
    p = argparse.ArgumentParser(prog="bms", description=(__doc__ or "").splitlines()[0],
                                epilog=f"{cli.epilog()}\n\n{exitcodes.HELP}")
    p.add_argument("--version", action="version", version=f"bms {bmslib.__version__}")
    p.add_argument("-c", "--config", action="append", metavar="PATH",
                   help=f"configuration file (default {DEFAULT_PATH}); repeat to layer "
                        "files, later ones override earlier ones")
    p.add_argument("--check-config", action="store_true",
                   help="run every check of a start (configuration, access file, templates, "
                        "users and groups, directories as the user bms runs as, the "
                        "socket directory) and exit; 0 means the start will succeed")
    p.add_argument("--foreground", action="store_true",
                   help="stay in the foreground (bms never detaches; milter.init starts "
                        "it in the background and waits for --pidfile, systemd runs it "
                        "as Type=notify)")
    p.add_argument("--pidfile", metavar="PATH",
                   help="lock this file at startup (a second bms with it refuses to "
                        "start), write the pid into it once serving, remove it at exit")
    p.add_argument("--user", help="override [milter] user (switch to it after binding "
                                  "the socket, when started as root)")
    p.add_argument("--print-dirs", action="store_true",
                   help="print the directories bms writes to ('KIND PATH' lines: "
                        "socketdir, datadir, logdir, tempdir) and exit")
    p.add_argument("--print-mta-config", action="store_true",
                   help="print the sendmail and Postfix lines for the socket and exit")
    p.add_argument("--socket", help="override [milter] socket (libmilter syntax)")
    p.add_argument("--logdir", help="override [milter] logdir ('-' for stderr)")
    p.add_argument("--workers", type=_workers_arg,
                   help="override [milter] workers (a number, or auto: one per core)")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def fail(message: str, code: int = exitcodes.CONFIG) -> int:
    print(f"bms: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    command_argv = list(sys.argv[1:] if argv is None else argv)
    if cli.command_of(command_argv) is not None:  # an admin subcommand, not the daemon
        return cli.main(command_argv)
    args = parse_args(argv)
    paths = args.config or [DEFAULT_PATH]
    try:
        config = load_config(paths)
    except ConfigError as exc:
        return fail(str(exc))
    for warning in config.warnings:
        print(f"bms: warning: {warning}", file=sys.stderr)
    socket_spec = args.socket or str(config.get("milter", "socket"))
    name = str(config.get("milter", "name"))
    try:
        lines = mta_config_lines(socket_spec, name)
    except SocketSpecError as exc:
        return fail(f"{exc}{startcheck.socket_hint(socket_spec)}")
    if args.print_mta_config:
        print("\n".join(lines))
        return exitcodes.OK
    logdir = args.logdir or str(config.get("milter", "logdir") or
                                config.get("milter", "datadir") or ".")
    if args.check_config:
        return check_config(args, config, socket_spec, logdir)
    if args.print_dirs:
        for kind, path in writable_dirs(config, socket_spec, logdir):
            print(kind, path)
        return 0
    return run_daemon(args, paths, config, socket_spec, logdir, lines)


def check_config(args: argparse.Namespace, config: Config, socket_spec: str,
                 logdir: str) -> int:
    """What a start checks, in the order of a start, as the user bms runs as:
    users and groups, the socket directory (as the starting user), then after
    the switch the directories, access file, templates and everything else."""
    try:
        drop = privileges.plan(args.user or config.get("milter", "user"),
                               config.get("milter", "group"), euid=os.geteuid())
        sock = privileges.socket_plan(drop, config.get("milter", "socket_group"),
                                      config.get("milter", "socket_mode"))
    except PrivilegeError as exc:
        return fail(str(exc))
    warnings = [drop.warning] if drop.warning else []
    spec = parse_socket_spec(socket_spec)
    missing = startcheck.socket_dir_missing(config, str(spec.address)) if spec.is_unix \
        else None
    if missing:  # created by the systemd unit or milter.init, just before the start
        warnings.append(missing)
    else:
        code = socket_problem(config, socket_spec, sock)
        if code:
            return code
    code = become_user(drop, config, socket_spec, logdir)  # the check runs as that user too
    if code:
        return code
    logging.getLogger().addHandler(logging.NullHandler())  # findings are printed below
    try:
        checked = build_runtime(config)
    except RuntimeBuildError as exc:
        return fail(str(exc))
    access = checked.access
    if isinstance(access, AccessFile):
        if access.problems:
            for problem in access.problems:
                print(f"bms: {problem}", file=sys.stderr)
            return exitcodes.CONFIG
        warnings += startcheck.near_miss_tags(access)
    for warning in (*warnings, *checked.warnings):
        print(f"bms: warning: {warning}", file=sys.stderr)
    print(f"bms: configuration OK ({', '.join(config.files)})")
    return exitcodes.OK


def become_user(drop: privileges.DropPlan, config: Config, socket_spec: str,
                logdir: str) -> int:
    """Switch to ``[milter] user`` (when root), everything the daemon needs
    loaded before, then check, as that user, the directories bms writes to."""
    if drop.target is not None:
        preload.preload()
        try:
            privileges.drop(drop.target)
        except PrivilegeError as exc:
            return fail(str(exc), exitcodes.NOPERM)
        unreadable = preload.unreadable_warning(drop.target.name)
        if unreadable:
            print(f"bms: warning: {unreadable}", file=sys.stderr)
    problems = startcheck.directory_problems(config, writable_dirs(config, socket_spec,
                                                                   logdir))
    return fail(problems[0]) if problems else exitcodes.OK


def socket_problem(config: Config, socket_spec: str, sock: privileges.SocketPlan) -> int:
    """The unix socket's directory and group, checked before binding."""
    spec = parse_socket_spec(socket_spec)
    if not spec.is_unix:
        return exitcodes.OK
    problem = startcheck.socket_dir_problem(config, str(spec.address))
    if problem:
        return fail(problem)
    problem = startcheck.socket_group_problem(config, sock.gid)
    return fail(problem, exitcodes.NOPERM) if problem else exitcodes.OK


def writable_dirs(config: Config, socket_spec: str, logdir: str) -> list[tuple[str, str]]:
    """``(kind, absolute path)`` of the directories bms writes to, parents
    before children: what milter.init creates for the daemon's user."""
    found: dict[str, str] = {}
    spec = parse_socket_spec(socket_spec)
    if spec.is_unix:
        found[os.path.abspath(os.path.dirname(str(spec.address)))] = "socketdir"
    for kind, path in (("datadir", str(config.get("milter", "datadir") or ".")),
                       ("logdir", "" if logdir == "-" else logdir),
                       ("tempdir", str(config.get("milter", "tempdir") or ""))):
        if path:
            found.setdefault(os.path.abspath(path), kind)
    return [(kind, path) for path, kind in sorted(found.items())]


def start_metrics(config: Config) -> str | None:
    """Serve Prometheus metrics at ``[metrics] listen`` (when set), counting
    in ``<datadir>/metrics``; returns why that is impossible, or None."""
    listen = config.get("metrics", "listen")
    if listen is None:
        return None
    directory = os.path.join(os.path.abspath(str(config.get("milter", "datadir") or ".")),
                             "metrics")
    try:
        endpoint = metrics.start(str(listen), directory)
    except metrics.MetricsError as exc:
        return str(exc)
    except ImportError as exc:  # prometheus_client where the user cannot read it
        return f"[metrics] listen: {exc}; " + (
            preload.unreadable_warning(startcheck.current_user()) or "not installed")
    log.info("metrics at %s", endpoint.url)
    return None


def run_daemon(args: argparse.Namespace, paths: Sequence[str], config: Config,
               socket_spec: str, logdir: str, lines: Sequence[str]) -> int:
    """Bind the socket (as root, if started so), switch to ``[milter] user``,
    then open the log and build the policy as that user, so every file the
    daemon creates is the user's.  The pidfile, locked before binding, gets
    our pid last, with systemd's READY=1: from then on signals work as
    documented."""
    try:
        drop = privileges.plan(args.user or config.get("milter", "user"),
                               config.get("milter", "group"), euid=os.geteuid())
        sock = privileges.socket_plan(drop, config.get("milter", "socket_group"),
                                      config.get("milter", "socket_mode"))
        pid_file = Pidfile(args.pidfile) if args.pidfile else None
        if pid_file is not None:
            pid_file.claim()  # before binding: a running bms keeps its socket
    except PrivilegeError as exc:
        return fail(str(exc))
    except PidfileError as exc:
        return fail(str(exc), exitcodes.UNAVAILABLE)
    code = socket_problem(config, socket_spec, sock)
    if code:
        if pid_file is not None:
            pid_file.release()
        return code
    daemon: Daemon | None = None

    def make_milter() -> BmsMilter:
        assert daemon is not None, "connections are accepted once the daemon is built"
        return daemon.make_milter()

    workers = args.workers or int(config.get("milter", "workers"))
    umask = config.get("milter", "umask")
    reg = lowlevel.Registration(
        name=str(config.get("milter", "name")),
        callbacks=dict(Milter.glue_callbacks(make_milter)),
        registered=True, conn=socket_spec, timeout=float(config.get("milter", "timeout")),
        workers=workers, umask=None if umask is None else int(umask),
        session_deadline=float(config.get("milter", "session_deadline")),
        message_deadline=float(config.get("milter", "message_deadline")),
        max_connections=int(config.get("milter", "max_connections")),
        # Callback timing costs clock reads per callback: only when metrics are on
        # ([metrics] listen is read once, at startup).
        observer=metrics.OBSERVER if config.get("metrics", "listen") else NULL_OBSERVER,
        exception_policy=EXCEPTION_POLICY[str(config.get("milter", "untrapped_exception"))
                                          .upper()])
    server = lowlevel.make_server(reg)
    # Until the daemon is built there is nothing to reload or reopen, and the
    # default action of SIGHUP and SIGUSR1 would end it: an init script or a
    # logrotate run that signals bms as soon as it listens must not.
    for sig in (signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    try:
        server.open()
    except OSError as exc:
        if pid_file is not None:
            pid_file.release()
        return fail(f"cannot listen on {socket_spec}: {exc}", exitcodes.UNAVAILABLE)
    try:
        try:
            if server.spec.is_unix and not sock.empty:
                privileges.apply_socket(str(server.spec.address), sock)
        except PrivilegeError as exc:
            return fail(str(exc), exitcodes.NOPERM)
        code = become_user(drop, config, socket_spec, logdir)
        if code:
            return code
        try:
            logtarget.setup(config, None if logdir == "-" else logdir)
        except OSError as exc:
            return fail(f"cannot write the log in {logdir}: {exc.strerror or exc}")
        for warning in config.warnings:
            log.warning("config: %s", warning)
        if drop.warning:
            log.warning("%s", drop.warning)
        if server.spec.is_unix:
            mode_warning = startcheck.socket_mode_warning(
                str(server.spec.address), config.get("milter", "socket_group"))
            if mode_warning:
                log.warning("%s", mode_warning)
        if not server.spec.is_unix and not sock.empty:
            log.warning("[milter] socket_mode and socket_group apply to unix sockets only; "
                        "ignored for %s", socket_spec)
        try:
            runtime = build_runtime(config)
        except RuntimeBuildError as exc:
            log.error("cannot start: %s", exc)
            return fail(str(exc))
        except ImportError as exc:  # a module not loaded before the switch
            why = preload.unreadable_warning(startcheck.current_user()) or "not installed"
            log.error("cannot start: %s; %s", exc, why)
            return fail(f"{exc}; {why}")
        for warning in runtime.warnings:
            log.warning("config: %s", warning)
        if isinstance(runtime.access, AccessFile):
            for warning in startcheck.near_miss_tags(runtime.access):
                log.warning("%s", warning)
        maintain_store(runtime, str(config.get("milter", "logdir") or "") or None)
        daemon = built = Daemon(paths, config, runtime, None if logdir == "-" else logdir)
        connid.set_allocator(built.allocate_ids)
        server.on_reload = built.reload
        server.on_reopen = reopen_logs
        cleaner = tempclean.TempCleaner(lambda: (
            str(built.config.get("milter", "tempdir") or ""),
            float(built.config.get("milter", "tempdir_max_age"))))
        server.on_tick = cleaner.tick
        server.on_stop = built.stopped
        failure = start_metrics(config)  # before the workers are forked
        if failure is not None:
            log.error("cannot start: %s", failure)
            return fail(failure, exitcodes.UNAVAILABLE)
        log.info("bms starting on %s (%d worker%s), pid %d", socket_spec,
                 workers, "" if workers == 1 else "s", os.getpid())
        if drop.target is not None:
            log.info("running as user %s (uid %d, gid %d)", drop.target.name,
                     drop.target.uid, drop.target.gid)
        log.info("%s", ", ".join(f"{k} {v}" for k, v in describe(runtime).items()))
        for line in lines:
            log.info("%s", line)
        cleaner.tick()
        # Announce the daemon only once it answers signals as it will while serving.
        server.install_signals()
        if pid_file is not None:
            try:
                pid_file.write()
            except PidfileError as exc:
                log.error("cannot start: %s", exc)
                return fail(str(exc), exitcodes.UNAVAILABLE)
        try:
            sdnotify.notify("READY=1")
        except OSError as exc:
            log.warning("cannot notify systemd: %s", exc)
        try:
            server.serve_forever()
        except OSError as exc:
            log.error("cannot run: %s", exc)
            return fail(f"cannot serve on {socket_spec}: {exc}", exitcodes.SOFTWARE)
        log.info("bms stopped")
        return exitcodes.OK
    finally:
        server.close()
        metrics.stop()
        if pid_file is not None:
            pid_file.release()


if __name__ == "__main__":
    sys.exit(main())
