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

from . import registration as _reg
from .context import Context
from .protocol import constants as C
from .registration import (  # noqa: F401 - the C module's names
    ACCEPT,
    ADDHDRS,
    ADDRCPT,
    ADDRCPT_PAR,
    ALL_OPTS,
    CALLBACK_NAMES,
    CHGBODY,
    CHGFROM,
    CHGHDRS,
    CONTINUE,
    CURR_ACTS,
    DEFAULT_TIMEOUT,
    DELRCPT,
    DISCARD,
    FAILURE,
    M_CONNECT,
    M_DATA,
    M_ENVFROM,
    M_ENVRCPT,
    M_EOH,
    M_EOM,
    M_HELO,
    MODBODY,
    NOREPLY,
    P_HDR_LEADSPC,
    P_NOBODY,
    P_NOCONNECT,
    P_NODATA,
    P_NOEOH,
    P_NOHDRS,
    P_NOHELO,
    P_NOMAIL,
    P_NORCPT,
    P_NOUNKNOWN,
    P_NR_BODY,
    P_NR_CONN,
    P_NR_DATA,
    P_NR_EOH,
    P_NR_HDR,
    P_NR_HELO,
    P_NR_MAIL,
    P_NR_RCPT,
    P_NR_UNKN,
    P_RCPT_REJ,
    P_SKIP,
    QUARANTINE,
    REJECT,
    SETSYMLIST,
    SKIP,
    SUCCESS,
    TEMPFAIL,
    V1_ACTS,
    V2_ACTS,
    VERSION,
    Callback,
    Registration,
    error,
)
from .server import MilterServer

_registration = Registration()
_server: MilterServer | None = None
_server_lock = threading.Lock()

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


def setsessiontimeout(secs: float) -> None:
    """Close an MTA connection that has lasted ``secs`` seconds, however
    slowly its bytes come (bms extension; 0: no deadline)."""
    if secs < 0:
        raise error("cannot set session timeout")
    _registration.session_deadline = float(secs)


def setmessagetimeout(secs: float) -> None:
    """Close an MTA connection whose transaction (MAIL FROM to the verdict at
    end of message) has lasted ``secs`` seconds (bms extension; 0: none)."""
    if secs < 0:
        raise error("cannot set message timeout")
    _registration.message_deadline = float(secs)


def setmaxconnections(n: int) -> None:
    """MTA connections served at once per process; more are closed at once
    and the MTA applies its default action (bms extension; 0: no cap)."""
    if n < 0:
        raise error("cannot set max connections")
    _registration.max_connections = int(n)


def getversion() -> tuple[int, int, int]:
    """The libmilter version we behave as (negotiate callbacks supported)."""
    return (1, 0, 1)


def getdiag() -> tuple[int, int]:
    """(contexts created, contexts closed) in this process."""
    return _reg.diag()


def make_server(reg: Registration) -> MilterServer:
    """A server for ``reg``: one :class:`~Milter.context.Context` per MTA
    connection, with the registration's callbacks, timeout and observer."""

    def make(send: Callable[[bytes], object], cid: str) -> Context:
        return Context(reg, send, cid)

    return MilterServer(reg.conn, make, timeout=reg.timeout, backlog=reg.backlog,
                        workers=reg.workers, umask=reg.umask, observer=reg.observer,
                        session_deadline=reg.session_deadline,
                        message_deadline=reg.message_deadline,
                        max_connections=reg.max_connections)


def _make_server() -> MilterServer:
    reg = _registration
    if not reg.registered:
        raise error("cannot opensocket: register() was not called")
    if not reg.conn:
        raise error("cannot opensocket: setconn() was not called")
    return make_server(reg)


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
