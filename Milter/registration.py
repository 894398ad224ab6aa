"""The leaf of the framework: libmilter's constants, ``milter.error`` and the
:class:`Registration` that ``register``/``setconn``/``settimeout``… fill in.

It imports nothing of the framework but :mod:`Milter.protocol.constants`, so
the context, the server and the module API (:mod:`Milter.lowlevel`) all build
on it without importing one another in a circle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from .observer import NULL_OBSERVER, Observer
from .protocol import constants as C

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
    # Limits (bms extensions, 0: none): seconds a connection / a transaction
    # may last in all, and MTA connections served at once per process.
    session_deadline: float = 0.0
    message_deadline: float = 0.0
    max_connections: int = 0
    debug: int = 0
    # Told of connections and callback times (bms: its Prometheus metrics).
    observer: Observer = NULL_OBSERVER

    def callback(self, name: str) -> Callback | None:
        return self.callbacks.get(name)


_diag = [0, 0]  # contexts created, contexts closed (getdiag)
_diag_lock = threading.Lock()


def count_context(created: bool) -> None:
    with _diag_lock:
        _diag[0 if created else 1] += 1


def diag() -> tuple[int, int]:
    return (_diag[0], _diag[1])
