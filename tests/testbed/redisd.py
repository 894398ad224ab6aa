"""redis-server on loopback for the Redis state-store tests.

:class:`RedisServer` runs ``/usr/bin/redis-server`` on 127.0.0.1 and a free
port without persistence, waits until it answers PING, and can be stopped
and started again on the same port (to test a store whose server goes away
and comes back).  A failure to start raises :class:`RedisError` with the end
of its log.  :func:`redis_server` is a session fixture (skipped when
redis-server is not installed); import it in a conftest.py or test module::

    from testbed.redisd import redis_server  # noqa: F401 - the session fixture
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from types import TracebackType

import pytest
import redis

from .waiting import tail, wait_for

REDIS_SERVER = "/usr/bin/redis-server"


class RedisError(RuntimeError):
    """redis-server did not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ping(port: int) -> bool:
    """True when a server on ``port`` answers PING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A redis-server process; ``with RedisServer() as server: server.url``."""

    def __init__(self, port: int | None = None, timeout: float = 10) -> None:
        self.port = port or free_port()
        self.timeout = timeout
        self.dir = tempfile.mkdtemp(prefix="bms-redis-")
        self.logfile = os.path.join(self.dir, "redis.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def empty_database(self, db: int) -> str:
        """The URL of database ``db`` of this server, flushed."""
        url = f"{self.url.rsplit('/', 1)[0]}/{db}"
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
        return url

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> RedisServer:
        """Start (again, on the same port) and wait for PING."""
        if self.running:
            return self
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                 "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RedisError(f"redis-server exited with {self.proc.returncode}\n"
                                 + tail(self.logfile))
            return ping(self.port)

        wait_for(up, self.timeout, f"redis-server on port {self.port}",
                 detail=lambda: tail(self.logfile))
        return self

    def stop(self) -> None:
        """End the server and wait for it; the port is free afterwards."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def require_redis() -> None:
    """Skip the calling test when redis-server is not installed."""
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip(f"{REDIS_SERVER} is not installed (apt-get install redis-server)")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (skipped when it is not installed)."""
    require_redis()
    with RedisServer() as server:
        yield server
