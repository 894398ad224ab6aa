"""Mutated milter sessions over a real socket against the real ``bms`` daemon
(issue 13), with workers = 1 and 2.

The daemon runs its default policy (SPF against the test NSD) plus what the
base sessions need to reach every edit: internal networks and domains for the
zombie and SMTP AUTH rules, an SRS secret for the envelope rewrite.  The base
sessions carry hostile text (CR/LF in a domain and in ``j``, ESC in a sender,
a long HELO, an MTA that grants fewer actions, an attachment to defang); the
mutations are those of :mod:`mutations`.

Asserted: no traceback (and no untrapped exception, internal error or refused
edit) in milter.log; every session ends with a protocol-defined outcome (all
the daemon sends parses as reply packets, and it closes the connection after
our EOF); a valid session every 1,000 gets its normal replies; the daemon's
open fds and RSS stay bounded.

``BMS_FUZZ_SESSIONS`` sets the number of sessions per run (default 3,000 in
CI; the full run of the issue is ``BMS_FUZZ_SESSIONS=100000``), the seed is
fixed (``BMS_FUZZ_SEED`` to change it).  The figures are printed (``-s``).
"""

from __future__ import annotations

import errno
import os
import random
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from mtaclient import MtaClient
from mutations import Mutator, pieces_of
from testbed.bmsd import BmsDaemon
from testbed.nsd import CLIENT_IP, CLIENT_PTR, Nsd

from Milter.protocol import commands as cmd
from Milter.protocol import constants as C
from Milter.protocol import replies as R
from Milter.protocol.framing import FrameDecoder

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SESSIONS = int(os.environ.get("BMS_FUZZ_SESSIONS", "20000"))
SEED = int(os.environ.get("BMS_FUZZ_SEED", "20261207"))
PROBE_EVERY = 1000
CLIENTS = 4  # sessions in flight at once
WARMUP = 0.5  # of the sessions, before the resource baseline is taken
MAX_FD_GROWTH = 16  # per process, in the second half of the run
# Per process, in the second half: SQLite's page cache (2 MB per connection)
# and the allocator settle in the first half.
MAX_RSS_GROWTH_KB = 8 * 1024

ACCESS = "SMTP-Auth:alice@outside.test OK\n"
INTERNAL_IP = "192.0.2.7"
SRS_SECRET = "fuzz-srs-secret"
EICAR_LIKE = (b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\n"
              b"Content-Type: application/octet-stream; name=\"run.exe\"\r\n"
              b"Content-Disposition: attachment; filename=\"run.exe\"\r\n\r\nMZ\x90\r\n--b--\r\n")


def _opening(ip: str = CLIENT_IP, hostname: bytes = CLIENT_PTR.encode(),
             helo: bytes = CLIENT_PTR.encode(), j: bytes = b"mx.example.net",
             actions: int = C.SMFI_CURR_ACTS) -> list[cmd.Command]:
    return [cmd.OptNeg(6, actions, C.SMFI_CURR_PROT),
            cmd.Macro(ord("C"), ((b"j", j), (b"{daemon_name}", b"smtpd"),
                                 (b"{daemon_port}", b"25"))),
            cmd.Connect(hostname, C.SMFIA_INET, 4000, ip), cmd.Helo(helo)]


def _message(sender: bytes, rcpt: bytes = b"<bob@example.net>", *, user: bytes = b"",
             headers: tuple[tuple[bytes, bytes], ...] = ((b"Subject", b"hello"),),
             body: bytes = b"Hi Bob.\r\n") -> list[cmd.Command]:
    macros = ((b"i", b"QFUZZ"),) + (((b"{auth_authen}", user),) if user else ())
    return [cmd.Macro(ord("M"), macros), cmd.Mail((sender, b"SIZE=100")), cmd.Rcpt((rcpt,)),
            cmd.Data(), *(cmd.Header(n, v) for n, v in headers), cmd.EndOfHeaders(),
            cmd.Body(body), cmd.EndOfMessage()]


MIME = ((b"Subject", b"files"), (b"MIME-Version", b"1.0"),
        (b"Content-Type", b"multipart/mixed; boundary=\"b\""))
_BASES: list[list[cmd.Command]] = [
    [*_opening(), *_message(b"<alice@pass.test>"), cmd.Quit()],
    [*_opening(), *_message(b"<eve@fail.test>"), cmd.Abort(), *_message(b"<a@softfail.test>"),
     cmd.Abort(), *_message(b"<a@none.test>"), cmd.Abort(), cmd.Quit()],
    [*_opening(), *_message(b"<alice@pass.test>", headers=MIME, body=EICAR_LIKE), cmd.Quit()],
    [*_opening(INTERNAL_IP, b"pc.example.net", b"pc.example.net"),
     *_message(b"<pc@zom\r\nbie.example>", user=b"bob"), cmd.Abort(), cmd.Quit()],
    [*_opening(INTERNAL_IP, b"pc.example.net", b"pc.example.net", j=b"mx\r\nX-Evil: 1"),
     *_message(b"<bad\x1bguy@outside.test>", b"<carol@elsewhere.example>", user=b"alice"),
     *_message(b"<good@outside.test>", b"<carol@elsewhere.example>", user=b"alice"),
     cmd.Quit()],
    [*_opening(actions=C.SMFI_CURR_ACTS & ~(C.SMFIF_ADDHDRS | C.SMFIF_CHGBODY)),
     *_message(b"<alice@pass.test>", headers=MIME, body=EICAR_LIKE), cmd.Quit()],
    [*_opening(helo=b"h" * 3000), *_message(b"<alice@pass.test>"), cmd.Quit()],
    [*_opening(), *_message(b"<alice@pass.test>")[:5], cmd.Unknown(b"VRFY x"),
     *_message(b"<a@neutral.test>"), cmd.QuitNewConnection(), *_opening(),
     *_message(b"<alice@pass.test>"), cmd.Quit()],
]
MUTATOR = Mutator([b"".join(c.encode() for c in s) for s in _BASES])

FORBIDDEN = ("Traceback", "untrapped exception", "internal error", "edit refused")


@dataclass
class Outcome:
    packets: int = 0
    closed: bool = False  # the daemon closed after our EOF (or reset while we sent)


def run_session(port: int, pieces: list[bytes]) -> Outcome:
    """Send a (mutated) session, then EOF; read until the daemon closes."""
    out = Outcome()
    decoder = FrameDecoder(max_data_size=1 << 24)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            for piece in pieces:
                sock.sendall(piece)
            sock.shutdown(socket.SHUT_WR)
            while data := sock.recv(65536):
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    R.parse_reply(*frame)  # raises on anything not a reply packet
                    out.packets += 1
        except OSError as exc:
            # The daemon ended the session while we were still sending.  A
            # timeout is no such end: it propagates.
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                raise
        out.closed = True
    return out


def probe(port: int) -> None:
    """A valid session: SPF pass from the test client, accepted with our headers."""
    with MtaClient(("127.0.0.1", port), timeout=60) as m:
        m.negotiate()
        assert m.command(_opening()[2], [(b"j", b"mx.example.net")]) == R.CONTINUE
        assert m.command(cmd.Helo(CLIENT_PTR.encode())) == R.CONTINUE
        assert m.command(cmd.Mail((b"<alice@pass.test>",))) == R.CONTINUE
        assert m.command(cmd.Rcpt((b"<bob@example.net>",))) == R.CONTINUE
        assert m.command(cmd.Data()) == R.CONTINUE
        m.send(cmd.Header(b"Subject", b"probe"))
        assert m.command(cmd.EndOfHeaders()) == R.CONTINUE
        m.send(cmd.Body(b"Hi Bob.\r\n"), cmd.EndOfMessage())
        edits, final = m.final()
    assert final == R.CONTINUE, final
    names = [e.name for e in edits if isinstance(e, R.InsertHeader)]
    assert names == [b"Received-SPF", b"Authentication-Results"], edits
    spf = next(e for e in edits if isinstance(e, R.InsertHeader))
    assert spf.value.startswith(b"Pass "), spf


def _pids(pid: int) -> list[int]:
    """``pid`` and its children (the workers)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(p) for p in (task / "children").read_text().split()]
    return out


def resources(pid: int) -> tuple[dict[int, int], dict[int, int]]:
    """(open fds, RSS in kB), per process."""
    fds, rss = {}, {}
    for p in _pids(pid):
        fds[p] = len(os.listdir(f"/proc/{p}/fd"))
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss[p] = int(line.split()[1])
    return fds, rss


@pytest.fixture(params=[1, 2], ids=["workers1", "workers2"])
def daemon(request: pytest.FixtureRequest, nsd: Nsd, tmp_path: Path) -> Iterator[BmsDaemon]:
    sections = {
        "milter": {"workers": str(request.param), "internal_connect": "192.0.2.0/24",
                   "internal_domains": "example.net"},
        "dns": {"nameservers": nsd.nameserver, "timeout": "0.5", "lifetime": "1",
                **({"cache_size": os.environ["BMS_FUZZ_DNS_CACHE"]}
                   if "BMS_FUZZ_DNS_CACHE" in os.environ else {})},
        "srs": {"secret": SRS_SECRET, "fwdomain": "example.net"},
    }
    with BmsDaemon(sections, ACCESS, directory=str(tmp_path)) as d:
        yield d


def test_mutated_sessions_against_the_daemon(daemon: BmsDaemon) -> None:
    assert daemon.proc is not None
    pid = daemon.proc.pid
    rng = random.Random(SEED)
    probe(daemon.port)
    baseline: tuple[dict[int, int], dict[int, int]] | None = None
    done = probes = packets = 0
    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        while done < SESSIONS:
            batch = min(PROBE_EVERY, SESSIONS - done)
            inputs = [pieces_of(MUTATOR.mutate(rng)[0], rng) for _ in range(batch)]
            for n, outcome in enumerate(pool.map(lambda p: run_session(daemon.port, p),
                                                 inputs)):
                assert outcome.closed, f"session #{done + n}: no end"
                packets += outcome.packets
            done += batch
            probe(daemon.port)
            probes += 1
            if baseline is None and done >= SESSIONS * WARMUP:
                baseline = resources(pid)
    elapsed = time.monotonic() - started
    assert baseline is not None
    time.sleep(1)  # the last sessions' threads finish
    fds, rss = resources(pid)
    text = daemon.log_file.read_text(errors="replace")
    found = {word: text.count(word) for word in FORBIDDEN}
    fd_growth = {p: fds[p] - baseline[0].get(p, fds[p]) for p in fds}
    rss_growth = {p: rss[p] - baseline[1].get(p, rss[p]) for p in rss}
    print(f"\nfuzz: {done} sessions ({packets} reply packets, {probes} probes) in "
          f"{elapsed:.0f} s, workers {len(fds) - 1 or 1}; {found}; second half: fds "
          f"{baseline[0]} -> {fds}; RSS kB {baseline[1]} -> {rss} ({rss_growth})")
    assert not any(found.values()), [line for line in text.splitlines()
                                     if any(w in line for w in FORBIDDEN)][:20]
    assert set(fds) == set(baseline[0]), "a worker was restarted"
    assert max(fd_growth.values()) <= MAX_FD_GROWTH, fd_growth
    assert max(rss_growth.values()) <= MAX_RSS_GROWTH_KB, rss_growth
    # The mutations reached deep into sessions: messages got their verdicts.
    assert text.count("ACCEPT:") > done // 20 and text.count("REJECT:") > done // 50
