"""A scriptable SMTP sink: a real server on a real socket, for CBV and DSN tests.

It stands in for the sender's MX.  By default it accepts everything; rules
make it refuse, delay or hang up at one step, for some senders or
recipients only.  Every session is recorded (the command lines, the replies
and the messages received, as bytes), so a test can assert that a probe
asked ``RCPT TO:<a@b>`` or that a DSN arrived with the template's text.

    with SmtpSink("127.0.0.1", 0) as sink:          # port 0: a free port
        sink.refuse("RCPT", "550 5.1.1 no such user", rcpt="bob@example.com")
        sink.delay("MAIL", 5.0)                      # a slow MX
        ... probe 127.0.0.1, sink.port ...
        sink.wait_for_sessions(1)
        [msg] = sink.messages()
        assert b"SPF" in msg.data

Steps a rule can apply to: ``BANNER``, ``EHLO``, ``HELO``, ``MAIL``,
``RCPT``, ``DATA`` (the 354 stage), ``MESSAGE`` (the reply after the final
dot) and ``QUIT``.  A rule's ``sender``/``rcpt`` filter matches a whole
address (case-insensitive) or, written ``@domain``, every address in the
domain; at RCPT ``rcpt`` is the address being given, at DATA and MESSAGE any
recipient accepted so far.  A rule with a filter never matches at BANNER,
EHLO or HELO (nothing is known yet).  The rule added last wins; ``times``
limits how often a rule fires.

The server is threaded (one thread per client), binds and listens before
:meth:`SmtpSink.start` returns, and :meth:`SmtpSink.stop` cuts short any
delay, closes the client connections and joins every thread.  The default
address, 127.0.0.25:25, is the sender MX of the e2e tests (inside the
private network namespace; binding port 25 needs root there).

pytest fixtures (import them into a conftest.py or a test module)::

    from testbed.smtpsink import smtp_sink, smtp_sink_factory  # noqa: F401

* ``smtp_sink``: a started sink on 127.0.0.1 with a free port;
* ``smtp_sink_factory``: ``smtp_sink_factory(host="127.0.0.25", port=25)``
  starts more sinks (any address); all are stopped after the test.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import pytest

DEFAULT_HOST: Final = "127.0.0.25"
DEFAULT_PORT: Final = 25
STEPS: Final = frozenset({"BANNER", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "MESSAGE",
                          "QUIT"})
MAX_LINE: Final = 4096  # bytes per command line (RFC 5321 says 512; be lenient)
MAX_MESSAGE: Final = 10 * 1024 * 1024  # bytes per message
IDLE_TIMEOUT: Final = 30.0  # a client silent this long is dropped

_DEFAULT_REPLIES: Final = {
    "BANNER": "220 {name} ESMTP sink",
    "EHLO": "250 {name}\n8BITMIME\nSIZE 10485760\nENHANCEDSTATUSCODES",
    "HELO": "250 {name}",
    "MAIL": "250 2.1.0 Ok",
    "RCPT": "250 2.1.5 Ok",
    "DATA": "354 End data with <CR><LF>.<CR><LF>",
    "MESSAGE": "250 2.0.0 Ok: queued",
    "QUIT": "221 2.0.0 Bye",
}


@dataclass
class Rule:
    """What the sink does at ``step`` for matching sessions; see the module docstring.

    ``reply`` is ``"CODE text"`` (``\\n`` separates the lines of a multi-line
    reply) or None for the normal reply; ``delay`` seconds pass before it is
    sent; ``hangup`` closes the connection instead of replying."""

    step: str
    reply: str | None = None
    sender: str | None = None
    rcpt: str | None = None
    delay: float = 0.0
    hangup: bool = False
    times: int | None = None  # fire at most this often (None: always)
    fired: int = 0


@dataclass(frozen=True)
class Message:
    """A message the sink accepted (250 after the final dot)."""

    sender: str  # the MAIL FROM path without brackets ("" for <>)
    recipients: tuple[str, ...]  # the accepted RCPT TO paths
    data: bytes  # as received: CRLF line ends, dot-stuffing removed, no final dot
    helo: str = ""

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def parsed(self) -> email.message.EmailMessage:
        msg = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        return msg


@dataclass
class Session:
    """One client connection, as recorded so far."""

    peer: tuple[str, int]
    helo: str = ""
    commands: list[str] = field(default_factory=list)  # the client's lines (not message data)
    replies: list[str] = field(default_factory=list)  # what we answered, first line each
    messages: list[Message] = field(default_factory=list)
    closed: bool = False

    def copy(self) -> Session:
        return Session(self.peer, self.helo, list(self.commands), list(self.replies),
                       list(self.messages), self.closed)


def _match(pattern: str | None, address: str) -> bool:
    if pattern is None:
        return True
    pattern, address = pattern.lower(), address.lower()
    if pattern.startswith("@"):
        return address.endswith(pattern)
    return address == pattern


def _path(arg: str) -> str:
    """The address in ``FROM:<a@b> SIZE=1`` / ``TO:<a@b>``, without brackets."""
    _, _, rest = arg.partition(":")
    rest = rest.strip()
    if rest.startswith("<"):
        end = rest.find(">")
        return rest[1:end] if end >= 0 else rest[1:]
    return rest.split(" ", 1)[0]


class _Hangup(Exception):
    pass


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = False  # server_close() joins the client threads
    block_on_close = True
    sink: SmtpSink

    def __init__(self, sink: SmtpSink, host: str, port: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sink = sink
        super().__init__((host, port), _Handler)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server
    timeout = IDLE_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self.sink = self.server.sink
        self.session = self.sink._open(self.request, self.client_address)
        self.sender: str | None = None
        self.rcpts: list[str] = []

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        self.sink._close(self.request, self.session)

    # --- replies ---------------------------------------------------------------------

    def _say(self, step: str, *, rcpt: str | None = None) -> bool:
        """Answer ``step`` as scripted; True when the reply is a success (2xx/3xx)."""
        rule = self.sink._rule(step, self.sender, rcpt, self.rcpts)
        reply = _DEFAULT_REPLIES[step].format(name=self.sink.name)
        if rule is not None:
            if rule.delay > 0 and self.sink._stopping.wait(rule.delay):
                raise _Hangup
            if rule.hangup:
                raise _Hangup
            reply = rule.reply or reply
        self._send(reply)
        return reply[:1] in ("2", "3")

    def _send(self, reply: str) -> None:
        lines = reply.split("\n")
        code = lines[0][:3]
        out = []
        for i, line in enumerate(lines):
            text = line[4:] if line[:3] == code else line
            sep = " " if i == len(lines) - 1 else "-"
            out.append(f"{code}{sep}{text}".rstrip() + "\r\n")
        self.sink._record_reply(self.session, lines[0])
        self.wfile.write("".join(out).encode("utf-8"))
        self.wfile.flush()

    # --- the dialogue ----------------------------------------------------------------

    def _readline(self) -> bytes | None:
        line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            return None
        if len(line) > MAX_LINE:
            self._send("500 5.5.2 Line too long")
            raise _Hangup
        return line

    def handle(self) -> None:
        try:
            self._dialogue()
        except (_Hangup, OSError, ValueError):
            pass

    def _dialogue(self) -> None:
        if not self._say("BANNER"):
            return
        while True:
            raw = self._readline()
            if raw is None:
                return
            line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
            self.sink._record_command(self.session, line)
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                self.sink._set_helo(self.session, arg.strip())
                self._say("EHLO")
            elif verb == "HELO":
                self.sink._set_helo(self.session, arg.strip())
                self._say("HELO")
            elif verb == "MAIL":
                if self.sender is not None:
                    self._send("503 5.5.1 Error: nested MAIL command")
                else:
                    self.sender = _path(arg)  # known to the rules before they are asked
                    if not self._say("MAIL"):
                        self.sender = None
            elif verb == "RCPT":
                if self.sender is None:
                    self._send("503 5.5.1 Error: need MAIL command")
                    continue
                rcpt = _path(arg)
                if self._say("RCPT", rcpt=rcpt):
                    self.rcpts.append(rcpt)
            elif verb == "DATA":
                if self.sender is None or not self.rcpts:
                    self._send("503 5.5.1 Error: need RCPT command")
                    continue
                if self._say("DATA"):
                    self._receive_message()
            elif verb == "RSET":
                self.sender, self.rcpts = None, []
                self._send("250 2.0.0 Ok")
            elif verb == "NOOP":
                self._send("250 2.0.0 Ok")
            elif verb == "VRFY":
                self._send("252 2.0.0 Cannot VRFY user")
            elif verb == "QUIT":
                self._say("QUIT")
                return
            else:
                self._send("502 5.5.2 Error: command not recognized")

    def _receive_message(self) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            raw = self.rfile.readline(MAX_LINE + 1)
            if not raw:
                raise _Hangup
            if raw in (b".\r\n", b".\n"):
                break
            if raw.startswith(b"."):
                raw = raw[1:]
            size += len(raw)
            if size <= MAX_MESSAGE:
                chunks.append(raw)
        assert self.sender is not None
        msg = Message(self.sender, tuple(self.rcpts), b"".join(chunks), self.session.helo)
        if size > MAX_MESSAGE:
            self._send("552 5.3.4 Message too big")
        elif self._say("MESSAGE"):
            self.sink._record_message(self.session, msg)
        self.sender, self.rcpts = None, []


class SmtpSink:
    """A threaded SMTP server that records and obeys scripted rules (module docstring).

    ``port`` 0 picks a free port (see :attr:`port` after :meth:`start`);
    ``name`` is the host name in the banner and EHLO reply."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                 name: str = "sink.test") -> None:
        self.host = host
        self._port = port
        self.name = name
        self._lock = threading.Condition()
        self._rules: list[Rule] = []
        self._sessions: list[Session] = []
        self._clients: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle ------------------------------------------------------------------

    def start(self) -> SmtpSink:
        """Bind, listen and serve in a thread; returns once connections are accepted."""
        if self._server is not None:
            raise RuntimeError("sink already started")
        self._stopping.clear()
        self._server = _Server(self, self.host, self._port)  # bound and listening
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"smtpsink-{self.host}:{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, end the sessions (delays cut short) and join every thread."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            clients = list(self._clients)
        for sock in clients:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()  # joins the client threads (block_on_close)
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self._port

    # --- scripting -------------------------------------------------------------------

    def on(self, step: str, reply: str | None = None, *, sender: str | None = None,
           rcpt: str | None = None, delay: float = 0.0, hangup: bool = False,
           times: int | None = None) -> Rule:
        """Add a rule (the last added wins); returns it."""
        step = step.upper()
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}; one of {sorted(STEPS)}")
        if reply is not None and not (reply[:3].isdigit() and reply[3:4] in ("", " ", "-")):
            raise ValueError(f"reply {reply!r} does not start with a 3-digit code")
        rule = Rule(step, reply, sender, rcpt, delay, hangup, times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def refuse(self, step: str, reply: str, *, sender: str | None = None,
               rcpt: str | None = None, times: int | None = None) -> Rule:
        """Answer ``step`` with ``reply`` (``"550 5.1.1 no such user"``, ``"451 …"``)."""
        return self.on(step, reply, sender=sender, rcpt=rcpt, times=times)

    def delay(self, step: str, seconds: float, *, sender: str | None = None,
              rcpt: str | None = None, reply: str | None = None) -> Rule:
        """Wait ``seconds`` before answering ``step`` (a slow MX)."""
        return self.on(step, reply, sender=sender, rcpt=rcpt, delay=seconds)

    def hangup(self, step: str, *, sender: str | None = None, rcpt: str | None = None,
               times: int | None = None) -> Rule:
        """Close the connection instead of answering ``step``."""
        return self.on(step, sender=sender, rcpt=rcpt, hangup=True, times=times)

    def reset(self) -> None:
        """Forget the rules and the recorded sessions: accept everything again."""
        with self._lock:
            self._rules.clear()
            self._sessions.clear()

    # --- what happened ---------------------------------------------------------------

    def sessions(self) -> list[Session]:
        """Copies of every session so far, in order of connection."""
        with self._lock:
            return [s.copy() for s in self._sessions]

    def messages(self) -> list[Message]:
        """Every message accepted so far, in order."""
        with self._lock:
            return [m for s in self._sessions for m in s.messages]

    def commands(self) -> list[str]:
        """The command lines of every session, in order."""
        with self._lock:
            return [c for s in self._sessions for c in s.commands]

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._sessions)

    def wait_for_sessions(self, n: int = 1, timeout: float = 10.0) -> list[Session]:
        """Block until ``n`` sessions have ended (the client quit or hung up)."""
        return self._wait(lambda: [s.copy() for s in self._sessions if s.closed], n, timeout,
                          "closed sessions")

    def wait_for_messages(self, n: int = 1, timeout: float = 10.0) -> list[Message]:
        """Block until ``n`` messages have been accepted."""
        return self._wait(lambda: [m for s in self._sessions for m in s.messages], n, timeout,
                          "messages")

    def _wait(self, get: Callable[[], list[Any]], n: int, timeout: float,
              what: str) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = get()
                if len(found) >= n:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    commands = [c for s in self._sessions for c in s.commands]
                    raise AssertionError(f"smtp sink: {len(found)} {what} after {timeout}s, "
                                         f"wanted {n}; commands: {commands}")
                self._lock.wait(left)

    # --- called by the handler threads -------------------------------------------------

    def _open(self, sock: socket.socket, peer: Any) -> Session:
        session = Session((str(peer[0]), int(peer[1])))
        with self._lock:
            self._clients.add(sock)
            self._sessions.append(session)
            self._lock.notify_all()
        if self._stopping.is_set():  # accepted just as stop() collected the clients
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return session

    def _close(self, sock: socket.socket, session: Session) -> None:
        with self._lock:
            self._clients.discard(sock)
            session.closed = True
            self._lock.notify_all()

    def _rule(self, step: str, sender: str | None, rcpt: str | None,
              accepted: list[str]) -> Rule | None:
        with self._lock:
            for rule in reversed(self._rules):
                if rule.step != step or (rule.times is not None and rule.fired >= rule.times):
                    continue
                if rule.sender is not None and (sender is None
                                                or not _match(rule.sender, sender)):
                    continue
                if rule.rcpt is not None:
                    candidates = [rcpt] if rcpt is not None else accepted
                    if not any(_match(rule.rcpt, r) for r in candidates):
                        continue
                rule.fired += 1
                return rule
        return None

    def _record_command(self, session: Session, line: str) -> None:
        with self._lock:
            session.commands.append(line)

    def _record_reply(self, session: Session, line: str) -> None:
        with self._lock:
            session.replies.append(line)

    def _set_helo(self, session: Session, name: str) -> None:
        with self._lock:
            session.helo = name

    def _record_message(self, session: Session, msg: Message) -> None:
        with self._lock:
            session.messages.append(msg)
            self._lock.notify_all()


# --- pytest fixtures ---------------------------------------------------------------------

@pytest.fixture
def smtp_sink_factory() -> Iterator[Callable[..., SmtpSink]]:
    """``smtp_sink_factory(host="127.0.0.25", port=25, name="sink.test")``: a
    started sink; every one is stopped after the test."""
    started: list[SmtpSink] = []

    def start(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, **kw: Any) -> SmtpSink:
        sink = SmtpSink(host, port, **kw).start()
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A started sink on 127.0.0.1 with a free port (``smtp_sink.port``)."""
    with SmtpSink("127.0.0.1", 0) as sink:
        yield sink
