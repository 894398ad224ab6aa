"""Socket calls made without letting go of the GIL, for connections that
compete for it.

Every ``socket.recv`` and ``socket.send`` lets go of the GIL around the system
call.  With one MTA connection that costs nothing; with several connections
served by threads of one process, each release hands the GIL to another
thread, and the thread that released it must wait for it to come back: two
``futex`` calls and a context switch per system call.  Measured with the
benchmark driver, 4 connections, the no-op milter: 176 ``futex`` calls per
message with the plain calls, 45 with these (libmilter + pymilter: 12).

:func:`recv_now` and :func:`send_now` call libc's ``recv``/``send`` with
``MSG_DONTWAIT`` through ``ctypes.PyDLL``, which keeps the GIL: they never
block, so holding it costs microseconds.  When the call would block, the
caller falls back to the ordinary blocking call, which does let the GIL go.
The server uses them only while other connections are served
(:class:`Milter.server.MilterServer`); alone, a connection's non-blocking
``recv`` would mostly find nothing yet and cost a system call more.

Where ``ctypes`` or libc cannot be loaded, :data:`AVAILABLE` is false and the
server uses the socket methods only.

:func:`write_all` is the same for a regular file (an application's log, which
every thread writes several times per message): ``write(2)`` of a line to a
file opened for appending returns as soon as the page cache has it, so the
GIL is held for that long instead of being handed to another thread and
waited for.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
from typing import Any

__all__ = ["AVAILABLE", "RecvBuffer", "recv_now", "send_now", "write_all"]

_AGAIN = frozenset((errno.EAGAIN, errno.EWOULDBLOCK))
_RECV_FLAGS = getattr(socket, "MSG_DONTWAIT", 0)
_SEND_FLAGS = _RECV_FLAGS | getattr(socket, "MSG_NOSIGNAL", 0)
_SEND_MAX = 64 * 1024  # a bytearray longer than this goes the ordinary way (no copy)


def _load() -> tuple[Any, Any, Any] | None:
    if not _RECV_FLAGS:
        return None
    try:
        libc = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        recv, send, write = libc.recv, libc.send, libc.write
    except (OSError, AttributeError):
        return None
    recv.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    recv.restype = ctypes.c_ssize_t
    send.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
    send.restype = ctypes.c_ssize_t
    write.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
    write.restype = ctypes.c_ssize_t
    return recv, send, write


_CALLS = _load()
AVAILABLE = _CALLS is not None


class RecvBuffer:
    """The memory :func:`recv_now` reads into: one per serving thread (it
    is reused for every connection the thread serves)."""

    __slots__ = ("address", "buffer", "size")

    def __init__(self, size: int) -> None:
        self.buffer = ctypes.create_string_buffer(size)
        self.address = ctypes.addressof(self.buffer)
        self.size = size


def _error() -> OSError:
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err))  # the subclass for err, as socket raises


def recv_now(fd: int, buf: RecvBuffer) -> bytes | None:
    """What ``fd`` has already received (up to ``buf.size`` bytes), ``b""``
    at end of stream, or None when nothing is there yet.  OSError as
    ``socket.recv`` raises it."""
    assert _CALLS is not None
    while True:
        n = _CALLS[0](fd, buf.address, buf.size, _RECV_FLAGS)
        if n > 0:
            return ctypes.string_at(buf.address, n)
        if n == 0:
            return b""
        exc = _error()
        if exc.errno == errno.EINTR:
            continue
        if exc.errno in _AGAIN:
            return None
        raise exc


def send_now(fd: int, data: bytes | bytearray) -> int:
    """Send what ``fd`` takes at once of ``data``; returns how many bytes
    went (0 when the socket buffer is full, or for a long bytearray, which
    the caller sends the ordinary way).  OSError as ``socket.send`` raises it."""
    assert _CALLS is not None
    if type(data) is not bytes:
        if len(data) > _SEND_MAX:
            return 0
        data = bytes(data)
    while True:
        n = _CALLS[1](fd, data, len(data), _SEND_FLAGS)
        if n >= 0:
            return int(n)
        exc = _error()
        if exc.errno == errno.EINTR:
            continue
        if exc.errno in _AGAIN:
            return 0
        raise exc


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (a regular file: the call may wait
    for the disk, it never waits for a peer) keeping the GIL; with ctypes
    unavailable, ``os.write``.  OSError as ``os.write`` raises it."""
    view = memoryview(data)
    while view:
        if _CALLS is None:
            n = os.write(fd, view)
        else:
            chunk = view.tobytes() if len(view) < len(data) else data
            n = _CALLS[2](fd, chunk, len(chunk))
            if n < 0:
                exc = _error()
                if exc.errno == errno.EINTR:
                    continue
                raise exc
        view = view[n:]
