"""A scripted MTA: speaks the MTA side of the milter protocol over a real socket.

Built on the protocol package's own encoders and reply decoder, so the tests
read like the MTA's half of a session (PROTOCOL.md §6.1).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from Milter.protocol import commands as cmd
from Milter.protocol import constants as C
from Milter.protocol import replies as R
from Milter.protocol.framing import FrameDecoder

FINAL = frozenset(
    (C.SMFIR_CONTINUE, C.SMFIR_ACCEPT, C.SMFIR_REJECT, C.SMFIR_TEMPFAIL, C.SMFIR_DISCARD,
     C.SMFIR_REPLYCODE, C.SMFIR_SKIP)
)


class MtaClient:
    def __init__(self, address: str | tuple[str, int], family: int = socket.AF_INET,
                 timeout: float = 10.0) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(address)
        except BaseException:
            self.sock.close()
            raise
        self._decoder = FrameDecoder(max_data_size=1 << 24)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MtaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, *commands: cmd.Command) -> None:
        self.sock.sendall(b"".join(c.encode() for c in commands))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> R.Reply:
        """The next packet the milter sends; raises EOFError when it closed."""
        while True:
            frame = self._decoder.next_frame()
            if frame is not None:
                return R.parse_reply(*frame)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("milter closed the connection")
            self._decoder.feed(data)

    def final(self) -> tuple[list[R.Reply], R.Reply]:
        """Packets up to and including the final reply: (edits and progress, final)."""
        before: list[R.Reply] = []
        while True:
            r = self.reply()
            if r.code in FINAL:
                return before, r
            before.append(r)

    def closed_by_milter(self) -> bool:
        """True when the milter closed the connection (EOF with nothing pending)."""
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return False
        return data == b""

    # --- conversations ------------------------------------------------------------

    def negotiate(self, version: int = 6, actions: int = C.SMFI_CURR_ACTS,
                  protocol: int = C.SMFI_CURR_PROT) -> R.OptNegReply:
        self.send(cmd.OptNeg(version, actions, protocol))
        reply = self.reply()
        assert isinstance(reply, R.OptNegReply), reply
        return reply

    def command(self, command: cmd.Command, macros: Iterable[tuple[bytes, bytes]] = ()
                ) -> R.Reply:
        """Send optional macros then a command that expects one reply; return it."""
        pairs = tuple(macros)
        if pairs:
            self.send(cmd.Macro(_code_of(command), pairs))
        self.send(command)
        return self.reply()

    def connect(self, hostname: bytes = b"client.example.net", ip: str = "192.0.2.1",
                port: int = 4000) -> R.Reply:
        family = C.SMFIA_INET6 if ":" in ip else C.SMFIA_INET
        return self.command(cmd.Connect(hostname, family, port, ip),
                            [(b"j", b"mx.example.test"), (b"{daemon_name}", b"smtpd")])

    def message(self, sender: bytes = b"<alice@example.net>",
                rcpts: Iterable[bytes] = (b"<bob@example.org>",),
                headers: Iterable[tuple[bytes, bytes]] = ((b"Subject", b"hello"),),
                body: bytes = b"Hi Bob.\r\n") -> tuple[list[R.Reply], R.Reply]:
        """A whole transaction, asserting CONTINUE up to EOM; returns EOM's packets."""
        commands: list[cmd.Command] = [
            cmd.Mail((sender,)), *(cmd.Rcpt((r,)) for r in rcpts), cmd.Data(),
            *(cmd.Header(n, v) for n, v in headers), cmd.EndOfHeaders(), cmd.Body(body)]
        for command in commands:
            reply = self.command(command)
            assert reply == R.CONTINUE, (command, reply)
        self.send(cmd.EndOfMessage())
        return self.final()


def _code_of(command: cmd.Command) -> int:
    return command.encode()[4]


def internal_and_zombie_sessions(port: int) -> None:
    """Two connections to a bms daemon on ``port`` configured with internal_connect
    192.0.2.0/24 and internal_domains example.net: one accepted internal message
    (queue id QUEUE1, two recipients), then a zombie PC refused at MAIL FROM."""
    with MtaClient(("127.0.0.1", port)) as m:
        m.negotiate()
        assert m.connect(b"pc1.example.net", "192.0.2.7") == R.CONTINUE
        assert m.command(cmd.Helo(b"pc1.example.net")) == R.CONTINUE
        assert m.command(cmd.Mail((b"<alice@example.net>",)), [(b"i", b"QUEUE1")]) \
            == R.CONTINUE
        for rcpt in (b"<bob@example.org>", b"<carol@example.org>"):
            assert m.command(cmd.Rcpt((rcpt,))) == R.CONTINUE
        assert m.command(cmd.Data()) == R.CONTINUE
        m.send(cmd.Header(b"Subject", b"hello"))
        assert m.command(cmd.EndOfHeaders()) == R.CONTINUE
        m.send(cmd.Body(b"Hi Bob.\r\n"))
        m.send(cmd.EndOfMessage())
        assert m.final()[1] == R.CONTINUE
    with MtaClient(("127.0.0.1", port)) as m:
        m.negotiate()
        assert m.connect(b"pc2.example.net", "192.0.2.8") == R.CONTINUE
        assert m.command(cmd.Helo(b"pc2.example.net")) == R.CONTINUE
        assert isinstance(m.command(cmd.Mail((b"<pc@zombie.example>",))), R.ReplyCode)
