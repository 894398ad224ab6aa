"""The test bed's own parts that need no MTA (these run outside ./test.sh too),
and the framework behaviour the test bed relies on."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from milters.feature_milter import FeatureMilter, parse_macros
from testbed import running_milter, split_headers
from testbed.postfix import listening, merge_recipients, parse_maildir_file
from testbed.sendmail import QueueFile
from testbed.smtp import Reply, Transaction

import Milter
from Milter import lowlevel

QF = b"""V8
T1795547460
K0
N0
P210198
M<reject-multi@example.test>... custom first line
 550-5.7.1 custom second line
Fbs
$_localhost [127.0.0.1]
S<changed-sender@example.test>
rrfc822; <a@example.test>
RPFD:<a@example.test>
rrfc822; <added-par@example.test>
RPN:<added-par@example.test>
H??Received: from localhost (localhost [127.0.0.1])
\tby mx.example.test id 6AOJB0ZD009287
H?x?X-Flagged: yes
H??Subject: hello
H??X-Utf8: Gr\xc3\xbc\xc3\xff\x9fe
.
"""  # sendmail writes 0xff before a byte in 0x80-0x9f: "ß" (c3 9f) is c3 ff 9f


def test_milter_server_listens_on_port_zero() -> None:
    """``inet:0@HOST`` binds a free port, as libmilter (bind to port 0) does;
    ``server.address`` tells which."""
    callbacks: dict[str, lowlevel.Callback | None] = dict(Milter.glue_callbacks())
    reg = lowlevel.Registration(name="t", callbacks=callbacks, registered=True,
                                conn="inet:0@127.0.0.1")
    server = lowlevel.make_server(reg)
    server.open()
    try:
        assert isinstance(server.address, tuple)
        assert server.address[0] == "127.0.0.1" and server.address[1] > 0
    finally:
        assert server.listener is not None
        server.listener.close()


def test_running_milter_specs_and_cleanup() -> None:
    saved = Milter.factory
    with running_milter(FeatureMilter, "unix") as m:
        assert Milter.factory is saved  # the factory is bound per server
        mode = stat.S_IMODE(os.stat(m.path).st_mode)
        assert mode == 0o666  # Postfix's smtpd runs as "postfix"
        assert m.postfix_spec == m.sendmail_spec == f"unix:{m.path}"
        directory = os.path.dirname(m.path)
    assert not os.path.exists(directory)
    assert Milter.factory is saved
    with running_milter(FeatureMilter) as m:
        assert m.port > 0
        assert m.postfix_spec == f"inet:127.0.0.1:{m.port}"
        assert m.sendmail_spec == f"inet:{m.port}@127.0.0.1"
        assert listening("127.0.0.1", m.port)
    assert not listening("127.0.0.1", m.port)


def test_unix_socket_removed_on_stop(tmp_path: Path) -> None:
    """The server removes its own unix socket when it stops (libmilter does)."""
    path = tmp_path / "m.sock"
    with running_milter(FeatureMilter, f"unix:{path}"):
        assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert not path.exists()


def test_queue_file_parsing(tmp_path: Path) -> None:
    (tmp_path / "qfABC123").write_bytes(QF)
    (tmp_path / "dfABC123").write_bytes(b"body\n")
    q = QueueFile.read(tmp_path / "qfABC123")
    assert q.queue_id == "ABC123"
    assert q.sender == "changed-sender@example.test"
    assert q.recipients == ["a@example.test", "added-par@example.test"]
    assert q.recipient_flags == {"a@example.test": "PFD", "added-par@example.test": "PN"}
    assert q.headers == [
        ("Received", "from localhost (localhost [127.0.0.1])\n\tby mx.example.test id "
                     "6AOJB0ZD009287"),
        ("X-Flagged", "yes"),
        ("Subject", "hello"),
        ("X-Utf8", "Grüße"),
    ]
    assert q.body == b"body\n"
    assert q.stored().get("subject") == "hello"


def test_maildir_file_parsing(tmp_path: Path) -> None:
    files = []
    for rcpt in ("b@example.test", "a@example.test"):
        p = tmp_path / rcpt
        p.write_bytes(b"Return-Path: <s@example.test>\nX-Original-To: " + rcpt.encode()
                      + b"\nDelivered-To: " + rcpt.encode()
                      + b"\nReceived: from x\n\tby y\nMessage-ID: <m@x>\n\nbody\n")
        files.append(parse_maildir_file(p))
    m = merge_recipients(files)
    assert m.sender == "s@example.test"
    assert m.recipients == ["a@example.test", "b@example.test"]
    assert m.header_names() == ["Received", "Message-ID"]
    assert m.get("received") == "from x\n\tby y"
    assert m.text == "body\n"


def test_split_headers_crlf() -> None:
    headers, body = split_headers(b"A: 1\r\nB:  two\r\n three\r\n\r\nx\r\n")
    assert headers == [("A", "1"), ("B", "two\n three")]
    assert body == b"x\n"


def test_queue_id_from_replies() -> None:
    t = Transaction(Reply(250, "2.1.0 Ok"), data=Reply(250, "2.0.0 Ok: queued as 4AbC12"))
    assert t.queue_id == "4AbC12"
    t.data = Reply(250, "2.0.0 6AOJB0ZD009287 Message accepted for delivery")
    assert t.queue_id == "6AOJB0ZD009287"


def test_parse_macros() -> None:
    value = "i=Q1; j=mx.example.test; {mail_addr}=a@b |\n connect: _=localhost [::1]; j=mx"
    assert parse_macros(value) == ({"i": "Q1", "j": "mx.example.test", "{mail_addr}": "a@b"},
                                   {"_": "localhost [::1]", "j": "mx"})


def test_listening_ipv6() -> None:
    with socket.socket(socket.AF_INET6) as s:
        try:
            s.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 on this machine")
        s.listen()
        assert listening("::1", s.getsockname()[1])
