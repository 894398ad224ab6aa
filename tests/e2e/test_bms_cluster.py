"""Cluster state, SRS and DKIM end to end (issue 5): real ``bms`` processes,
each behind its own real Postfix instance, a real redis-server, NSD.

* Two MX hosts share one Redis database: a message greylisted on host 1 is
  accepted when it is retried on host 2; an IP banned on host 1 is refused on
  host 2.  The same with one host on the SQLite backend.
* Redis stopped mid-run: greylisting tempfails (one log line for the outage),
  SPF and content policy go on, nothing crashes; Redis back: greylisting
  works again.
* SRS: relayed mail leaves with an SRS0 sender; a bounce to it is delivered
  to the original sender; forged and expired SRS addresses are refused.
* DKIM: internal mail is signed (verified with dkimpy against the key in
  DNS); outside mail is verified (``dkim=pass``, and ``dkim=fail`` when the
  body was changed after signing).

The outside client is 198.51.100.66 (``CLIENT_IP``, PTR and HELO
``mail.pass.test``).  The greylisting tests use senders in ``neutral.test``:
SPF neutral (accepted by default) is not pass, so the greylist triplet's
origin is the client's /24, ``198.51.100.0/24``.  Bans use outside addresses
of their own (``NOPTR_IP`` with Redis, ``DYN_IP`` with SQLite).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
import redis
from dkimkeys import keypair
from testbed.bms_host import BmsHost, dkim_dnsfunc, txt_rdata
from testbed.mail import StoredMessage, make_message, new_message_id
from testbed.milter import free_port
from testbed.nsd import (
    CLIENT_IP,
    CLIENT_PTR,
    DYN_IP,
    FORWARDER_IP,
    INTERNAL_IP,
    NOPTR_IP,
    Nsd,
    default_zones,
)
from testbed.redisd import RedisServer, require_redis
from testbed.redisd import redis_server as redis_server  # the session fixture
from testbed.smtp import Transaction
from testbed.smtpsink import Message, SmtpSink

from bmslib.policy.srs import Srs, SrsSettings

pytestmark = pytest.mark.e2e

RCPT = "rcpt@example.test"
OUR_NAME = "mx.example.test"  # every Postfix's myhostname; the blacklisted HELO
GREY_MINUTES = "0.05"
GREY_SECONDS = 3.0
GREY_NET = "198.51.100.0/24"  # the greylist origin of CLIENT_IP (SPF not pass)
REDIS_DB = 5  # the cluster's database on the session redis-server
BAN_IP = {"redis": NOPTR_IP, "sqlite": DYN_IP}

SRS_SECRET = "e2e-srs-secret"
SRS_MAXAGE = 8
SRS_HASHLENGTH = 8
SRS_SETTINGS = SrsSettings(secret=SRS_SECRET, maxage=SRS_MAXAGE, hashlength=SRS_HASHLENGTH,
                           fwdomain="example.test", srs_domains=frozenset({"example.test"}),
                           reject_spoofed=True)
DKIM_SELECTOR = "e2e2026"


def dns_section(nameserver: str) -> dict[str, str]:
    return {"nameservers": nameserver, "timeout": "1", "lifetime": "2"}


def greylisting_sections(nsd: Nsd, backend: str) -> dict[str, dict[str, str]]:
    """A host that greylists and bans: greylist time 3 s, more than 3 demerits
    ban, a HELO with our own name is worth 4."""
    return {
        "milter": {"max_demerits": "3", "hello_blacklist": OUR_NAME},
        "dns": dns_section(nsd.nameserver),
        "greylist": {"enabled": "1", "time": GREY_MINUTES},
        "state": {"backend": backend},
    }


def flat(value: str | None) -> str:
    return re.sub(r"\s+", " ", value or "").strip()


def send(host: BmsHost, source: str, helo: str, sender: str, rcpts: list[str],
         data: bytes | None) -> Transaction:
    """One SMTP session from ``source``: EHLO (must be accepted), one transaction."""
    with host.smtp(source) as client:
        code, text = client.ehlo(helo)
        assert code == 250, (code, text)
        return client.transaction(sender, rcpts, data)


def delivered(host: BmsHost, mid: str) -> StoredMessage:
    return host.postfix.message(mid)


def not_delivered(host: BmsHost, mid: str) -> bool:
    host.postfix.wait_idle()
    return all(m.message_id != mid for m in host.postfix.delivered())


def sink_message(sink: SmtpSink, mid: str, timeout: float = 20.0) -> Message:
    """The one message the sink received with this Message-ID."""
    deadline = time.monotonic() + timeout
    while True:
        found = [m for m in sink.messages() if f"Message-ID: {mid}".encode() in m.data]
        if found:
            assert len(found) == 1, found
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"the sink got no message {mid}; commands: {sink.commands()}")
        time.sleep(0.05)


def log_text(host: BmsHost) -> str:
    return host.bms.log_file.read_text(errors="replace")


# --- two hosts sharing Redis, one host on SQLite ------------------------------------------

@pytest.fixture(scope="module")
def cluster_redis_url(redis_server: RedisServer) -> str:
    require_redis()
    url = f"{redis_server.url.rsplit('/', 1)[0]}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture(scope="module")
def cluster(nsd: Nsd, cluster_redis_url: str) -> Iterator[tuple[BmsHost, BmsHost]]:
    """MX 1 and MX 2: two bms processes on one Redis database, each behind
    its own Postfix instance (own directory, own port)."""
    sections = greylisting_sections(nsd, cluster_redis_url)
    mx1 = BmsHost.start("mx1", sections)
    try:
        mx2 = BmsHost.start("mx2", sections)
    except BaseException:
        mx1.stop()
        raise
    assert mx1.postfix.port != mx2.postfix.port
    yield mx1, mx2
    try:
        mx2.stop()
    finally:
        mx1.stop()


@pytest.fixture(scope="module")
def solo(nsd: Nsd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BmsHost]:
    """One host with the SQLite backend."""
    db = tmp_path_factory.mktemp("state") / "bms-state.sqlite"
    host = BmsHost.start("solo", greylisting_sections(nsd, f"sqlite:{db}"))
    yield host
    host.stop()


@pytest.fixture(params=["redis", "sqlite"])
def pair(request: pytest.FixtureRequest) -> tuple[str, BmsHost, BmsHost]:
    """(backend, first host, second host): MX 1 and MX 2 on Redis; the SQLite
    host twice."""
    if request.param == "redis":
        mx1, mx2 = request.getfixturevalue("cluster")
        return "redis", mx1, mx2
    host = request.getfixturevalue("solo")
    return "sqlite", host, host


def test_greylisted_on_one_host_accepted_on_retry_via_the_other(
        pair: tuple[str, BmsHost, BmsHost]) -> None:
    backend, first, second = pair
    sender = f"grey-{backend}@neutral.test"
    mid, data = make_message(f"greylist {backend}", sender=sender, to=RCPT,
                             message_id=new_message_id(f"grey-{backend}"))
    mark1, mark2 = first.log_mark(), second.log_mark()

    t = send(first, CLIENT_IP, CLIENT_PTR, sender, [RCPT], data)
    assert t.mail.code == 250, t
    reply = t.rcpt[RCPT]
    assert reply.code == 451, t
    assert reply.text.startswith("4.7.1 "), reply
    assert "Greylisted: please retry in 1 minute" in reply.text, reply
    assert t.data is None
    first.bms.wait_log(f"TEMPFAIL: greylist {GREY_NET} {sender} {RCPT}", start=mark1)

    time.sleep(GREY_SECONDS + 0.3)  # the retry comes after the greylist time
    t = send(second, CLIENT_IP, CLIENT_PTR, sender, [RCPT], data)
    assert t.rcpt[RCPT].code == 250, t
    assert t.data is not None and t.data.code == 250, t
    second.bms.wait_log(f"GREYLIST PASSED: {GREY_NET} {sender} {RCPT}", start=mark2)
    m = delivered(second, mid)
    assert m.recipients == [RCPT]
    assert m.sender == sender
    assert flat(m.get("Received-SPF")).lower().startswith("neutral "), m.headers
    if first is not second:  # nothing reached MX 1's mailbox
        assert not_delivered(first, mid)


def test_ip_banned_on_one_host_refused_on_the_next_connection_to_the_other(
        pair: tuple[str, BmsHost, BmsHost]) -> None:
    backend, first, second = pair
    ip = BAN_IP[backend]
    mark1, mark2 = first.log_mark(), second.log_mark()

    with first.smtp(ip) as client:
        code, text = client.ehlo(OUR_NAME)  # our own name: "spam from self", 4 demerits
        # Postfix gives the milter's HELO verdict at MAIL FROM.
        t = client.transaction(f"liar-{backend}@none.test", [RCPT], None)
        assert t.mail.code == 550, (code, text, t)
        assert t.mail.text == f"5.7.1 Your mail server lies: its name is not {OUR_NAME}.", t
    line = first.bms.wait_log(f"BANNED IP: {ip} ", start=mark1)
    assert line == f"BANNED IP: {ip} (4 demerits, last: HELO with our name)", line
    assert any(msg == f"REJECT: spam from self: HELO {OUR_NAME}"
               for msg in first.log_since(mark1)), first.log_since(mark1)

    sender = f"banned-{backend}@none.test"
    mid, data = make_message(f"banned {backend}", sender=sender, to=RCPT,
                             message_id=new_message_id(f"ban-{backend}"))
    t = send(second, ip, "relay.elsewhere.test", sender, [RCPT], data)
    # Delayed to DATA, so every recipient is logged; greylisting is skipped.
    assert t.mail.code == 250 and t.rcpt[RCPT].code == 250, t
    assert t.data is not None and t.data.code == 550, t
    assert t.data.text.startswith("5.7.1 "), t.data
    assert "Banned for repeated policy violations" in t.data.text, t.data
    second.bms.wait_log(f"REJECT: BANNED IP {ip}", start=mark2)
    assert not any("greylist" in msg.lower() for msg in second.log_since(mark2))
    assert not_delivered(second, mid)


# --- Redis goes away and comes back ---------------------------------------------------------

def test_redis_outage_tempfails_greylisting_only_and_recovers(nsd: Nsd) -> None:
    """A dedicated redis-server is stopped under a running bms.

    Greylisting cannot be decided without the store: it tempfails.  The SPF
    policy needs no store: an SPF fail sender is still refused at DATA (its
    delayed reject also means the message is never greylisted).  The
    content policy is checked on mail from a trusted relay (FORWARDER_IP in
    ``trusted_relay``), which is never greylisted but still gets the Subject
    word check: a porn word is refused."""
    require_redis()
    with RedisServer() as server:
        sections = greylisting_sections(nsd, server.url)
        sections["milter"]["trusted_relay"] = FORWARDER_IP
        sections["defang"] = {"porn_words": "viagra, xxx-rated"}
        host = BmsHost.start("outage", sections, access="SPF-Fail: REJECT\n")
        try:
            _outage_scenario(host, server)
        finally:
            host.stop()


def _greylist_attempt(host: BmsHost, sender: str) -> Transaction:
    _, data = make_message("outage greylist", sender=sender, to=RCPT,
                           message_id=new_message_id("outage"))
    return send(host, CLIENT_IP, CLIENT_PTR, sender, [RCPT], data)


def _outage_scenario(host: BmsHost, server: RedisServer) -> None:
    bms = host.bms
    # Redis up: normal greylisting (the store has been reached).
    t = _greylist_attempt(host, "before@neutral.test")
    assert t.rcpt[RCPT].code == 451 and "Greylisted: please retry" in t.rcpt[RCPT].text, t

    server.stop()
    mark = host.log_mark()
    for n in range(3):
        sender = f"during{n}@neutral.test"
        t = _greylist_attempt(host, sender)
        reply = t.rcpt[RCPT]
        assert reply.code == 451, t
        assert reply.text.startswith("4.7.1 "), reply
        assert "Greylisting is unavailable" in reply.text, reply
    tempfails = [m for m in host.log_since(mark)
                 if m.startswith(f"TEMPFAIL: greylist unavailable: redis {server.url}: ")]
    assert len(tempfails) == 3, host.log_since(mark)

    mid, data = make_message("outage spf", sender="spf@fail.test", to=RCPT,
                             message_id=new_message_id("outage-spf"))
    t = send(host, CLIENT_IP, CLIENT_PTR, "spf@fail.test", [RCPT], data)
    assert t.mail.code == 250 and t.rcpt[RCPT].code == 250, t
    assert t.data is not None and t.data.code == 550, t
    assert t.data.text.startswith("5.7.1 "), t.data
    bms.wait_log(f"REJECT: SPF fail for spf@fail.test from {CLIENT_IP}", start=mark)
    assert not_delivered(host, mid)

    mid, data = make_message("Cheap VIAGRA today", sender="relayed@pass.test", to=RCPT,
                             message_id=new_message_id("outage-content"))
    t = send(host, FORWARDER_IP, "relay.forwarder.test", "relayed@pass.test", [RCPT], data)
    assert t.rcpt[RCPT].code == 250, t  # a trusted relay is not greylisted
    assert t.data is not None and t.data.code == 550, t
    assert t.data.text.startswith("5.7.1 "), t.data
    bms.wait_log("REJECT: Subject: Cheap VIAGRA today", start=mark)

    unavailable = [m for m in bms.messages() if m.startswith("STATE: redis unavailable")]
    assert len(unavailable) == 1, unavailable
    assert unavailable[0].startswith(f"STATE: redis unavailable: {server.url}: "), unavailable
    assert bms.proc is not None and bms.proc.poll() is None, "bms died"
    assert "Traceback" not in log_text(host)
    assert "Traceback" not in (bms.dir / "stderr.log").read_text(errors="replace")

    # Redis back: greylisting is normal again.
    server.start()
    mark = host.log_mark()
    sender = "after@neutral.test"
    mid, data = make_message("outage after", sender=sender, to=RCPT,
                             message_id=new_message_id("outage-after"))
    t = send(host, CLIENT_IP, CLIENT_PTR, sender, [RCPT], data)
    reply = t.rcpt[RCPT]
    assert reply.code == 451 and reply.text.startswith("4.7.1 "), t
    assert "Greylisted: please retry in 1 minute" in reply.text, reply
    bms.wait_log("STATE: redis back", start=mark)
    bms.wait_log(f"TEMPFAIL: greylist {GREY_NET} {sender} {RCPT}", start=mark)
    time.sleep(GREY_SECONDS + 0.3)
    t = send(host, CLIENT_IP, CLIENT_PTR, sender, [RCPT], data)
    assert t.rcpt[RCPT].code == 250, t
    assert t.data is not None and t.data.code == 250, t
    assert delivered(host, mid).recipients == [RCPT]
    assert [m for m in bms.messages() if m.startswith("STATE: redis unavailable")] \
        == unavailable
    assert sum(m == "STATE: redis back" for m in bms.messages()) == 1
    assert bms.proc.poll() is None and "Traceback" not in log_text(host)


# --- SRS and DKIM on a relaying host ------------------------------------------------------

@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    """Where the relaying host sends mail for other domains (its relayhost)."""
    with SmtpSink("127.0.0.1", 0, name="relay.sink.test") as s:
        yield s


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, bytes]:
    """(private key file, PEM, DNS key record), made with openssl for this run."""
    tmp = tmp_path_factory.mktemp("dkim")
    pem, record = keypair(tmp, "e2e-dkim")
    return tmp / "e2e-dkim.pem", pem, record


@pytest.fixture(scope="module")
def dkim_nsd(nsd: Nsd, dkim_key: tuple[Path, bytes, bytes]) -> Iterator[Nsd]:
    """A second NSD on another port: the shared test zones plus this run's
    DKIM key, published for example.test (our signing domain) and pass.test
    (an outside domain whose mail is verified).  The session NSD on 5353 is
    left as it is."""
    _, _, record = dkim_key
    zones = default_zones()
    rdata = txt_rdata(record)
    zones["test"] += [f"{DKIM_SELECTOR}._domainkey.example TXT {rdata}",
                      f"{DKIM_SELECTOR}._domainkey.pass TXT {rdata}"]
    with Nsd(zones, port=free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def relay(dkim_nsd: Nsd, sink: SmtpSink, dkim_key: tuple[Path, bytes, bytes]
          ) -> Iterator[BmsHost]:
    """Our MX and outbound relay: SRS and DKIM signing on, no greylisting.
    10.11.12.0/24 is internal, FORWARDER_IP a trusted relay; Postfix relays
    both (mynetworks) and sends mail for other domains to the sink."""
    keyfile, _, _ = dkim_key
    sections = {
        "milter": {"internal_connect": "10.11.12.0/24", "internal_domains": "example.test",
                   "trusted_relay": FORWARDER_IP},
        "dns": dns_section(dkim_nsd.nameserver),
        "srs": {"secret": SRS_SECRET, "fwdomain": "example.test", "reject_spoofed": "1",
                "maxage": str(SRS_MAXAGE), "hashlength": str(SRS_HASHLENGTH)},
        "dkim": {"privkey": str(keyfile), "domain": "example.test",
                 "selector": DKIM_SELECTOR},
    }
    host = BmsHost.start("relay", sections, postfix_options={
        "relayhost": f"[127.0.0.1]:{sink.port}",
        "main_cf": {"mynetworks": f"127.0.0.0/8, 10.11.12.0/24, {FORWARDER_IP}/32"}})
    yield host
    host.stop()


SRS0 = re.compile(rf"^SRS0=(?P<hash>[^=]{{{SRS_HASHLENGTH}}})=(?P<stamp>[A-Z2-7]{{2}})="
                  r"(?P<domain>[^=]+)=(?P<local>[^@]+)@example\.test$")


def relay_out(relay: BmsHost, sink: SmtpSink, original: str) -> str:
    """Mail from ``original`` relayed by the trusted relay to an outside
    domain; the envelope sender it left with."""
    mid, data = make_message("relayed", sender=original, to="friend@neutral.test",
                             message_id=new_message_id("srs-out"))
    t = send(relay, FORWARDER_IP, "relay.forwarder.test", original, ["friend@neutral.test"],
             data)
    assert t.data is not None and t.data.code == 250, t
    out = sink_message(sink, mid)
    assert out.recipients == ("friend@neutral.test",)
    return out.sender


def test_srs_relayed_mail_leaves_with_srs0_and_its_bounce_comes_back(
        relay: BmsHost, sink: SmtpSink) -> None:
    original = "traveller@pass.test"
    mark = relay.log_mark()
    srs_sender = relay_out(relay, sink, original)
    m = SRS0.match(srs_sender)
    assert m, srs_sender
    assert (m["domain"], m["local"]) == ("pass.test", "traveller")
    assert Srs(SRS_SETTINGS).reverse(srs_sender) == original
    relay.bms.wait_log(f"SRS: envelope sender {original} is now {srs_sender}", start=mark)

    # The bounce, from outside, to the SRS address: accepted, and delivered
    # to the original sender (delrcpt + addrcpt), not to a local mailbox.
    mid, data = make_message("Undelivered Mail Returned to Sender",
                             sender="MAILER-DAEMON@neutral.test", to=srs_sender,
                             message_id=new_message_id("srs-bounce"))
    t = send(relay, CLIENT_IP, CLIENT_PTR, "<>", [srs_sender], data)
    assert t.rcpt[srs_sender].code == 250, t
    assert t.data is not None and t.data.code == 250, t
    bounce = sink_message(sink, mid)
    assert bounce.sender == ""
    assert bounce.recipients == (original,)
    relay.bms.wait_log(f"SRS: {srs_sender} is {original}", start=mark)
    assert not_delivered(relay, mid)


def test_srs_forged_and_expired_bounces_are_refused(relay: BmsHost, sink: SmtpSink) -> None:
    srs_sender = relay_out(relay, sink, "victim@pass.test")
    m = SRS0.match(srs_sender)
    assert m, srs_sender
    # Another hash (not only another case: a case-smashed hash still counts).
    good = m["hash"]
    forged_hash = ("0" if good[0] != "0" else "1") + good[1:]
    forged = srs_sender.replace(f"SRS0={good}=", f"SRS0={forged_hash}=", 1)
    assert Srs(SRS_SETTINGS).reverse(forged) is None
    ten_days_ago = time.time() - 10 * 86400
    expired = Srs(SRS_SETTINGS, clock=lambda: ten_days_ago).forward("late@pass.test")
    assert expired.startswith("SRS0=") and expired.endswith("@example.test"), expired

    for rcpt, why in ((forged, "bad hash"), (expired, "expired")):
        mark = relay.log_mark()
        t = send(relay, CLIENT_IP, CLIENT_PTR, "<>", [rcpt], None)
        reply = t.rcpt[rcpt]
        assert reply.code == 550, (rcpt, t)
        assert reply.text.startswith("5.7.1 "), reply
        assert "Invalid SRS signature" in reply.text, reply
        relay.bms.wait_log(f"REJECT: srs spoofed: {why}: {rcpt}", start=mark)

    # reject_spoofed: a bounce to a plain address of ours is refused at DATA.
    mid, data = make_message("bounce", sender="MAILER-DAEMON@neutral.test", to=RCPT,
                             message_id=new_message_id("srs-unsigned"))
    t = send(relay, CLIENT_IP, CLIENT_PTR, "<>", [RCPT], data)
    assert t.rcpt[RCPT].code == 250, t
    assert t.data is not None and t.data.code == 550, t
    assert "I did not send you that message" in t.data.text, t.data
    assert not_delivered(relay, mid)


def test_srs_rewrite_of_a_sender_with_esc_is_refused_through_postfix(
        relay: BmsHost, sink: SmtpSink) -> None:
    """Issue 13 item 4: Postfix takes a raw ESC in MAIL FROM; the SRS0 sender
    would have carried it into the envelope (and into Return-Path).  bms makes
    no CHGFROM for it and logs why; the message is relayed with the sender
    the client gave, and a clean sender still gets its SRS0 address."""
    original = "bad\x1bguy@pass.test"
    mark = relay.log_mark()
    mid, data = make_message("relayed", sender="guy@pass.test", to="friend@neutral.test",
                             message_id=new_message_id("srs-esc"))
    t = send(relay, FORWARDER_IP, "relay.forwarder.test", original, ["friend@neutral.test"],
             data)
    assert t.data is not None and t.data.code == 250, t
    out = sink_message(sink, mid)
    # The client's sender as Postfix writes it (quoted), not an SRS0 with ESC in it.
    assert out.sender == '"bad\x1bguy"@pass.test', out.sender
    relay.bms.wait_log("SRS: envelope sender bad\\x1bguy@pass.test not rewritten: "
                       "not a sendable address", start=mark)
    assert SRS0.match(relay_out(relay, sink, "good.guy@pass.test"))
    assert "Traceback" not in log_text(relay) and "edit refused" not in log_text(relay)


def test_dkim_internal_mail_is_signed_and_verifies(
        relay: BmsHost, sink: SmtpSink, dkim_nsd: Nsd) -> None:
    mid, data = make_message("signed by bms", "Our numbers.\n", sender="alice@example.test",
                             to="friend@neutral.test", message_id=new_message_id("dkim-out"))
    mark = relay.log_mark()
    t = send(relay, INTERNAL_IP, "pc7.example.test", "alice@example.test",
             ["friend@neutral.test"], data)
    assert t.data is not None and t.data.code == 250, t
    out = sink_message(sink, mid)
    assert out.sender == "alice@example.test"  # our own sender: no SRS
    relay.bms.wait_log(f"DKIM: signed d=example.test s={DKIM_SELECTOR}", start=mark)
    sig = flat(out.parsed()["DKIM-Signature"])
    assert "d=example.test;" in sig and f"s={DKIM_SELECTOR};" in sig, sig
    dnsfunc = dkim_dnsfunc(dkim_nsd.host, dkim_nsd.port)
    assert dkim.verify(out.data, dnsfunc=dnsfunc)
    # The check can fail: the same message with its body changed does not verify.
    assert b"Our numbers." in out.data
    assert not dkim.verify(out.data.replace(b"Our numbers.", b"Our numbers!"), dnsfunc=dnsfunc)


@pytest.mark.parametrize("tampered", [False, True], ids=["intact", "tampered"])
def test_dkim_outside_mail_is_verified(relay: BmsHost, dkim_key: tuple[Path, bytes, bytes],
                                       tampered: bool) -> None:
    _, pem, _ = dkim_key
    sender = f"dkim-{'bad' if tampered else 'ok'}@pass.test"
    mid, data = make_message("signed outside", "Pay the invoice to account 12345.\n",
                             sender=sender, to=RCPT, message_id=new_message_id("dkim-in"))
    signature = dkim.sign(data, DKIM_SELECTOR.encode(), b"pass.test", pem,
                          canonicalize=(b"relaxed", b"simple"))
    signed = signature + data
    if tampered:
        signed = signed.replace(b"account 12345", b"account 66666")
    t = send(relay, CLIENT_IP, CLIENT_PTR, sender, [RCPT], signed)
    assert t.data is not None and t.data.code == 250, t
    m = delivered(relay, mid)
    results = [flat(v) for v in m.get_all("Authentication-Results")]
    assert len(results) == 1, results
    ar = results[0]
    assert ar.startswith(f"{OUR_NAME};"), ar
    assert f"spf=pass smtp.mailfrom={sender}" in ar, ar
    if tampered:
        assert re.search(rf"dkim=fail reason=\"[^\"]+\" header\.d=pass\.test "
                         rf"header\.s={DKIM_SELECTOR}", ar), ar
        assert "dkim=pass" not in ar, ar
    else:
        assert f"dkim=pass header.d=pass.test header.s={DKIM_SELECTOR}" in ar, ar
    line = relay.bms.connection_of(f"mail from <{sender}>")
    want = "DKIM: fail d=pass.test" if tampered else "DKIM: pass d=pass.test"
    assert any(msg.startswith(want) for msg in line), line
