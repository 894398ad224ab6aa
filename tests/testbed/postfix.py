"""A private Postfix instance in a temporary directory (TESTBED.md).

Every recipient in ``example.test`` is delivered by ``virtual(8)`` into one
Maildir, ``DIR/mail/inbox/``; with ``transport="discard"`` (benchmarks) mail
is accepted and thrown away.  With ``relayhost`` (``"[127.0.0.1]:PORT"`` of an
SMTP sink, say) mail for every other domain goes out over smtp(8) to it.
The instance listens on 127.0.0.1 (and, with ``ipv6=True``, on ::1) on a
free port unless one is given; more listeners,
each with its own ``-o`` overrides (another ``smtpd_milters`` for instance),
may be added before :meth:`Postfix.start`.

``postfix`` prints nothing when it has no terminal, even on fatal errors, so
failures are reported from its exit code and its log file.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .mail import StoredMessage, split_headers
from .milter import free_ports
from .smtp import SmtpClient
from .waiting import tail, wait_for

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")

MASTER_CF_SERVICES = """\
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
retry     unix  -       -       n       -       -       error
virtual   unix  -       n       n       -       -       virtual
discard   unix  -       -       n       -       -       discard
postlog   unix-dgram n  -       n       -       1       postlogd
anvil     unix  -       -       n       -       1       anvil
"""
SMTP_CLIENT_SERVICE = "smtp      unix  -       -       n       -       -       smtp\n"


class PostfixError(RuntimeError):
    """Postfix could not be configured, started or stopped; the message has its log."""


@dataclass
class Listener:
    """One ``smtpd`` listener in master.cf; ``options`` become ``-o name=value``."""

    host: str
    port: int
    options: dict[str, str] = field(default_factory=dict)

    @property
    def master_cf_line(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        line = f"{host}:{self.port} inet n - n - - smtpd"
        for name, value in self.options.items():
            if any(c.isspace() for c in value):
                raise ValueError(f"master.cf -o value may not contain whitespace: {value!r}")
            line += f"\n  -o {name}={value}"
        return line


class Postfix:
    """A Postfix instance of its own: configure, start, send, read, stop.

    Use as a context manager, or call :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        directory: str | None = None,
        *,
        milters: str = "",
        milter_protocol: int | str = 6,
        milter_default_action: str = "tempfail",
        milter_macros: Mapping[str, str] | None = None,
        port: int | None = None,
        ipv6: bool = False,
        transport: str = "virtual",
        hostname: str = "mx.example.test",
        domain: str = "example.test",
        main_cf: Mapping[str, str] | None = None,
        relayhost: str | None = None,
    ) -> None:
        if transport not in ("virtual", "discard"):
            raise ValueError("transport must be 'virtual' or 'discard'")
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="bms-postfix-")).resolve()
        self.etc = self.dir / "etc"
        self.spool = self.dir / "spool"
        self.data = self.dir / "data"
        self.mail_base = self.dir / "mail"
        self.maildir = self.mail_base / "inbox"
        self.maillog = self.dir / "maillog"
        self.hostname = hostname
        self.domain = domain
        self.ipv6 = ipv6
        self.transport = transport
        self.settings: dict[str, str] = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.spool),
            "data_directory": str(self.data),
            "mail_owner": "postfix",
            "myhostname": hostname,
            "mydestination": "",
            "inet_interfaces": "127.0.0.1, [::1]" if ipv6 else "127.0.0.1",
            "inet_protocols": "all" if ipv6 else "ipv4",
            "mynetworks": "127.0.0.0/8, [::1]/128" if ipv6 else "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "smtp_dns_support_level": "disabled",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": f"/var, /dev/stdout, {self.dir}",
            "virtual_mailbox_domains": domain,
            "virtual_mailbox_base": str(self.mail_base),
            "virtual_mailbox_maps": "static:inbox/",
            "virtual_uid_maps": "static:65534",
            "virtual_gid_maps": "static:65534",
            "virtual_transport": transport,
            "smtpd_milters": milters,
            "non_smtpd_milters": "",
            "milter_default_action": milter_default_action,
            "milter_protocol": str(milter_protocol),
            # Tests want errors now, not after minutes of retries.
            "milter_connect_timeout": "10s",
            "milter_command_timeout": "20s",
            "milter_content_timeout": "60s",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
        }
        for stage, names in (milter_macros or {}).items():
            self.settings[f"milter_{stage}_macros"] = names
        # Mail for other domains goes over SMTP to ``relayhost`` (e.g.
        # "[127.0.0.1]:2525", an SMTP sink); without it this instance has no
        # smtp(8) transport at all.
        self.relayhost = relayhost
        if relayhost is not None:
            self.settings["relayhost"] = relayhost
        self.settings.update(main_cf or {})
        hosts = ("127.0.0.1", "::1") if ipv6 else ("127.0.0.1",)
        self.port = port if port is not None else free_ports(1, hosts)[0]
        self.listeners: list[Listener] = [Listener("127.0.0.1", self.port)]
        if ipv6:
            self.listeners.append(Listener("::1", self.port))
        self.running = False

    # ------------------------------------------------------------- configuration

    def add_listener(self, host: str = "127.0.0.1", port: int | None = None,
                     **options: str) -> Listener:
        """Another smtpd listener, e.g. ``add_listener(smtpd_milters="unix:/x")``."""
        if self.running:
            raise PostfixError("add listeners before start()")
        listener = Listener(host, port if port is not None else free_ports(1, (host,))[0],
                            dict(options))
        self.listeners.append(listener)
        return listener

    def write_config(self) -> None:
        self.etc.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)  # mkdtemp's 0700 would lock out the postfix user
        for d in (self.spool, self.data, self.maildir):
            d.mkdir(parents=True, exist_ok=True)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.data, postfix_user.pw_uid, postfix_user.pw_gid)
        for d in (self.mail_base, self.maildir):
            os.chown(d, 65534, 65534)
        main = "".join(f"{name} = {value}\n" for name, value in self.settings.items())
        (self.etc / "main.cf").write_text(main)
        master = "\n".join(lst.master_cf_line for lst in self.listeners)
        services = MASTER_CF_SERVICES
        if self.relayhost is not None:
            services += SMTP_CLIENT_SERVICE
        (self.etc / "master.cf").write_text(master + "\n" + services)

    # ------------------------------------------------------------------ control

    def _postfix(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([POSTFIX, "-c", str(self.etc), *args], capture_output=True,
                              text=True, timeout=timeout, check=False)

    def _fail(self, what: str, proc: subprocess.CompletedProcess[str] | None = None) -> None:
        out = ""
        if proc is not None:
            out = f" (exit {proc.returncode}) {proc.stdout}{proc.stderr}".rstrip()
        raise PostfixError(f"postfix {what} failed{out}\n{tail(str(self.maillog))}")

    def start(self, timeout: float = 30.0) -> Postfix:
        if self.running:
            return self
        self.write_config()
        check = self._postfix("check")
        if check.returncode != 0:
            self._fail("check", check)
        proc = self._postfix("start", timeout=timeout)
        self.running = True  # even if it failed: a master may be up, stop() finds it
        try:
            if proc.returncode != 0:
                self._fail("start", proc)
            for lst in self.listeners:
                # Not a test connection: that would start an SMTP session (and
                # a milter session) of its own.
                wait_for(lambda lst=lst: listening(lst.host, lst.port),  # type: ignore[misc]
                         timeout, f"postfix smtpd on [{lst.host}]:{lst.port}",
                         detail=lambda: tail(str(self.maillog)))
        except BaseException:
            try:
                self.stop()
            except Exception:  # the first error is the one to report
                pass
            raise
        return self

    def master_pid(self) -> int | None:
        try:
            return int((self.spool / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the instance and wait until its master process is gone."""
        if not self.running:
            return
        pid = self.master_pid()
        proc = self._postfix("stop", timeout=timeout)
        self.running = False
        if pid is not None:
            try:
                wait_for(lambda: not _alive(pid), timeout, f"postfix master {pid} to exit",
                         interval=0.05)
            except AssertionError:
                os.kill(pid, signal.SIGKILL)
                raise
        if proc.returncode != 0:
            self._fail("stop", proc)

    def cleanup(self) -> None:
        """Stop, then remove the directory if this object created it."""
        try:
            self.stop()
        finally:
            if self._own_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Postfix:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # ------------------------------------------------------------------ sending

    def smtp(self, host: str = "127.0.0.1", port: int | None = None,
             timeout: float = 30.0) -> SmtpClient:
        """An SMTP connection to a listener (default: the main one on 127.0.0.1);
        already greeted, not yet EHLO'd."""
        return SmtpClient(host, port if port is not None else self.port, timeout=timeout)

    # ---------------------------------------------------------------- the queue

    def queued(self) -> list[str]:
        """Queue files still in Postfix's queues (relative paths)."""
        found = []
        for q in QUEUES:
            base = self.spool / q
            if base.is_dir():
                found += [str(p.relative_to(self.spool)) for p in base.rglob("*") if p.is_file()]
        return found

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every accepted message has left the queue (delivered or
        bounced).  A deferred message is an error: this instance delivers locally."""
        def idle() -> bool:
            left = self.queued()
            deferred = [q for q in left if q.startswith(("deferred/", "corrupt/", "hold/"))]
            if deferred:
                raise PostfixError(f"message(s) not delivered: {deferred}\n"
                                   f"{tail(str(self.maillog))}")
            return not left

        wait_for(idle, timeout, "postfix queue to drain", interval=0.02,
                 detail=lambda: f"queued: {self.queued()}\n{tail(str(self.maillog))}")

    # ------------------------------------------------------------- the mailbox

    def maildir_files(self) -> list[Path]:
        new = self.maildir / "new"
        if not new.is_dir():
            return []
        return sorted(new.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))

    def delivered(self) -> list[StoredMessage]:
        """Every delivered file, one StoredMessage per file (virtual(8) writes one
        file per recipient): ``sender`` from Return-Path, the single recipient from
        Delivered-To; those two fields are removed from ``headers``."""
        out = []
        for path in self.maildir_files():
            out.append(parse_maildir_file(path))
        return out

    def wait_for_messages(self, count: int,
                          match: Callable[[StoredMessage], bool] | None = None,
                          timeout: float = 30.0) -> list[StoredMessage]:
        """Wait until ``count`` delivered files (that satisfy ``match``) are there."""
        def ready() -> list[StoredMessage] | None:
            found = [m for m in self.delivered() if match is None or match(m)]
            return found if len(found) >= count else None

        return wait_for(ready, timeout, f"{count} delivered message(s)",
                        detail=lambda: tail(str(self.maillog)))

    def message(self, message_id: str, timeout: float = 30.0) -> StoredMessage:
        """The message with this Message-ID, with all its delivered recipients.

        Waits until the queue is empty, so every recipient that will be
        delivered has been; fails unless at least one file has this ID."""
        self.wait_idle(timeout)
        files = [m for m in self.delivered() if m.message_id == message_id]
        if not files:
            raise AssertionError(f"no delivered message with Message-ID {message_id}\n"
                                 f"{tail(str(self.maillog))}")
        return merge_recipients(files)

    def clear_mailbox(self) -> None:
        for path in self.maildir_files():
            path.unlink()

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""


def parse_maildir_file(path: Path) -> StoredMessage:
    headers, body = split_headers(path.read_bytes())
    sender = ""
    recipients = []
    # virtual(8) prepends Return-Path, X-Original-To and Delivered-To: the
    # envelope, not part of the message as the milter saw it.
    start = 0
    while start < len(headers) and start < 3:
        name, value = headers[start]
        lower = name.lower()
        if lower == "return-path":
            sender = value.strip().removeprefix("<").removesuffix(">")
        elif lower == "delivered-to":
            recipients.append(value.strip())
        elif lower != "x-original-to":
            break
        start += 1
    return StoredMessage(sender, recipients, headers[start:], body, [str(path)])


def merge_recipients(files: list[StoredMessage]) -> StoredMessage:
    """One StoredMessage from the per-recipient files of one message."""
    first = files[0]
    recipients = []
    for f in files:
        if f.sender != first.sender or f.body != first.body:
            raise AssertionError(f"copies of {first.message_id} differ: {f.sources} vs "
                                 f"{first.sources}")
        recipients += f.recipients
    return StoredMessage(first.sender, sorted(recipients), first.headers, first.body,
                         [s for f in files for s in f.sources])


def listening(host: str, port: int) -> bool:
    """Whether a TCP socket listens on host:port (read from /proc, no connection)."""
    want = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    table = "/proc/net/tcp6" if ":" in host else "/proc/net/tcp"
    try:
        with open(table) as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        return False
    for row in rows:
        fields = row.split()
        local, state = fields[1], fields[3]
        addr_hex, _, port_hex = local.partition(":")
        if state != "0A" or int(port_hex, 16) != port:
            continue
        raw = bytes.fromhex(addr_hex)
        # /proc prints the address as 32-bit words in host byte order.
        addr = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
        if addr in (want, bytes(len(want))):
            return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False
