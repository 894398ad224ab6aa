"""Milter.gilio: non-blocking recv and send that keep the GIL, on a real
socketpair (no timing: each call's outcome is defined by what the other
end has done)."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from Milter import gilio

pytestmark = pytest.mark.skipif(not gilio.AVAILABLE, reason="no libc through ctypes here")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_recv_now_returns_none_when_nothing_is_there(
        pair: tuple[socket.socket, socket.socket]) -> None:
    a, _b = pair
    assert gilio.recv_now(a.fileno(), gilio.RecvBuffer(1024)) is None
    assert a.gettimeout() is None  # the socket stays blocking for the fallback


def test_recv_now_returns_what_arrived_up_to_the_buffer_size(
        pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    buf = gilio.RecvBuffer(8)
    b.sendall(b"0123456789")
    assert gilio.recv_now(a.fileno(), buf) == b"01234567"
    assert gilio.recv_now(a.fileno(), buf) == b"89"
    assert gilio.recv_now(a.fileno(), buf) is None
    b.shutdown(socket.SHUT_WR)
    assert gilio.recv_now(a.fileno(), buf) == b""  # end of stream


def test_errors_are_the_oserror_subclasses_socket_raises(
        pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    b.close()
    with pytest.raises(BrokenPipeError):
        gilio.send_now(a.fileno(), b"x" * 10)
    fd = a.detach()
    socket.close(fd)
    with pytest.raises(OSError) as info:
        gilio.recv_now(fd, gilio.RecvBuffer(16))
    assert info.value.errno == errno.EBADF


def test_send_now_sends_what_fits_and_says_how_much(
        pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    assert gilio.send_now(a.fileno(), b"hello") == 5
    assert gilio.send_now(a.fileno(), bytearray(b" world")) == 6
    assert b.recv(100) == b"hello world"
    # A long bytearray is left to the ordinary call (no copy of it here),
    # while bytes of the same length go at once as far as they fit.
    assert gilio.send_now(a.fileno(), bytearray(70_000)) == 0
    assert gilio.send_now(a.fileno(), bytes(70_000)) > 0
    while gilio.send_now(a.fileno(), b"y" * 65536) > 0:
        pass
    # The buffer is full: 0, and the caller blocks in sendall.
    assert gilio.send_now(a.fileno(), b"z") == 0


@pytest.mark.parametrize("through", ["libc", "os.write"])
def test_write_all_appends_every_byte_to_a_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, through: str) -> None:
    if through == "os.write":
        monkeypatch.setattr(gilio, "_CALLS", None)  # no ctypes: the ordinary call
    path = tmp_path / "log"
    path.write_bytes(b"before\n")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        gilio.write_all(fd, "ligne écrite\n".encode())
        gilio.write_all(fd, b"x" * 200_000 + b"\n")
        gilio.write_all(fd, b"")
    finally:
        os.close(fd)
    assert path.read_bytes() == "before\nligne écrite\n".encode() + b"x" * 200_000 + b"\n"
    with pytest.raises(OSError) as info:
        gilio.write_all(fd, b"closed")  # the fd is closed: EBADF, as os.write raises it
    assert info.value.errno == errno.EBADF
