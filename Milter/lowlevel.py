"""The process-wide, low-level milter API: what pymilter's C module ``milter``
offers (PYMILTER_API.md §2-§3).  ``Milter`` re-exports every public name.

Callbacks registered here take the per-connection context first, with the
argument types of pymilter on Python 3: ``connect(ctx, hostname: str, family,
hostaddr)``, ``helo(ctx, str)``, ``envfrom(ctx, *bytes)``, ``envrcpt(ctx,
*bytes)``, ``header(ctx, str, bytes)``, ``body(ctx, bytes)``, ``unknown(ctx,
str)`` and ``ctx`` alone for the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from .protocol import constants as C

if TYPE_CHECKING:
    from .server import MilterServer

# --- constants with libmilter's values --------------------------------------------
CONTINUE: Final = C.SMFIS_CONTINUE
REJECT: Final = C.SMFIS_REJECT
DISCARD: Final = C.SMFIS_DISCARD
ACCEPT: Final = C.SMFIS_ACCEPT
TEMPFAIL: Final = C.SMFIS_TEMPFAIL
NOREPLY: Final = C.SMFIS_NOREPLY
SKIP: Final = C.SMFIS_SKIP
ALL_OPTS: Final = C.SMFIS_ALL_OPTS
SUCCESS: Final = 0
FAILURE: Final = -1
VERSION: Final = 0x01000001

ADDHDRS: Final = C.SMFIF_ADDHDRS
CHGBODY: Final = C.SMFIF_CHGBODY
MODBODY: Final = C.SMFIF_CHGBODY
ADDRCPT: Final = C.SMFIF_ADDRCPT
DELRCPT: Final = C.SMFIF_DELRCPT
CHGHDRS: Final = C.SMFIF_CHGHDRS
QUARANTINE: Final = C.SMFIF_QUARANTINE
CHGFROM: Final = C.SMFIF_CHGFROM
ADDRCPT_PAR: Final = C.SMFIF_ADDRCPT_PAR
SETSYMLIST: Final = C.SMFIF_SETSYMLIST
V1_ACTS: Final = C.SMFI_V1_ACTS
V2_ACTS: Final = C.SMFI_V2_ACTS
CURR_ACTS: Final = C.SMFI_CURR_ACTS

P_NOCONNECT: Final = C.SMFIP_NOCONNECT
P_NOHELO: Final = C.SMFIP_NOHELO
P_NOMAIL: Final = C.SMFIP_NOMAIL
P_NORCPT: Final = C.SMFIP_NORCPT
P_NOBODY: Final = C.SMFIP_NOBODY
P_NOHDRS: Final = C.SMFIP_NOHDRS
P_NOEOH: Final = C.SMFIP_NOEOH
P_NR_HDR: Final = C.SMFIP_NR_HDR
P_NOUNKNOWN: Final = C.SMFIP_NOUNKNOWN
P_NODATA: Final = C.SMFIP_NODATA
P_SKIP: Final = C.SMFIP_SKIP
P_RCPT_REJ: Final = C.SMFIP_RCPT_REJ
P_NR_CONN: Final = C.SMFIP_NR_CONN
P_NR_HELO: Final = C.SMFIP_NR_HELO
P_NR_MAIL: Final = C.SMFIP_NR_MAIL
P_NR_RCPT: Final = C.SMFIP_NR_RCPT
P_NR_DATA: Final = C.SMFIP_NR_DATA
P_NR_UNKN: Final = C.SMFIP_NR_UNKN
P_NR_EOH: Final = C.SMFIP_NR_EOH
P_NR_BODY: Final = C.SMFIP_NR_BODY
P_HDR_LEADSPC: Final = C.SMFIP_HDR_LEADSPC

M_CONNECT: Final = C.SMFIM_CONNECT
M_HELO: Final = C.SMFIM_HELO
M_ENVFROM: Final = C.SMFIM_ENVFROM
M_ENVRCPT: Final = C.SMFIM_ENVRCPT
M_DATA: Final = C.SMFIM_DATA
M_EOM: Final = C.SMFIM_EOM
M_EOH: Final = C.SMFIM_EOH

DEFAULT_TIMEOUT: Final = 7210  # libmilter's read/write timeout, seconds


class error(Exception):  # noqa: N801 - pymilter's name
    """``milter.error``: a milter call failed."""


Callback = Callable[..., Any]
CALLBACK_NAMES: Final = (
    "connect", "helo", "envfrom", "envrcpt", "header", "eoh", "body", "eom", "abort", "close",
    "data", "unknown", "negotiate",
)


@dataclass
class Registration:
    """Everything ``register``/``setconn``/``settimeout``… configured."""

    name: str = "pythonfilter"
    callbacks: dict[str, Callback | None] = field(default_factory=dict)
    flags: int = CURR_ACTS
    exception_policy: int = TEMPFAIL
    timeout: float = DEFAULT_TIMEOUT
    backlog: int = 0  # 0: SOMAXCONN
    conn: str = ""
    registered: bool = False
    max_data_size: int = C.DEFAULT_MAX_DATA_SIZE
    workers: int = 1
    umask: int | None = None
    debug: int = 0

    def callback(self, name: str) -> Callback | None:
        return self.callbacks.get(name)


_registration = Registration()
_server: MilterServer | None = None
_server_lock = threading.Lock()
_diag = [0, 0]


def registration() -> Registration:
    return _registration


def _setter(name: str) -> Callable[[Callback | None], Callback | None]:
    def set_callback(fn: Callback | None) -> Callback | None:
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} callback must be callable")
        previous = _registration.callbacks.get(name)
        _registration.callbacks[name] = fn
        return previous

    set_callback.__name__ = f"set_{name}_callback"
    return set_callback


set_connect_callback = _setter("connect")
set_helo_callback = _setter("helo")
set_envfrom_callback = _setter("envfrom")
set_envrcpt_callback = _setter("envrcpt")
set_header_callback = _setter("header")
set_eoh_callback = _setter("eoh")
set_body_callback = _setter("body")
set_eom_callback = _setter("eom")
set_abort_callback = _setter("abort")
set_close_callback = _setter("close")


def set_flags(flags: int) -> None:
    """Actions requested when no negotiate callback decides (kept for pymilter)."""
    _registration.flags = int(flags)


def set_exception_policy(code: int) -> None:
    if code not in (CONTINUE, REJECT, TEMPFAIL, ACCEPT):
        raise error("invalid exception policy")
    _registration.exception_policy = code


def register(
    name: str,
    unknown: Callback | None = None,
    data: Callback | None = None,
    negotiate: Callback | None = None,
) -> None:
    for label, fn in (("unknown", unknown), ("data", data), ("negotiate", negotiate)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{label} callback must be callable")
    if not isinstance(name, str) or not name:
        raise error("cannot register")
    _registration.name = name
    _registration.callbacks.update(unknown=unknown, data=data, negotiate=negotiate)
    _registration.registered = True


def setconn(spec: str) -> None:
    if not spec:
        raise error("cannot set connection")
    _registration.conn = spec


def settimeout(secs: float) -> None:
    """How long to wait for the next command from the MTA (and for a write)."""
    _registration.timeout = secs


def setbacklog(n: int) -> None:
    if n <= 0:
        raise error("cannot set backlog")
    _registration.backlog = n


def setdbg(level: int) -> None:
    _registration.debug = int(level)


def setmaxdatasize(size: int) -> None:
    """Largest incoming packet accepted (default 1 MiB; libmilter: 65535)."""
    if size < C.MILTER_CHUNK_SIZE:
        raise error("cannot set max data size")
    _registration.max_data_size = size


def setworkers(n: int) -> None:
    """Worker processes sharing the listening socket (bms extension)."""
    if n < 1:
        raise error("cannot set workers")
    _registration.workers = n


def getversion() -> tuple[int, int, int]:
    """The libmilter version we behave as (negotiate callbacks supported)."""
    return (1, 0, 1)


def getdiag() -> tuple[int, int]:
    return (_diag[0], _diag[1])


def count_context(created: bool) -> None:
    with _server_lock:
        _diag[0 if created else 1] += 1


def _make_server() -> MilterServer:
    from .server import MilterServer

    reg = _registration
    if not reg.registered:
        raise error("cannot opensocket: register() was not called")
    if not reg.conn:
        raise error("cannot opensocket: setconn() was not called")
    return MilterServer.from_registration(reg)


def opensocket(rmsock: bool = True) -> None:
    global _server
    with _server_lock:
        if _server is None:
            _server = _make_server()
        try:
            _server.open(remove_stale=bool(rmsock))
        except OSError as exc:
            raise error(f"cannot opensocket: {exc}") from exc


def main() -> None:
    """Serve until :func:`stop` (or SIGTERM/SIGHUP/SIGINT in the main thread)."""
    global _server
    with _server_lock:
        if _server is not None and _server.running:
            raise error("milter module in use")
        if _server is None:
            _server = _make_server()
        server = _server
    try:
        server.serve_forever()
    except OSError as exc:
        raise error(f"cannot run main: {exc}") from exc
    finally:
        with _server_lock:
            _server = None


def stop() -> None:
    with _server_lock:
        server = _server
    if server is not None:
        server.stop()
