"""Sendmail 8.17 for tests: unpacked (not installed: it conflicts with Postfix).

``./test.sh`` unpacks the Debian packages and exports ``BMS_SENDMAIL_ROOT``;
the binary is ``$BMS_SENDMAIL_ROOT/usr/libexec/sendmail/sendmail``.  A
hand-written ``sendmail.cf`` (TESTBED.md) accepts everything, runs one milter
and only queues (``DeliveryMode=queue``): accepted messages stay in the queue
directory as ``qf*`` (envelope and headers) and ``df*`` (body) files, which
:class:`QueueFile` parses.

Two ways to drive it:

* :meth:`Sendmail.bs_session`: ``sendmail -bs``, one SMTP session on the
  child's stdin/stdout (a socket pair here).  It needs a lock-step client
  (it answers ``554 5.5.0`` to a pipelined dialogue), which smtplib is.
* :meth:`Sendmail.start_daemon`: ``sendmail -bD``, a foreground daemon on a
  TCP port (127.0.0.1, and ::1 with ``ipv6=True``).

Sendmail looks up its own host name at startup whatever its configuration
says, so it must run only inside the private network namespace of
``scripts/lib.sh run_in_netns``, whose /etc/hosts gives the machine's name a
qualified alias (without one, sendmail sleeps 60 s before reading its config:
"My unqualified host name (vm) unknown; sleeping for retry").
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .mail import StoredMessage
from .milter import free_ports
from .postfix import listening
from .smtp import SmtpClient
from .waiting import tail, wait_for

DEFAULT_MACROS = {
    "connect": "j, _, {daemon_name}, {if_name}, {if_addr}, {client_addr}",
    "helo": "{tls_version}, {cipher}",
    "envfrom": "i, {auth_type}, {auth_authen}, {mail_addr}",
    "envrcpt": "{rcpt_addr}, {rcpt_mailer}",
    "eom": "{msg_id}",
}


class SendmailError(RuntimeError):
    """Sendmail could not be set up or run; the message says why."""


def sendmail_root() -> Path:
    root = os.environ.get("BMS_SENDMAIL_ROOT")
    if not root:
        raise SendmailError("BMS_SENDMAIL_ROOT is not set: run ./test.sh (it unpacks sendmail)")
    path = Path(root)
    if not (path / "usr/libexec/sendmail/sendmail").is_file():
        raise SendmailError(f"no sendmail binary under BMS_SENDMAIL_ROOT={root}")
    return path


def _require_netns() -> None:
    if os.environ.get("BMS_NETNS") != "1":
        raise SendmailError("sendmail resolves its own name at startup: run it only inside "
                            "the private network namespace (./test.sh)")


@dataclass
class QueueFile:
    """A parsed ``qf`` file plus its ``df`` body."""

    queue_id: str
    sender: str
    recipients: list[str]
    recipient_flags: dict[str, str]
    headers: list[tuple[str, str]]
    body: bytes
    lines: list[str] = field(repr=False)  # the raw qf records, continuation lines joined

    @classmethod
    def read(cls, qf: Path) -> QueueFile:
        queue_id = qf.name[2:]
        records: list[str] = []
        data = _unquote_internal(qf.read_bytes())
        for raw in data.decode("utf-8", "surrogateescape").split("\n"):
            if raw[:1] in (" ", "\t") and records:
                records[-1] += "\n" + raw
            elif raw:
                records.append(raw)
        sender = ""
        recipients: list[str] = []
        flags: dict[str, str] = {}
        headers: list[tuple[str, str]] = []
        for rec in records:
            kind, rest = rec[0], rec[1:]
            if kind == "S":
                sender = _strip_brackets(rest)
            elif kind == "R":
                # R<flags>:<address> (qf version 4 and later)
                rflags, _, addr = rest.partition(":")
                address = _strip_brackets(addr)
                recipients.append(address)
                flags[address] = rflags
            elif kind == "H":
                if rest.startswith("?"):  # H?flags?Name: value
                    rest = rest[rest.index("?", 1) + 1:]
                name, _, value = rest.partition(":")
                headers.append((name, value.lstrip(" \t")))
        df = qf.with_name("df" + queue_id)
        body = df.read_bytes() if df.exists() else b""
        return cls(queue_id, sender, recipients, flags, headers, body, records)

    def stored(self) -> StoredMessage:
        return StoredMessage(self.sender, list(self.recipients), list(self.headers), self.body,
                             [f"qf{self.queue_id}", f"df{self.queue_id}"],
                             dict(self.recipient_flags))


def _unquote_internal(data: bytes) -> bytes:
    """Undo sendmail's quote_internal_chars(): in a qf file, a byte that sendmail
    uses internally (0x80-0x9f, and 0xff itself) is written after a 0xff."""
    if b"\xff" not in data:
        return data
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == 0xFF and i + 1 < len(data):
            i += 1
        out.append(data[i])
        i += 1
    return bytes(out)


def _strip_brackets(addr: str) -> str:
    addr = addr.strip()
    if addr.startswith("<") and addr.endswith(">"):
        return addr[1:-1]
    return addr


class _PipeReader:
    """``readline`` on a pipe with a timeout (what smtplib reads replies with)."""

    def __init__(self, fd: int, timeout: float) -> None:
        self.fd = fd
        self.timeout = timeout
        self.buffer = b""

    def readline(self, limit: int = -1) -> bytes:
        while b"\n" not in self.buffer and (limit < 0 or len(self.buffer) < limit):
            ready, _, _ = select.select([self.fd], [], [], self.timeout)
            if not ready:
                raise TimeoutError(f"no reply from sendmail -bs in {self.timeout}s")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break
            self.buffer += chunk
        end = self.buffer.find(b"\n") + 1 or len(self.buffer)
        if limit >= 0:
            end = min(end, limit)
        line, self.buffer = self.buffer[:end], self.buffer[end:]
        return line

    def close(self) -> None:
        pass


class _PipeSocket:
    """Just enough of a socket for smtplib, over a child's stdin and stdout."""

    def __init__(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self._stdin = proc.stdin
        self._stdout = proc.stdout
        self._reader = _PipeReader(proc.stdout.fileno(), timeout)

    def sendall(self, data: bytes) -> None:
        self._stdin.write(data)
        self._stdin.flush()

    def makefile(self, mode: str = "rb") -> _PipeReader:
        return self._reader

    def close(self) -> None:
        for f in (self._stdin, self._stdout):
            try:
                f.close()
            except OSError:
                pass


class BsClient(SmtpClient):
    """An SMTP client on a ``sendmail -bs`` child; closing it reaps the child."""

    process: subprocess.Popen[bytes] | None = None

    def close(self) -> None:
        super().close()
        proc = self.process
        if proc is None:
            return
        self.process = None
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Sendmail:
    """One sendmail configuration in a temporary directory, its queue, and its
    ``-bs`` sessions or ``-bD`` daemon.  Use as a context manager or call
    :meth:`cleanup`."""

    def __init__(
        self,
        directory: str | None = None,
        *,
        milter: str = "",
        milter_name: str = "testmilter",
        milter_flags: str = "T",
        milter_timeouts: str = "C:10s;S:20s;R:30s;E:60s",
        macros: Mapping[str, str] | None = None,
        port: int | None = None,
        ipv6: bool = False,
        hostname: str = "mx.example.test",
        options: Mapping[str, str] | None = None,
        root: str | Path | None = None,
    ) -> None:
        self.root = Path(root) if root is not None else sendmail_root()
        self.binary = self.root / "usr/libexec/sendmail/sendmail"
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="bms-sendmail-")).resolve()
        self.queue = self.dir / "mqueue"
        self.cf = self.dir / "sendmail.cf"
        self.traffic_log = self.dir / "traffic.log"
        self.daemon_log = self.dir / "daemon.log"
        self.milter = milter
        self.milter_name = milter_name
        self.milter_flags = milter_flags
        self.milter_timeouts = milter_timeouts
        self.macros = dict(DEFAULT_MACROS)
        self.macros.update(macros or {})
        self.hostname = hostname
        self.ipv6 = ipv6
        self.options = dict(options or {})
        hosts = ("127.0.0.1", "::1") if ipv6 else ("127.0.0.1",)
        self.port = port if port is not None else free_ports(1, hosts)[0]
        self.daemon: subprocess.Popen[bytes] | None = None
        self._written = False

    # ------------------------------------------------------------ configuration

    def config_text(self) -> str:
        d = self.dir
        lines = [
            "V10/Berkeley",
            f"Dj{self.hostname}",
            f"Cwlocalhost {self.hostname}",
            f"O QueueDirectory={self.queue}",
            "O DeliveryMode=queue",
            f"O PidFile={d}/sendmail.pid",
            f"O StatusFile={d}/statistics",
            f"O HelpFile={self.root}/etc/mail/helpfile",
            f"O ServiceSwitchFile={d}/service.switch",
            "O DontProbeInterfaces=true",
            # Unix milter sockets may live under the sticky /tmp.
            "O DontBlameSendmail=TrustStickyBit",
            f"O DaemonPortOptions=Port={self.port}, Addr=127.0.0.1, Name=MTA",
        ]
        if self.ipv6:
            lines.append(f"O DaemonPortOptions=Port={self.port}, Addr=::1, Family=inet6, "
                         "Name=MTA6")
        if self.milter:
            lines.append(f"O InputMailFilters={self.milter_name}")
            for stage, names in self.macros.items():
                lines.append(f"O Milter.macros.{stage}={names}")
        lines += [f"O {name}={value}" for name, value in self.options.items()]
        if self.milter:
            flags = f", F={self.milter_flags}" if self.milter_flags else ""
            lines.append(f"X{self.milter_name}, S={self.milter}{flags}, "
                         f"T={self.milter_timeouts}")
        lines += [
            # The MTA's own trace header, so that header positions are realistic.
            "HReceived: from $?s$s$|unknown$. ($_) by $j id $i",
            "Mlocal, P=/bin/false, F=lsDFMAw5:/|@qSPfhn9, A=false $u",
            "Mprog,  P=/bin/false, F=lsDFMoqeu9, A=false",
            "Msmtp,  P=[IPC], F=mDFMuX, A=TCP $h",
            "S0",
            "R$+\t$#smtp $@ localhost $: $1",
            "S1", "S2", "S3", "S4", "S5",
        ]
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        self.queue.mkdir(parents=True, exist_ok=True)
        os.chmod(self.queue, 0o700)
        (self.dir / "service.switch").write_text("hosts files\naliases files\n")
        self.cf.write_text(self.config_text())
        self._written = True

    def _command(self, *args: str) -> list[str]:
        if not self._written:
            self.write_config()
        return [str(self.binary), "-C", str(self.cf), *args]

    # --------------------------------------------------------------- -bs mode

    def bs_session(self, timeout: float = 30.0, transport: str = "pipe",
                   traffic_log: bool = False) -> BsClient:
        """``sendmail -bs``; the client is greeted, not yet EHLO'd.  Closing it
        (``quit()``/``close()``) waits for the child to exit.

        ``transport="pipe"``: stdin and stdout are pipes, as when a mail program
        runs ``sendmail -bs``; sendmail tells the milter the client is of unknown
        family.  ``"socketpair"``: both are one unix socket, as under inetd;
        sendmail reports a unix-domain client (``[UNIX: localhost]``)."""
        _require_netns()
        args = self._command("-bs", *(["-X", str(self.traffic_log)] if traffic_log else []))
        client = BsClient(timeout=timeout)
        if transport == "pipe":
            proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, cwd=self.dir, bufsize=0)
            client.sock = _PipeSocket(proc, timeout)  # type: ignore[assignment]
        elif transport == "socketpair":
            ours, theirs = socket.socketpair()
            try:
                proc = subprocess.Popen(args, stdin=theirs.fileno(), stdout=theirs.fileno(),
                                        stderr=subprocess.DEVNULL, cwd=self.dir)
            finally:
                theirs.close()
            ours.settimeout(timeout)
            client.sock = ours
        else:
            raise ValueError(f"transport must be 'pipe' or 'socketpair', not {transport!r}")
        client.process = proc
        try:
            code, msg = client.getreply()
        except Exception:
            client.close()
            raise
        if code != 220:
            client.close()
            raise SendmailError(f"sendmail -bs greeted with {code} {msg!r}")
        return client

    # --------------------------------------------------------------- -bD mode

    def start_daemon(self, timeout: float = 30.0) -> Sendmail:
        """``sendmail -bD`` in the foreground, on :attr:`port`."""
        _require_netns()
        if self.daemon is not None:
            return self
        with open(self.daemon_log, "ab") as log:
            self.daemon = subprocess.Popen(
                self._command("-bD", "-X", str(self.traffic_log)), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        hosts = ["127.0.0.1"] + (["::1"] if self.ipv6 else [])

        def up() -> bool:
            assert self.daemon is not None
            if self.daemon.poll() is not None:
                raise SendmailError(f"sendmail -bD exited with {self.daemon.returncode}\n"
                                    f"{tail(str(self.daemon_log))}")
            return all(listening(h, self.port) for h in hosts)

        try:
            wait_for(up, timeout, f"sendmail -bD on port {self.port}",
                     detail=lambda: tail(str(self.daemon_log)))
        except BaseException:
            self.stop_daemon()
            raise
        return self

    def stop_daemon(self, timeout: float = 30.0) -> None:
        proc, self.daemon = self.daemon, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def smtp(self, host: str = "127.0.0.1", timeout: float = 30.0) -> SmtpClient:
        """A TCP connection to the ``-bD`` daemon; greeted, not yet EHLO'd."""
        if self.daemon is None:
            raise SendmailError("start_daemon() first")
        return SmtpClient(host, self.port, timeout=timeout)

    # ------------------------------------------------------------------ queue

    def queue_files(self) -> list[QueueFile]:
        if not self.queue.is_dir():
            return []
        return [QueueFile.read(p) for p in sorted(self.queue.glob("qf*"))]

    def queued(self, queue_id: str) -> StoredMessage:
        """The queued message with this queue ID (from the DATA reply)."""
        qf = self.queue / f"qf{queue_id}"
        if not qf.exists():
            raise AssertionError(f"no queue file {qf}; queue holds "
                                 f"{sorted(p.name for p in self.queue.iterdir())}")
        return QueueFile.read(qf).stored()

    def message(self, message_id: str) -> StoredMessage:
        """The queued message with this Message-ID header."""
        found = [q for q in self.queue_files() if q.stored().message_id == message_id]
        if len(found) != 1:
            raise AssertionError(f"{len(found)} queued messages with Message-ID {message_id}")
        return found[0].stored()

    def clear_queue(self) -> None:
        if self.queue.is_dir():
            for p in self.queue.iterdir():
                p.unlink()

    # ---------------------------------------------------------------- cleanup

    def cleanup(self) -> None:
        try:
            self.stop_daemon()
        finally:
            if self._own_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Sendmail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
