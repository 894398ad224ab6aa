"""Where the daemon's log goes and in which format (``[milter] log``,
``log_format``, ``syslog_socket``).

* ``file`` (the default): ``milter.log`` in logdir, as :func:`bmslib.log.make_handler`;
* ``stderr``: standard error (journald, under systemd);
* ``syslog[:FACILITY]``: the syslog socket (``/dev/log``), facility ``mail``
  unless given, ident ``bms[PID]``; the line is the text line without its
  date (syslog stamps it).

``log_format = json`` makes every line one JSON object: ``time`` (ISO 8601,
UTC), ``level``, ``connid``, ``message`` (the text line's message, already
made safe), ``stage``, ``verdict``, ``reason``, ``client_ip``, ``sender``,
``recipients``, ``queue_id`` (``null`` when not known; see
:mod:`bmslib.logfields`) and ``exception`` for a traceback."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import socket
from datetime import datetime, timezone

from .config import Config
from .log import LOG_FILE, install_handler, make_handler, mark_handler
from .logfields import fields

SYSLOG_FORMAT = "[%(connid)s] %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
                            .isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "connid": getattr(record, "connid", None),
            "message": record.getMessage(),
        }
        entry.update(fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True, default=str)


#: The options that say where the log goes: a reload that changes one moves it.
LOG_OPTIONS = (("milter", "log"), ("milter", "log_format"), ("milter", "syslog_socket"))


def _syslog_handler(target: str, path: str) -> logging.Handler:
    facility = target.partition(":")[2] or "mail"
    try:  # SysLogHandler would only complain at the first line
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            probe.connect(path)
        handler = logging.handlers.SysLogHandler(
            address=path, facility=logging.handlers.SysLogHandler.facility_names[facility],
            socktype=socket.SOCK_DGRAM)
    except OSError as exc:
        raise OSError(exc.errno, f"syslog socket {path}: {exc.strerror or exc}") from None
    handler.ident = f"bms[{os.getpid()}]: "
    handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
    return mark_handler(handler)


def build(config: Config, logdir: str | None) -> logging.Handler:
    """The configured log handler, not yet installed (``logdir`` None:
    stderr, as ``--logdir -``).  OSError when it cannot be opened."""
    target = str(config.get("milter", "log"))
    if target.startswith("syslog"):
        handler = _syslog_handler(target, str(config.get("milter", "syslog_socket")))
    else:
        handler = make_handler(logdir if target == "file" else None)
    if config.get("milter", "log_format") == "json":
        handler.setFormatter(JsonFormatter())
    return handler


def describe(config: Config, logdir: str | None) -> str:
    """Where :func:`build` sends the log, for admins: ``/var/log/bms/milter.log``,
    ``stderr``, ``syslog (facility mail, /dev/log)``; `` as JSON`` when so."""
    target = str(config.get("milter", "log"))
    if target.startswith("syslog"):
        where = (f"syslog (facility {target.partition(':')[2] or 'mail'}, "
                 f"{config.get('milter', 'syslog_socket')})")
    elif target == "file" and logdir:
        where = os.path.join(logdir, LOG_FILE)
    else:
        where = "stderr"
    return where + (" as JSON" if config.get("milter", "log_format") == "json" else "")


def setup(config: Config, logdir: str | None, level: int = logging.INFO) -> logging.Handler:
    """Install the configured log handler (``logdir`` None: stderr, as
    ``--logdir -``); returns it.  OSError when it cannot be opened."""
    return install_handler(build(config, logdir), level)
