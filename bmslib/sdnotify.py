"""systemd's readiness protocol (sd_notify(3)) without libsystemd.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name``
for an abstract socket) and waits for one datagram ``READY=1`` before it
counts the service as started; bms sends it once the milter socket listens.
Outside systemd the variable is unset and :func:`notify` does nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``); False when not run by systemd.
    Raises OSError when the socket is named but cannot be reached."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state.encode("utf-8"))
    return True
