"""A pure-Python milter framework with the API of pymilter 1.0.x.

Existing pymilter milters run unchanged: subclass :class:`Base`, set
:data:`factory`, call :func:`runmilter`.  No libmilter, no compiler.  See
PYMILTER_API.md for the contract; deliberate differences from pymilter are
noted where they are made (look for "pymilter quirk").
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from . import lowlevel as milter
from .lowlevel import (  # noqa: F401 - the public pymilter names
    ACCEPT,
    ADDHDRS,
    ADDRCPT,
    ADDRCPT_PAR,
    ALL_OPTS,
    CHGBODY,
    CHGFROM,
    CHGHDRS,
    CONTINUE,
    CURR_ACTS,
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
    error,
    getdiag,
    getversion,
    main,
    opensocket,
    register,
    set_abort_callback,
    set_body_callback,
    set_close_callback,
    set_connect_callback,
    set_envfrom_callback,
    set_envrcpt_callback,
    set_eoh_callback,
    set_eom_callback,
    set_exception_policy,
    set_flags,
    set_header_callback,
    set_helo_callback,
    setbacklog,
    setconn,
    setdbg,
    setmaxconnections,
    setmaxdatasize,
    setmessagetimeout,
    setsessiontimeout,
    settimeout,
    setworkers,
    stop,
)

__version__ = "1.0.6"

F = TypeVar("F", bound=Callable[..., Any])

_seq_lock = threading.Lock()
_seq = 0


def uniqueID() -> int:
    """A process-wide sequence number, incremented on each call (from 1)."""
    global _seq
    with _seq_lock:
        _seq += 1
        return _seq


OPTIONAL_CALLBACKS: dict[str, tuple[int, int]] = {
    "connect": (P_NR_CONN, P_NOCONNECT),
    "hello": (P_NR_HELO, P_NOHELO),
    "envfrom": (P_NR_MAIL, P_NOMAIL),
    "envrcpt": (P_NR_RCPT, P_NORCPT),
    "data": (P_NR_DATA, P_NODATA),
    "unknown": (P_NR_UNKN, P_NOUNKNOWN),
    "eoh": (P_NR_EOH, P_NOEOH),
    "body": (P_NR_BODY, P_NOBODY),
    "header": (P_NR_HDR, P_NOHDRS),
}

MACRO_CALLBACKS: dict[str, int] = {
    "connect": M_CONNECT, "hello": M_HELO, "envfrom": M_ENVFROM, "envrcpt": M_ENVRCPT,
    "data": M_DATA, "eom": M_EOM, "eoh": M_EOH,
}

R = re.compile(r"%+")


def decode_mask(bits: int, names: list[str]) -> list[str]:
    """Names of the constants in ``names`` whose bits are set in ``bits``.

    pymilter quirk fixed: leftover bits are appended as one hex string, not
    one character at a time."""
    table = [(name, getattr(milter, name)) for name in names]
    result = [name for name, mask in table if bits & mask]
    for _name, mask in table:
        bits &= ~mask
    if bits:
        result.append(hex(bits))
    return result


def enable_protocols(klass: type, mask: int) -> type:
    """Class decorator helper: request the protocol steps in ``mask``."""
    klass._protocol_mask = klass.protocol_mask() & ~mask  # type: ignore[attr-defined]
    return klass


def rejected_recipients(klass: type) -> type:
    """Also see recipients the MTA has already rejected (P_RCPT_REJ)."""
    return enable_protocols(klass, P_RCPT_REJ)


def header_leading_space(klass: type) -> type:
    """Header values keep their leading whitespace both ways (P_HDR_LEADSPC)."""
    return enable_protocols(klass, P_HDR_LEADSPC)


def nocallback(func: F) -> F:
    """Ask the MTA not to send this event; the method must still return CONTINUE."""
    try:
        func.milter_protocol = OPTIONAL_CALLBACKS[func.__name__][1]  # type: ignore[attr-defined]
    except KeyError:
        raise ValueError("@nocallback applied to non-optional method: " + func.__name__) from None

    @functools.wraps(func)
    def wrapper(self: Any, *args: Any) -> int:
        if func(self, *args) != CONTINUE:
            raise RuntimeError(f"{func.__name__} return code must be CONTINUE with @nocallback")
        return CONTINUE

    return wrapper  # type: ignore[return-value]


def noreply(func: F) -> F:
    """Ask the MTA not to wait for this callback's reply.

    The result is the module global ``NOREPLY``, looked up at call time:
    ``Milter.test`` rebinds it to CONTINUE, as in pymilter."""
    try:
        nr_mask = OPTIONAL_CALLBACKS[func.__name__][0]
    except KeyError:
        raise ValueError("@noreply applied to non-optional method: " + func.__name__) from None

    @functools.wraps(func)
    def wrapper(self: Any, *args: Any) -> int:
        rc = func(self, *args)
        if self._protocol & nr_mask:
            if rc != CONTINUE:
                raise RuntimeError(f"{func.__name__} return code must be CONTINUE with @noreply")
            return int(globals()["NOREPLY"])  # late lookup, see docstring
        return int(rc)

    wrapper.milter_protocol = nr_mask  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def decode(strategy: str) -> Callable[[F], F]:
    """How ``envfrom``/``envrcpt``/``header`` get undecodable bytes: the default
    ``'surrogateescape'``, ``'bytes'`` (raw bytes), ``'strict'`` (bytes when
    not UTF-8), ``'ignore'`` or ``'replace'``."""

    def setstrategy(func: F) -> F:
        func.error_strategy = strategy  # type: ignore[attr-defined]
        return func

    return setstrategy


def symlist(*syms: str) -> Callable[[F], F]:
    """Ask the MTA to send only these macros (at most 5) for this stage."""
    if len(syms) > 5:
        raise ValueError("@symlist limited to 5 macros by MTA: " + " ".join(syms))

    def setsyms(func: F) -> F:
        if func.__name__ not in MACRO_CALLBACKS:
            raise ValueError("@symlist applied to non-symlist method: " + func.__name__)
        func._symlist = syms  # type: ignore[attr-defined]
        return func

    return setsyms


class DisabledAction(RuntimeError):
    """An action whose flag was not negotiated for this connection."""


def _decode_arg(data: bytes, strategy: str) -> str | bytes:
    if strategy == "bytes":
        return data
    if strategy == "strict":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data
    return data.decode("utf-8", strategy)


class Base:
    """The per-connection milter object: override callbacks, call actions."""

    _ctx: Any = None
    _actions: int = CURR_ACTS
    _protocol: int = 0

    def _setctx(self, ctx: Any) -> None:
        self._ctx = ctx
        # A connection object made without a negotiation (after QUIT_NC, the
        # MTA does not negotiate again) gets the connection's actions.
        self._actions = getattr(ctx, "negotiated_actions", CURR_ACTS)
        self._protocol = 0
        if ctx:
            ctx.setpriv(self)

    def log(self, *msg: Any) -> None:
        """Defined by subclasses to write log messages."""

    # --- callbacks ---------------------------------------------------------------

    @nocallback
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        return CONTINUE

    @nocallback
    def hello(self, hostname: str) -> int:
        return CONTINUE

    @nocallback
    def envfrom(self, f: str, *str: str) -> int:
        return CONTINUE

    @nocallback
    def envrcpt(self, to: str, *str: str) -> int:
        return CONTINUE

    @nocallback
    def data(self) -> int:
        return CONTINUE

    @nocallback
    def header(self, field: str, value: str) -> int:
        return CONTINUE

    @nocallback
    def eoh(self) -> int:
        return CONTINUE

    @nocallback
    def body(self, blk: bytes) -> int:
        return CONTINUE

    @nocallback
    def unknown(self, cmd: str) -> int:
        return CONTINUE

    def eom(self) -> int:
        return CONTINUE

    def abort(self) -> int:
        return CONTINUE

    def close(self) -> int:
        return CONTINUE

    def envfrom_bytes(self, *b: bytes) -> int:
        strategy = getattr(self.envfrom, "error_strategy", "surrogateescape")
        s: list[Any] = [_decode_arg(x, strategy) for x in b]
        return self.envfrom(*s)

    def envrcpt_bytes(self, *b: bytes) -> int:
        strategy = getattr(self.envrcpt, "error_strategy", "surrogateescape")
        s: list[Any] = [_decode_arg(x, strategy) for x in b]
        return self.envrcpt(*s)

    def header_bytes(self, fld: str, val: bytes) -> int:
        strategy = getattr(self.header, "error_strategy", "surrogateescape")
        if strategy == "bytes":
            self.header_bytes = self.header  # type: ignore[method-assign, assignment]
            return self.header(fld, val)  # type: ignore[arg-type]
        return self.header(fld, _decode_arg(val, strategy))  # type: ignore[arg-type]

    @classmethod
    def protocol_mask(klass) -> int:  # noqa: N804 - pymilter's signature
        """Protocol bits this class does *not* want (cached, inherited as in pymilter)."""
        try:
            return klass._protocol_mask  # type: ignore[attr-defined, no-any-return]
        except AttributeError:
            p = P_RCPT_REJ | P_HDR_LEADSPC
            for name, (nr, no) in OPTIONAL_CALLBACKS.items():
                ca = getattr(getattr(klass, name), "milter_protocol", 0)
                p |= (nr | no) & ~ca
            klass._protocol_mask = p  # type: ignore[attr-defined]
            return p

    def negotiate(self, opts: list[int]) -> int:
        try:
            self._actions, p, _f1, _f2 = opts
            for name, stage in MACRO_CALLBACKS.items():
                syms = getattr(getattr(self, name), "_symlist", None)
                if syms is not None:
                    self.setsymlist(stage, *syms)
            opts[1] = self._protocol = p & ~self.protocol_mask()
            opts[2] = 0
            opts[3] = 0
        except Exception:
            return ALL_OPTS  # don't change anything if something went wrong
        return CONTINUE

    # --- actions -----------------------------------------------------------------

    def getsymval(self, sym: str) -> str | None:
        return self._ctx.getsymval(sym)  # type: ignore[no-any-return]

    def setreply(self, rcode: str, xcode: str | None = None, msg: str | None = None,
                 *ml: str) -> None:
        # pymilter quirk fixed: msg=None means "no text" instead of a TypeError.
        lines = ((msg,) if msg is not None else ()) + ml
        for m in lines:
            if any(len(run) & 1 for run in R.findall(m)):
                raise ValueError("'%' must be doubled: " + m)
        self._ctx.setreply(rcode, xcode, *lines)

    def setsymlist(self, stage: int, *macros: str | bytes) -> None:
        if not self._actions & SETSYMLIST:
            raise DisabledAction("SETSYMLIST")
        if len(macros) > 5:
            raise ValueError("setsymlist limited to 5 macros by MTA")
        names: list[bytes] = []
        for m in macros:
            data = m.encode("utf-8") if isinstance(m, str) else bytes(m)
            names += data.split(b" ")
        self._ctx.setsymlist(stage, b" ".join(names))

    def addheader(self, field: str, value: str, idx: int = -1) -> None:
        if not self._actions & ADDHDRS:
            raise DisabledAction("ADDHDRS")
        self._ctx.addheader(field, value, idx)

    def chgheader(self, field: str, idx: int, value: str | None) -> None:
        if not self._actions & CHGHDRS:
            raise DisabledAction("CHGHDRS")
        self._ctx.chgheader(field, idx, value)

    def addrcpt(self, rcpt: str, params: str | None = None) -> None:
        if not self._actions & ADDRCPT:
            raise DisabledAction("ADDRCPT")
        if params and not self._actions & ADDRCPT_PAR:
            raise DisabledAction("ADDRCPT_PAR")
        self._ctx.addrcpt(rcpt, params)

    def delrcpt(self, rcpt: str) -> None:
        if not self._actions & DELRCPT:
            raise DisabledAction("DELRCPT")
        self._ctx.delrcpt(rcpt)

    def replacebody(self, body: str | bytes) -> None:
        if not self._actions & MODBODY:
            raise DisabledAction("MODBODY")
        self._ctx.replacebody(body)

    def chgfrom(self, sender: str, params: str | None = None) -> None:
        if not self._actions & CHGFROM:
            raise DisabledAction("CHGFROM")
        self._ctx.chgfrom(sender, params)

    def quarantine(self, reason: str) -> None:
        if not self._actions & QUARANTINE:
            raise DisabledAction("QUARANTINE")
        self._ctx.quarantine(reason)

    def progress(self) -> None:
        self._ctx.progress()


class Milter(Base):
    """pymilter's logging, do-nothing compatibility class."""

    def log(self, *msg: Any) -> None:
        print("Milter:", *msg)

    @noreply
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self.log(f"connect from {hostname} at {hostaddr}")
        return CONTINUE

    @noreply
    def hello(self, hostname: str) -> int:
        self.log(f"hello from {hostname}")
        return CONTINUE

    @noreply
    def envfrom(self, f: str, *str: str) -> int:
        self.log("mail from", f, str)
        return CONTINUE

    @noreply
    def envrcpt(self, to: str, *str: str) -> int:
        self.log("rcpt to", to, str)
        return CONTINUE

    @noreply
    def header(self, field: str, value: str) -> int:
        self.log(f"{field}: {value}")
        return CONTINUE

    @noreply
    def eoh(self) -> int:
        self.log("eoh")
        return CONTINUE

    def eom(self) -> int:
        self.log("eom")
        return CONTINUE

    def abort(self) -> int:
        self.log("abort")
        return CONTINUE

    def close(self) -> int:
        self.log("close")
        return CONTINUE


# The connection factory, called with no arguments once per MTA connection.
factory: Callable[[], Base] = Milter


def negotiate_callback(ctx: Any, opts: list[int]) -> int:
    m = factory()
    m._setctx(ctx)
    return m.negotiate(opts)


def connect_callback(ctx: Any, hostname: str, family: int, hostaddr: Any,
                     nr_mask: int = P_NR_CONN) -> int:
    m = ctx.getpriv()
    if not m:
        # No negotiation happened: create the connection object now.
        m = factory()
        m._setctx(ctx)
    return m.connect(hostname, family, hostaddr)  # type: ignore[no-any-return]


def close_callback(ctx: Any) -> int:
    m = ctx.getpriv()
    if not m:
        return CONTINUE
    try:
        rc = m.close()
    finally:
        m._setctx(None)
    return rc  # type: ignore[no-any-return]


def glue_callbacks(make: Callable[[], Base] | None = None) -> dict[str, Callable[..., Any]]:
    """The low-level callbacks ``runmilter`` installs: each event goes to the
    connection's object (pymilter's ``runmilter`` glue).

    Objects come from ``make``, or from the module global ``factory`` looked up
    per connection when ``make`` is None (so ``factory`` may be reassigned
    while running, as in pymilter).  Passing ``make`` lets several milters
    with different classes serve in one process."""

    def new() -> Base:
        return (make or factory)()

    def priv(ctx: Any) -> Base:
        m = ctx.getpriv()
        if not m:
            # Negotiation was skipped (pymilter would raise AttributeError and
            # tempfail): create the object as connect would.
            m = new()
            m._setctx(ctx)
        return m  # type: ignore[no-any-return]

    def negotiate(ctx: Any, opts: list[int]) -> int:
        m = new()
        m._setctx(ctx)
        return m.negotiate(opts)

    def connect(ctx: Any, hostname: str, family: int, hostaddr: Any) -> int:
        return priv(ctx).connect(hostname, family, hostaddr)

    return {
        "negotiate": negotiate,
        "connect": connect,
        "helo": lambda ctx, host: priv(ctx).hello(host),
        "envfrom": lambda ctx, *args: priv(ctx).envfrom_bytes(*args),
        "envrcpt": lambda ctx, *args: priv(ctx).envrcpt_bytes(*args),
        "header": lambda ctx, fld, val: priv(ctx).header_bytes(fld, val),
        "eoh": lambda ctx: priv(ctx).eoh(),
        "body": lambda ctx, chunk: priv(ctx).body(chunk),
        "eom": lambda ctx: priv(ctx).eom(),
        "abort": lambda ctx: priv(ctx).abort(),
        "close": close_callback,
        "data": lambda ctx: priv(ctx).data(),
        "unknown": lambda ctx, cmd: priv(ctx).unknown(cmd),
    }


def dictfromlist(args: list[str]) -> dict[str, str]:
    """Deprecated: ``NAME=VALUE`` items as ``{NAME.upper(): VALUE}``."""
    kw = {}
    for s in args:
        pos = s.find("=")
        if pos > 0:
            kw[s[:pos].upper()] = s[pos + 1:]
    return kw


def param2dict(strs: list[str]) -> dict[str, str | None]:
    """ESMTP params to a dict; a bare ``NAME`` maps to ``None``."""
    result: dict[str, str | None] = {}
    for s in strs:
        name, sep, value = s.partition("=")
        result[name.upper()] = value if sep else None
    return result


def envcallback(c: Callable[..., Any], args: list[str]) -> Any:
    """Call ``c(args[0], *bare_params, **{NAME: value})``."""
    kw = {}
    pargs = [args[0]]
    for s in args[1:]:
        pos = s.find("=")
        if pos > 0:
            kw[s[:pos].upper()] = s[pos + 1:]
        else:
            pargs.append(s)
    return c(*pargs, **kw)


def runmilter(name: str, socketname: str, timeout: float = 0, rmsock: bool = True) -> None:
    """Serve ``factory`` objects on ``socketname`` until stopped.

    ``name`` should match the filter name in the MTA configuration."""
    for cb_name, fn in glue_callbacks().items():
        milter.registration().callbacks[cb_name] = fn
    setconn(socketname)
    if timeout > 0:
        settimeout(timeout)
    register(name, unknown=milter.registration().callbacks["unknown"],
             data=milter.registration().callbacks["data"], negotiate=negotiate_callback)
    opensocket(rmsock)
    start_seq = _seq
    try:
        main()
    except error:
        if start_seq == _seq:
            raise
        raise error("out of thread resources") from None


# ``Milter.milter`` names the low-level module, as pymilter's ``import milter`` did.
# pymilter quirk fixed: ``__all__`` is a list, so ``from Milter import *`` works.
__all__ = [name for name in globals() if not name.startswith("_") and name not in (
    "annotations", "functools", "re", "threading", "Any", "Callable", "TypeVar", "F",
)]
