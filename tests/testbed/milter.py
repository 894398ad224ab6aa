"""Run a ``Milter.Base`` milter on a real socket, in a thread of the test process.

The server is the framework's own :class:`Milter.server.MilterServer`, built
from a :class:`Milter.lowlevel.Registration` that carries the callbacks
``Milter.runmilter`` installs (:func:`Milter.glue_callbacks`), so an MTA that
talks to it goes through exactly the code a deployed milter runs.

Each server gets its own factory (``Milter.glue_callbacks(factory)``), so
several milters with different classes may run at once and the module global
``Milter.factory`` is never touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import Milter
from Milter import lowlevel
from Milter.server import MilterServer

Factory = Callable[[], Milter.Base]



class RunningMilter:
    """A milter serving on a socket; ``stop()`` ends it (idempotent)."""

    def __init__(self, server: MilterServer, thread: threading.Thread, factory: Factory,
                 tmpdir: str | None) -> None:
        self.server = server
        self.thread = thread
        self.factory = factory
        self._tmpdir = tmpdir
        self._stopped = False

    @property
    def is_unix(self) -> bool:
        return self.server.spec.is_unix

    @property
    def address(self) -> str | tuple[str, int]:
        """The socket path, or ``(host, port)`` with the real port."""
        return self.server.address

    @property
    def path(self) -> str:
        assert self.is_unix, "not a unix socket"
        return str(self.address)

    @property
    def port(self) -> int:
        assert not self.is_unix, "not an inet socket"
        return int(self.address[1])

    @property
    def host(self) -> str:
        assert not self.is_unix, "not an inet socket"
        return str(self.address[0])

    @property
    def libmilter_spec(self) -> str:
        """libmilter syntax (sendmail's ``S=``, miltertest): ``inet:PORT@HOST``."""
        if self.is_unix:
            return f"unix:{self.path}"
        family = "inet6" if ":" in self.host else "inet"
        return f"{family}:{self.port}@{self.host}"

    sendmail_spec = libmilter_spec

    @property
    def postfix_spec(self) -> str:
        """Postfix syntax (``smtpd_milters``): ``inet:HOST:PORT`` or ``unix:/path``."""
        if self.is_unix:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"inet:{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self.server.stop()
            self.thread.join(timeout)
            if self.thread.is_alive():
                raise RuntimeError(f"milter on {self.libmilter_spec} did not stop in {timeout}s")
        finally:
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> RunningMilter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def unix_socket_path(name: str = "milter.sock") -> tuple[str, str]:
    """A fresh directory (mode 0755, so an MTA running as another user can
    reach it) and a socket path inside it: ``(directory, path)``."""
    directory = tempfile.mkdtemp(prefix="bms-milter-")
    os.chmod(directory, 0o755)
    return directory, os.path.join(directory, name)


def start_milter(factory: Factory, spec: str = "inet:0@127.0.0.1", *,
                 name: str = "testmilter", socket_mode: int = 0o666,
                 drain_seconds: float = 5.0, **registration: Any) -> RunningMilter:
    """Serve ``factory`` objects on ``spec`` in a daemon thread.

    ``spec`` is libmilter syntax; port 0 picks a free port (read it from
    :attr:`RunningMilter.port`), and ``"unix"`` alone means a unix socket in a
    fresh directory that is removed on stop.  A unix socket gets
    ``socket_mode`` so that Postfix's ``smtpd`` (user ``postfix``) may connect.
    Extra keywords go to :class:`Milter.lowlevel.Registration` (``timeout``,
    ``flags``, ``exception_policy``…)."""
    tmpdir = None
    if spec == "unix":
        tmpdir, path = unix_socket_path()
        spec = f"unix:{path}"
    callbacks: dict[str, lowlevel.Callback | None] = dict(Milter.glue_callbacks(factory))
    reg = lowlevel.Registration(name=name, callbacks=callbacks,
                                registered=True, conn=spec, **registration)
    try:
        server = lowlevel.make_server(reg)
        server.socket_mode = socket_mode
        server.drain_seconds = drain_seconds
        server.open()
    except BaseException:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    thread = threading.Thread(target=server.serve_forever, kwargs={"handle_signals": False},
                              name=f"milter {spec}", daemon=True)
    running = RunningMilter(server, thread, factory, tmpdir)
    thread.start()
    return running


@contextmanager
def running_milter(factory: Factory, spec: str = "inet:0@127.0.0.1",
                   **kwargs: Any) -> Iterator[RunningMilter]:
    """:func:`start_milter` as a context manager."""
    running = start_milter(factory, spec, **kwargs)
    try:
        yield running
    finally:
        running.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for an MTA's listener)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(count: int, hosts: tuple[str, ...] = ("127.0.0.1",)) -> list[int]:
    """``count`` distinct ports that are free on every one of ``hosts`` at once."""
    ports: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(ports) < count:
            first = socket.socket(socket.AF_INET6 if ":" in hosts[0] else socket.AF_INET)
            first.bind((hosts[0], 0))
            held.append(first)
            port = int(first.getsockname()[1])
            ok = True
            for host in hosts[1:]:
                other = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
                try:
                    other.bind((host, port))
                except OSError:
                    ok = False
                held.append(other)
            if ok:
                ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports
