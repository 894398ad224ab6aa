"""Sockets, one thread per MTA connection, worker processes, shutdown.

The server moves bytes between a socket and a :class:`~Milter.context.Context`
and nothing else: it never looks at the protocol or at policy.

Latency matters more than anything here.  Neither Postfix nor libmilter sets
TCP_NODELAY, and both write small packets back to back, so over TCP every
message used to wait for ~40 ms delayed-ACK/Nagle stalls (TESTBED.md).  We
answer each command with one ``send`` on a TCP_NODELAY socket and re-arm
TCP_QUICKACK before every ``recv``, so the MTA's second small write is never
held back waiting for our ACK.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from . import connid, gilio
from .observer import NULL_OBSERVER, Observer

log = logging.getLogger("Milter.server")

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only
RECV_SIZE = 256 * 1024
MAX_SPARE_THREADS = 4  # idle threads kept waiting in accept()
_TIMEVAL = struct.Struct("@ll")  # struct timeval for SO_RCVTIMEO
DEFAULT_DRAIN_SECONDS = 30.0
_NEVER = float("inf")


class ContextLike(Protocol):
    """What the server needs of a connection's context (:class:`Milter.context.Context`)."""

    def receive(self, data: bytes) -> bool:
        """Handle bytes from the MTA; ``False`` once the session is over."""

    def end_of_input(self) -> None:
        """The MTA closed its side of the connection."""

    def connection_lost(self, reason: BaseException | None = None) -> None:
        """The connection failed or timed out (or the server closes it)."""

    @property
    def closed(self) -> bool: ...

    @property
    def idle(self) -> bool:
        """No transaction is open (the connection may be closed between messages)."""


ContextFactory = Callable[[Callable[[bytes], object], str], ContextLike]


class _Live:
    """A connection being served.  Its thread holds ``lock`` while it handles
    what the MTA sent, so stop() can close it only while it waits between
    messages (libmilter's ST_IN_MAIL is the transaction; end of message
    counts too, until the verdict is sent)."""

    __slots__ = ("closing", "ctx", "lock", "sock")

    def __init__(self, sock: socket.socket, ctx: ContextLike) -> None:
        self.sock = sock
        self.ctx = ctx
        self.lock = threading.Lock()
        self.closing = False

    @property
    def idle(self) -> bool:
        return self.ctx.idle

    def close_if_idle(self) -> bool:
        """Shut the socket down if no command is being handled and no
        transaction is open: the thread's recv() then sees EOF.  The MTA
        treats the next message as the milter being unavailable (Postfix and
        sendmail: the configured default action, tempfail)."""
        if self.closing or not self.lock.acquire(blocking=False):
            return False
        try:
            if not self.idle:
                return False
            self.closing = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        finally:
            self.lock.release()


class _Deadlines:
    """The session and message deadlines of one connection.

    Checked when a ``recv`` returns (bytes trickling in do not extend them),
    and the socket's receive timeout is lowered to the nearer deadline, so a
    silent connection wakes up in time.  It is re-armed only when the
    deadline has come closer than the armed timeout by a tenth (or when a
    message ended and the timeout may grow again): a handful of
    ``setsockopt`` calls per session, none per packet."""

    __slots__ = ("armed", "end", "message", "message_end", "session", "session_end", "sock",
                 "timeout", "which")

    def __init__(self, sock: socket.socket, timeout: float, session: float,
                 message: float) -> None:
        self.sock = sock
        self.timeout = self.armed = timeout
        self.session = session
        self.message = message
        self.session_end = time.monotonic() + session if session else _NEVER
        self.message_end = _NEVER
        self.end = self.session_end
        self.which = "session"

    def update(self, idle: bool, now: float) -> None:
        """After handling a packet: a transaction began or ended, re-arm."""
        if self.message:
            if idle:
                self.message_end = _NEVER
            elif self.message_end == _NEVER:
                self.message_end = now + self.message
        if self.message_end < self.session_end:
            self.end, self.which = self.message_end, "message"
        else:
            self.end, self.which = self.session_end, "session"
        want = min(self.timeout, self.end - now)
        margin = max(0.5, want / 10)
        if want < self.armed - margin or (self.armed < self.timeout
                                          and want > self.armed + margin):
            self.armed = want = max(want, 0.001)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                 _TIMEVAL.pack(int(want), int(want % 1 * 1e6)))

    def passed(self, now: float) -> bool:
        if now < self.end:
            return False
        limit = self.session if self.which == "session" else self.message
        where = "session" if self.which == "session" else "message (from MAIL FROM)"
        log.warning("%s deadline of %gs reached, closing the MTA connection", where, limit)
        return True


class SocketSpecError(ValueError):
    """A socket specification that cannot be used; the message says why."""


@dataclass(frozen=True)
class SocketSpec:
    """A parsed libmilter socket specification."""

    family: int
    address: str | tuple[str, int]
    text: str

    @property
    def is_unix(self) -> bool:
        return self.family == socket.AF_UNIX


def _port(text: str, spec: str) -> int:
    if text.isdigit():
        port = int(text)
        if 0 <= port < 65536:  # 0: any free port (see MilterServer.address)
            return port
        raise SocketSpecError(f"port out of range in {spec!r}")
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        raise SocketSpecError(f"unknown port or service {text!r} in {spec!r}") from None


def parse_socket_spec(spec: str) -> SocketSpec:
    """``unix:/path``, ``local:/path``, ``/path``, ``inet:port[@host]``,
    ``inet6:port[@host]``; a host may be ``[literal]`` (PROTOCOL.md §1)."""
    spec = spec.strip()
    kind, sep, rest = spec.partition(":")
    if not sep:
        if spec.startswith("/"):
            return SocketSpec(socket.AF_UNIX, spec, spec)
        raise SocketSpecError(
            f"socket {spec!r}: expected unix:/path, local:/path, /path, inet:port@host or "
            "inet6:port@host")
    kind = kind.lower()
    if kind in ("unix", "local"):
        if not rest.startswith("/"):
            raise SocketSpecError(f"socket {spec!r}: a unix socket needs an absolute path")
        return SocketSpec(socket.AF_UNIX, rest, spec)
    if kind not in ("inet", "inet6"):
        raise SocketSpecError(f"socket {spec!r}: unknown socket type {kind!r}")
    family = socket.AF_INET if kind == "inet" else socket.AF_INET6
    port_text, at, host = rest.partition("@")
    if ":" in port_text and not at:
        raise SocketSpecError(
            f"socket {spec!r}: write inet:PORT@HOST (this looks like Postfix's inet:HOST:PORT)")
    port = _port(port_text, spec)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        host = "0.0.0.0" if family == socket.AF_INET else "::"
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SocketSpecError(f"socket {spec!r}: cannot resolve {host!r}: {exc}") from None
    address = infos[0][4]
    return SocketSpec(family, (str(address[0]), int(address[1])), spec)


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


class MilterServer:
    """Listens on one socket and serves each MTA connection on its own thread."""

    def __init__(
        self,
        spec: str,
        make_context: ContextFactory,
        *,
        timeout: float = 7210.0,
        backlog: int = 0,
        workers: int = 1,
        umask: int | None = None,
        socket_mode: int | None = None,
        drain_seconds: float = DEFAULT_DRAIN_SECONDS,
        session_deadline: float = 0.0,
        message_deadline: float = 0.0,
        max_connections: int = 0,
        on_reload: Callable[[], object] | None = None,
        on_reopen: Callable[[], object] | None = None,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self.spec = parse_socket_spec(spec)
        self.make_context = make_context
        self.timeout = timeout
        self.backlog = backlog or socket.SOMAXCONN
        self.workers = max(1, workers)
        self.umask = umask
        self.socket_mode = socket_mode
        self.drain_seconds = drain_seconds
        # Limits (0: none): a connection is closed when it has lasted
        # session_deadline seconds or a transaction message_deadline seconds,
        # however slowly the bytes come; over max_connections at once, a new
        # connection is closed at once (the MTA applies its default action).
        self.session_deadline = session_deadline
        self.message_deadline = message_deadline
        self.max_connections = max_connections
        self.observer = observer
        # SIGHUP: on_reload() when given, else stop (libmilter's meaning);
        # SIGUSR1: on_reopen() (reopen log files).
        self.on_reload = on_reload
        self.on_reopen = on_reopen
        # Called about once a second from the main loop of the process that
        # owns the socket (never in a worker): periodic housekeeping.
        self.on_tick: Callable[[], object] | None = None
        # Called once in each serving process (the only one, or each worker)
        # when it stops, after its connections are done: last writes.
        self.on_stop: Callable[[], object] | None = None
        self.listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._threads: set[threading.Thread] = set()
        self._threads_lock = threading.Lock()
        self._waiting = 0  # threads blocked in accept()
        self._busy = 0  # threads serving a connection
        self._live: set[_Live] = set()  # their connections (stop() closes idle ones)
        self._socket_identity: tuple[int, int] | None = None
        self._children: dict[int, int] = {}  # pid -> worker index
        self.running = False

    # ---------------------------------------------------------------- socket

    def open(self, remove_stale: bool = True) -> None:
        """Create, bind and listen (idempotent)."""
        if self.listener is not None:
            return
        spec = self.spec
        sock = socket.socket(spec.family, socket.SOCK_STREAM)
        try:
            if spec.is_unix:
                path = str(spec.address)
                if os.path.lexists(path):
                    if not _is_socket(path):
                        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
                    if not remove_stale:
                        raise OSError(errno.EADDRINUSE, f"{path} already exists")
                    os.unlink(path)  # a stale socket from an earlier run
                old_umask = os.umask(self.umask) if self.umask is not None else None
                try:
                    sock.bind(path)
                finally:
                    if old_umask is not None:
                        os.umask(old_umask)
                if self.socket_mode is not None:
                    os.chmod(path, self.socket_mode)
                st = os.stat(path)
                self._socket_identity = (st.st_dev, st.st_ino)
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if spec.family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind(spec.address)
            sock.listen(self.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.listener = sock

    @property
    def address(self) -> str | tuple[str, int]:
        """Where we listen (the real port when the spec asked for port 0)."""
        if self.listener is None:
            return self.spec.address
        name = self.listener.getsockname()
        return name if isinstance(name, str) else (str(name[0]), int(name[1]))

    def _remove_socket_file(self) -> None:
        if not self.spec.is_unix or self._socket_identity is None:
            return
        path = str(self.spec.address)
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == self._socket_identity:
                os.unlink(path)
        except OSError:
            pass

    # ----------------------------------------------------------------- serving
    #
    # Threads: a thread blocked in accept() serves the connection it accepted
    # itself (no hand-off, no thread start per connection); it first makes
    # sure another thread is waiting in accept(), and when its session ends it
    # goes back to accept() unless enough threads already wait there.  stop()
    # shuts the listening socket down, which wakes every accept().

    def stop(self) -> None:
        """Stop accepting; running sessions finish (bounded by drain_seconds)."""
        self._stopping.set()
        listener = self.listener
        # A worker supervisor leaves the shared socket to its workers, which
        # stop on the SIGTERM it sends them.
        if listener is not None and (self.workers == 1 or self._children_mode):
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def install_signals(self) -> None:
        """Install the handlers now (serve_forever does it too): a daemon that
        announces itself (pidfile, sd_notify) before serving must already
        answer SIGTERM/SIGHUP/SIGUSR1 the way it will while serving."""
        self._install_signals()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._children and signum in (signal.SIGHUP, signal.SIGUSR1):
            for pid in list(self._children):  # workers reload / reopen themselves
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
            if signum == signal.SIGUSR1 and self.on_reopen is not None:
                self.on_reopen()
            return
        if signum == signal.SIGHUP and self.on_reload is not None:
            # Not in the signal handler itself: reloading takes locks and does I/O.
            threading.Thread(target=self.on_reload, name="reload", daemon=True).start()
        elif signum == signal.SIGUSR1:
            if self.on_reopen is not None:
                self.on_reopen()
        else:
            self.stop()

    def serve_forever(self, handle_signals: bool = True) -> None:
        self.open()
        self.running = True
        if handle_signals:
            self._install_signals()
        try:
            if self.workers > 1:
                self._run_workers()
            else:
                self._serve_until_stopped()
        finally:
            self.running = False
            self._close_listener()

    def _close_listener(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if not self._children_mode:
            self._remove_socket_file()

    def close(self) -> None:
        """Close the listening socket and remove its file, for a server that
        was opened but will not (or no longer) serve."""
        self._close_listener()

    def _tick(self) -> None:
        if self.on_tick is None or self._children_mode:
            return
        try:
            self.on_tick()
        except Exception:  # housekeeping must never stop the server
            log.exception("internal error in periodic housekeeping")

    _children_mode = False  # True in a forked worker: the parent owns the socket file

    def _serve_until_stopped(self) -> None:
        assert self.listener is not None
        self.listener.setblocking(True)
        with self._threads_lock:
            self._start_acceptor()
        while not self._stopping.wait(1.0):
            self._tick()
        self._close_listener()  # refuse new connections while draining
        self._drain()
        if self.on_stop is not None:
            try:
                self.on_stop()
            except Exception:  # the process ends all the same
                log.exception("internal error in the stop handler")

    def _start_acceptor(self) -> None:
        """Start a thread that waits in accept(); call with _threads_lock held."""
        thread = threading.Thread(target=self._acceptor, daemon=True, name="milter")
        self._threads.add(thread)
        self._waiting += 1
        thread.start()

    def _acceptor(self) -> None:
        me = threading.current_thread()
        listener = self.listener
        # For reads that keep the GIL while other connections are served (gilio).
        buf = gilio.RecvBuffer(RECV_SIZE) if gilio.AVAILABLE else None
        try:
            while listener is not None and not self._stopping.is_set():
                try:
                    conn, _addr = listener.accept()
                except OSError as exc:
                    if self._stopping.is_set():
                        return
                    if exc.errno == errno.EINVAL and self._children_mode:
                        # A sibling worker got SIGTERM first and shut the shared
                        # socket down; ours is on its way.
                        self._stopping.wait(1.0)
                        continue
                    # EMFILE and friends: log, back off a little, keep serving.
                    log.error("accept failed: %s", exc)
                    time.sleep(0.1)
                    continue
                with self._threads_lock:
                    if 0 < self.max_connections <= self._busy:
                        refused = True
                    else:
                        refused = False
                        self._waiting -= 1
                        self._busy += 1
                        if self._waiting == 0 and not self._stopping.is_set():
                            self._start_acceptor()
                if refused:
                    log.warning("connection limit: %d MTA connections already served, "
                                "closing a new one (max_connections)", self.max_connections)
                    conn.close()
                    continue
                self.observer.connection_opened()
                try:
                    self._serve_connection(conn, buf)
                finally:
                    self.observer.connection_closed()
                    with self._threads_lock:
                        self._busy -= 1
                with self._threads_lock:
                    if self._waiting >= MAX_SPARE_THREADS or self._stopping.is_set():
                        return
                    self._waiting += 1
        finally:
            with self._threads_lock:
                self._threads.discard(me)

    def _serve_connection(self, conn: socket.socket, buf: gilio.RecvBuffer | None = None) -> None:
        cid = connid.new_id()
        connid.current.set(cid)
        tcp = conn.family in (socket.AF_INET, socket.AF_INET6)
        quickack = _QUICKACK if tcp else None
        ctx: ContextLike | None = None
        live: _Live | None = None
        deadlines: _Deadlines | None = None
        writes = 0
        fd = conn.fileno()
        # While other connections are served (_busy > 1), recv and send first
        # try without letting the GIL go (gilio); alone, the plain calls.
        send_now = gilio.send_now if buf is not None else None
        recv_now = gilio.recv_now if buf is not None else None

        def send(data: bytes) -> None:
            nonlocal writes
            writes += 1
            if send_now is not None and self._busy > 1:
                sent = send_now(fd, data)
                if sent == len(data):
                    return
                if sent:
                    data = memoryview(data)[sent:]  # type: ignore[assignment]
            conn.sendall(data)

        try:
            # Blocking socket, timeouts enforced by the kernel: Python's own
            # timeout mode would poll() before every recv and send.
            if conn.gettimeout() is not None:  # an ioctl only when needed
                conn.settimeout(None)
            timeval = _TIMEVAL.pack(int(self.timeout), int(self.timeout % 1 * 1e6))
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
            if tcp:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ctx = self.make_context(send, cid)
            live = _Live(conn, ctx)
            with self._threads_lock:
                self._live.add(live)
            recv = conn.recv
            setsockopt = conn.setsockopt
            receive = ctx.receive
            stopping = self._stopping
            if self.session_deadline or self.message_deadline:
                deadlines = _Deadlines(conn, self.timeout, self.session_deadline,
                                       self.message_deadline)
                deadlines.update(ctx.idle, time.monotonic())
            while True:
                if recv_now is not None and self._busy > 1:
                    data = recv_now(fd, buf)  # type: ignore[arg-type]
                    if data is None:
                        data = recv(RECV_SIZE)
                else:
                    data = recv(RECV_SIZE)
                if not data:
                    ctx.end_of_input()
                    break
                if deadlines is not None and deadlines.passed(time.monotonic()):
                    ctx.connection_lost(TimeoutError(f"{deadlines.which} deadline"))
                    break
                before = writes
                with live.lock:
                    if stopping.is_set() and live.idle:
                        # Stopping: no new message on this connection; the MTA
                        # gets no answer and applies its default (tempfail).
                        log.info("stopping: MTA connection closed between messages")
                        ctx.connection_lost()
                        break
                    if not receive(data):
                        break
                if deadlines is not None:
                    deadlines.update(ctx.idle, time.monotonic())
                if quickack is not None and writes == before:
                    # Nothing to answer yet: ACK now, so an MTA holding its next
                    # small write for our ACK (Nagle) is not left waiting for
                    # the delayed-ACK timer.  A reply carries the ACK itself.
                    setsockopt(socket.IPPROTO_TCP, quickack, 1)
        except BlockingIOError:  # SO_RCVTIMEO / SO_SNDTIMEO expired
            if deadlines is not None and deadlines.passed(time.monotonic()):
                reason = f"{deadlines.which} deadline"
            else:
                log.warning("no progress with the MTA for %s seconds, closing", self.timeout)
                reason = "read timeout"
            if ctx is not None:
                ctx.connection_lost(TimeoutError(reason))
        except OSError as exc:
            log.info("MTA connection error: %s", exc)
            if ctx is not None:
                ctx.connection_lost(exc)
        except Exception:
            log.exception("internal error serving the MTA connection")
            if ctx is not None:
                try:
                    ctx.connection_lost()
                except Exception:
                    log.exception("internal error closing the connection")
        finally:
            if live is not None:
                with self._threads_lock:
                    self._live.discard(live)
            conn.close()

    def active_connections(self) -> int:
        with self._threads_lock:
            return self._busy

    def _drain(self) -> None:
        """Let each connection finish the message it is in (at most
        drain_seconds); connections waiting between messages are closed."""
        deadline = time.monotonic() + self.drain_seconds
        if self.active_connections():
            log.info("stopping: %d MTA connections finish their messages (at most %gs)",
                     self.active_connections(), self.drain_seconds)
        while self.active_connections():
            with self._threads_lock:
                live = list(self._live)
            for session in live:
                session.close_if_idle()
            if time.monotonic() >= deadline:
                log.warning("stopping with %d MTA connections still open",
                            self.active_connections())
                return
            time.sleep(0.05)

    # ---------------------------------------------------------------- workers

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                self._children_mode = True
                self._children.clear()
                connid.set_prefix(f"{index}.")
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                    signal.signal(sig, self._on_signal)
                self._serve_until_stopped()
            except BaseException:
                log.exception("worker %d failed", index)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        self._children[pid] = index

    def _run_workers(self) -> None:
        for index in range(1, self.workers + 1):
            self._spawn(index)
        while self._children:
            if self._stopping.is_set():
                self._close_listener()
                for pid in list(self._children):
                    try:
                        os.kill(pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + self.drain_seconds + 5
                while self._children and time.monotonic() < deadline:
                    self._reap(block=False)
                    time.sleep(0.05)
                for pid in list(self._children):
                    os.kill(pid, signal.SIGKILL)
                    self._reap(block=True)
                return
            dead = self._reap(block=False)
            if dead is not None and not self._stopping.is_set():
                log.error("worker %d exited; starting a new one", dead)
                self._spawn(dead)
            select.select([self._wake_r], [], [], 0.5)
            self._tick()

    def _reap(self, block: bool) -> int | None:
        try:
            pid, _status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self._children.clear()
            return None
        if pid == 0:
            return None
        self.observer.process_exited(pid)
        return self._children.pop(pid, None)
