"""The policy part of the benchmark: the real bms daemon with its full default
policy, against bms's own no-op milter, through the same Postfix.

SPEC.md §8: "bms with its full default policy (SPF against a loopback DNS
server, defang of a typical message) at least 80 % of bms's own no-op rate
through Postfix".  What this module sets up (inside the network namespace of
``bench/run.sh``), for ``runner.run_policy_part`` to measure:

* NSD serving the test zone (``tests/testbed/nsd.py``, ``default_zones``) on
  127.0.0.1:5353 for bms and on port 53 for Postfix's own client lookups (the
  namespace's resolv.conf names 127.0.0.1), without response rate limiting;
* :data:`CLIENT_IP` (198.51.100.66, PTR ``mail.pass.test``) on ``lo``, and a
  Postfix smtpd listener *on* that address: ``smtp-source`` cannot bind a
  source address, but a connection to a local address leaves from that same
  address, so Postfix (and the milter) see the client 198.51.100.66, whose SPF
  passes for ``pass.test``;
* the bms configuration: the sample ``pymilter.cfg`` followed by an overlay
  (``-c sample -c overlay``, later files win) that sets the milter socket,
  ``[dns] nameservers = 127.0.0.1:5353``, an access file accepting SPF pass,
  none, neutral and softfail (``OK``: no CBV or DSN probe leaves bms),
  ``[defang] banned_exts`` = the sample's list with ``scan_zip`` on,
  greylisting off, and datadir/logdir/tempdir in the bench's scratch directory;
* a typical message for ``smtp-source -F``: real-looking headers, a
  multipart/alternative text + HTML body of a few KB and one 20 KB PDF
  attachment (base64), 35 KB in all.
"""

from __future__ import annotations

import base64
import random
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import dkim  # noqa: E402
import testbed  # noqa: E402
from dkimkeys import keypair  # noqa: E402
from testbed.bms_host import txt_rdata  # noqa: E402
from testbed.nsd import CLIENT_IP, CLIENT_PTR, Nsd, add_local_addresses, default_zones  # noqa: E402

from bmslib.config import BANNED_EXTS  # noqa: E402

SAMPLE_CONFIG = ROOT / "pymilter.cfg"
SENDER = "bench@pass.test"  # SPF pass for CLIENT_IP (default_zones)
RECIPIENT = "rcpt@example.test"
HELO = CLIENT_PTR  # mail.pass.test: A 198.51.100.66, a valid HELO
DKIM_SELECTOR = "bench"  # the signed message: d=pass.test, key in the bench zone
DMARC_RECORD = '_dmarc.pass TXT "v=DMARC1; p=reject"'  # the From: domain's policy

ACCESS = """\
# bench/policy.py: accept every SPF result a legitimate sender gets, without
# a CBV or DSN probe (they would need an SMTP server at the sender's MX).
SPF-Pass:       OK
SPF-None:       OK
SPF-Neutral:    OK
SPF-Softfail:   OK
"""


__all__ = ["ACCESS", "CLIENT_IP", "HELO", "RECIPIENT", "SENDER", "BenchNsd", "PolicyBed",
           "PolicyPostfix", "bms_command", "bms_config", "policy_bed", "smtp_source",
           "typical_message"]


def bms_config(directory: Path, socket_spec: str, nameserver: str) -> list[Path]:
    """Write the overlay configuration and the access file into ``directory``;
    the ``-c`` files for bms, in order (the sample first)."""
    directory.mkdir(parents=True, exist_ok=True)
    access = directory / "access"
    access.write_text(ACCESS)
    exts = ", ".join(BANNED_EXTS)
    overlay = directory / "bench.cfg"
    overlay.write_text(textwrap.dedent(f"""\
        # bench/policy.py: the sample pymilter.cfg, then this file
        [milter]
        socket = {socket_spec}
        datadir = {directory / "data"}
        logdir = {directory / "log"}
        tempdir = {directory / "save"}

        [spf]
        access_file = {access}

        [defang]
        scan_zip = yes
        banned_exts = {exts}

        [greylist]
        enabled = no

        [dns]
        nameservers = {nameserver}
        """))
    return [SAMPLE_CONFIG, overlay]


def bms_command(python: Path, configs: list[Path]) -> list[str]:
    args = [str(python), "-m", "bms"]
    for c in configs:
        args += ["-c", str(c)]
    return args


# --- the message -------------------------------------------------------------------

WORDS = ("the", "report", "quarter", "figures", "budget", "meeting", "draft", "review", "team",
         "project", "customer", "invoice", "schedule", "attached", "please", "find", "below",
         "thanks", "regards", "update", "numbers", "revenue", "forecast", "plan", "next",
         "week", "office", "call", "notes", "agenda", "summary")


def _prose(rng: random.Random, size: int, width: int = 72) -> list[str]:
    words: list[str] = []
    length = 0
    while length < size:
        sentence = [rng.choice(WORDS) for _ in range(rng.randint(6, 16))]
        sentence[0] = sentence[0].capitalize()
        text = " ".join(sentence) + "."
        words.append(text)
        length += len(text) + 1
    paragraphs: list[str] = []
    for i in range(0, len(words), 5):
        paragraphs += [*textwrap.wrap(" ".join(words[i:i + 5]), width), ""]
    return paragraphs


def typical_message(attachment_bytes: int = 20_000) -> str:
    """A typical business mail, LF line ends (``smtp-source -F`` sends CRLF):
    multipart/mixed (multipart/alternative text + HTML, then a PDF attachment)."""
    rng = random.Random(8894)
    text = _prose(rng, 2500)
    html = ["<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; "
            "charset=utf-8\"></head><body>"]
    html += [f"<p>{line}</p>" if line else "" for line in _prose(rng, 3000)]
    html += ["</body></html>"]
    pdf = (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
           + rng.randbytes(attachment_bytes - 80) + b"\n%%EOF\n")
    b64 = base64.encodebytes(pdf).decode("ascii").splitlines()
    outer, inner = "=_bench_mixed_4XbBmS0QzHz1b", "=_bench_alt_4XbBmS0QzHz1b"
    lines = [
        "Received: from [10.20.30.40] (office-gw.pass.test [10.20.30.40])",
        "\tby mail.pass.test (Postfix) with ESMTPSA id 4XbBmS0Qz7",
        "\tfor <rcpt@example.test>; Mon, 24 Nov 2025 17:59:58 +0000 (UTC)",
        "From: Alice Bench <bench@pass.test>",
        "To: Bob Receiver <rcpt@example.test>",
        "Cc: Carol Team <carol@example.test>",
        "Subject: Q3 report, draft for review",
        "Date: Mon, 24 Nov 2025 18:59:58 +0100",
        "Message-ID: <20251124175958.4XbBmS0Qz7@mail.pass.test>",
        "MIME-Version: 1.0",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Thunderbird/115.5.0",
        "Content-Language: en-US",
        f'Content-Type: multipart/mixed; boundary="{outer}"',
        "",
        "This is a multi-part message in MIME format.",
        f"--{outer}",
        f'Content-Type: multipart/alternative; boundary="{inner}"',
        "",
        f"--{inner}",
        "Content-Type: text/plain; charset=UTF-8; format=flowed",
        "Content-Transfer-Encoding: 7bit",
        "",
        *text,
        f"--{inner}",
        "Content-Type: text/html; charset=UTF-8",
        "Content-Transfer-Encoding: 7bit",
        "",
        *html,
        f"--{inner}--",
        "",
        f"--{outer}",
        'Content-Type: application/pdf; name="Q3-report-draft.pdf"',
        'Content-Disposition: attachment; filename="Q3-report-draft.pdf"',
        "Content-Transfer-Encoding: base64",
        "",
        *b64,
        f"--{outer}--",
    ]
    return "\n".join(lines) + "\n"


# --- the test bed -------------------------------------------------------------------

class BenchNsd(Nsd):
    """``Nsd`` without response rate limiting.  NSD limits each source to 200
    queries/s by default (``rrl-ratelimit``); Postfix's smtpd looks up every
    client (PTR, then A of the name) through port 53, so a few hundred
    connections/s from CLIENT_IP are throttled: the resolver times out
    ("Temporary failure in name resolution") and the rate collapses."""

    def configure(self) -> Path:
        path = super().configure()
        text = path.read_text()
        assert text.startswith("server:\n"), text[:100]
        path.write_text(text.replace("server:\n", "server:\n  rrl-ratelimit: 0\n"
                                     "  rrl-whitelist-ratelimit: 0\n", 1))
        return path


class PolicyPostfix(testbed.Postfix):
    """``testbed.Postfix``, sure to have ``anvil(8)`` in master.cf.  smtpd counts
    the connections of every client outside ``smtpd_client_event_limit_exceptions``
    ($mynetworks: 127.0.0.0/8) with anvil; without the service each such
    connection waits ~2 s for it (``warning: connect to private/anvil``)."""

    def write_config(self) -> None:
        super().write_config()
        master = self.etc / "master.cf"
        if not any(line.split()[:1] == ["anvil"] for line in master.read_text().splitlines()):
            with master.open("a") as f:
                f.write("anvil     unix  -       -       n       -       1       anvil\n")


@dataclass
class PolicyBed:
    nsd: BenchNsd
    postfix: PolicyPostfix
    ports: dict[str, int]  # "none" / "milter": smtpd listening on CLIENT_IP
    message: Path
    message_bytes: int
    signed: Path  # the same message, DKIM-signed by pass.test (DMARC pass by SPF and DKIM)


def signed_message(text: str, pem: bytes) -> str:
    """``text`` (LF line ends) with a DKIM-Signature of pass.test over its
    CRLF form (what smtp-source sends), relaxed/simple."""
    sig: bytes = dkim.sign(text.replace("\n", "\r\n").encode(), DKIM_SELECTOR.encode(),
                           b"pass.test", pem, canonicalize=(b"relaxed", b"simple"),
                           linesep=b"\n")
    return sig.decode("ascii") + text


@contextmanager
def policy_bed(workdir: Path, milter_spec: str) -> Iterator[PolicyBed]:
    """NSD, CLIENT_IP on lo, and a Postfix (discard transport) with two smtpd
    listeners on CLIENT_IP: one without a milter, one with ``milter_spec``
    (a Postfix spec, ``inet:127.0.0.1:PORT``)."""
    add_local_addresses([CLIENT_IP])
    message = workdir / "policy-message.txt"
    text = typical_message()
    message.write_text(text)
    pem, record = keypair(workdir, "bench-dkim")
    signed = workdir / "policy-message-signed.txt"
    signed.write_text(signed_message(text, pem))
    zones = default_zones()
    zones["test"] += [DMARC_RECORD, f"{DKIM_SELECTOR}._domainkey.pass TXT {txt_rdata(record)}"]
    nsd = BenchNsd(zones, directory=str(workdir / "nsd"), extra_ports=(53,))
    with nsd:
        pf = PolicyPostfix(str(workdir / "pf-policy"), transport="discard")
        ports = {"none": pf.add_listener(CLIENT_IP).port,
                 "milter": pf.add_listener(CLIENT_IP, smtpd_milters=milter_spec).port}
        pf.start()
        try:
            yield PolicyBed(nsd, pf, ports, message, len(text.replace("\n", "\r\n")), signed)
        finally:
            pf.stop()


def smtp_source(bed: PolicyBed, kind: str, sessions: int, messages: int,
                signed: bool = False) -> list[str]:
    """``smtp-source`` sending the typical message (``signed``: its DKIM-signed
    form) from CLIENT_IP."""
    path = bed.signed if signed else bed.message
    return ["smtp-source", "-s", str(sessions), "-m", str(messages), "-F", str(path),
            "-f", SENDER, "-t", RECIPIENT, "-M", HELO, f"{CLIENT_IP}:{bed.ports[kind]}"]
