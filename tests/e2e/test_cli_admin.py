"""The admin commands change what a running daemon does, through real
Postfix, at once and without a restart (issue 16): ``bms ban``,
``whitelist``, ``blacklist`` and ``greylist``, run as a separate process
with the daemon's own ``-c`` file, on the SQLite store and on a real
redis-server.

The daemon greylists for 10 minutes (nothing passes by waiting during the
test) and bans only by the CLI (``max_demerits`` is high).  Mail from
``FORWARDER_IP``, a trusted relay, is never greylisted, so a ban or a
blacklist entry shows at DATA and its removal lets the message through.
``CLIENT_IP`` is an outside client whose senders in ``neutral.test`` are
greylisted by the /24 ``GREY_NET``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from testbed.bms_host import BmsHost
from testbed.mail import make_message, new_message_id
from testbed.nsd import CLIENT_IP, CLIENT_PTR, FORWARDER_IP, Nsd
from testbed.redisd import RedisServer, require_redis
from testbed.redisd import redis_server as redis_server  # the session fixture
from testbed.smtp import Transaction

pytestmark = pytest.mark.e2e

RCPT = "rcpt@example.test"
GREY_NET = "198.51.100.0/24"
REDIS_DB = 6
RELAY_HELO = "relay.forwarder.test"


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def host(request: pytest.FixtureRequest, nsd: Nsd,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[BmsHost]:
    if request.param == "redis":
        require_redis()
        server: RedisServer = request.getfixturevalue("redis_server")
        backend = server.empty_database(REDIS_DB)
    else:
        backend = f"sqlite:{tmp_path_factory.mktemp('state') / 'bms-state.sqlite'}"
    h = BmsHost.start(f"admin-{request.param}", {
        "milter": {"max_demerits": "100", "trusted_relay": FORWARDER_IP},
        "dns": {"nameservers": nsd.nameserver, "timeout": "1", "lifetime": "2"},
        "greylist": {"enabled": "1", "time": "10"},
        "state": {"backend": backend},
    })
    yield h
    h.stop()


def bms(host: BmsHost, *args: str) -> str:
    """``bms -c <the daemon's file> ARGS`` as its own process; its output (exit 0)."""
    done = subprocess.run([sys.executable, "-m", "bms", "-c", str(host.bms.cfg), *args],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stderr == "", done
    return done.stdout


def bms_json(host: BmsHost, *args: str) -> Any:
    return json.loads(bms(host, *args, "--json"))


def send(host: BmsHost, source: str, helo: str, sender: str, tag: str) -> tuple[str, Transaction]:
    """One message from ``source``; its Message-ID and the transaction."""
    mid, data = make_message(f"admin {tag}", sender=sender, to=RCPT,
                             message_id=new_message_id(tag))
    with host.smtp(source) as client:
        code, text = client.ehlo(helo)
        assert code == 250, (code, text)
        return mid, client.transaction(sender, [RCPT], data)


def accepted(host: BmsHost, mid: str, t: Transaction) -> None:
    assert t.rcpt[RCPT].code == 250 and t.data is not None and t.data.code == 250, t
    assert host.postfix.message(mid).recipients == [RCPT]


def refused_at_data(t: Transaction, text: str) -> None:
    assert t.mail.code == 250 and t.rcpt[RCPT].code == 250, t
    assert t.data is not None and t.data.code == 550, t
    assert t.data.text == f"5.7.1 {text}", t.data


def greylisted(t: Transaction) -> None:
    reply = t.rcpt[RCPT]
    assert reply.code == 451 and "Greylisted: please retry in 10 minutes" in reply.text, t
    assert t.data is None


def test_ban_and_unban_an_ip_and_a_domain(host: BmsHost) -> None:
    sender = "relayed@pass.test"
    mid, t = send(host, FORWARDER_IP, RELAY_HELO, sender, "before-ban")
    accepted(host, mid, t)

    mark = host.log_mark()
    bms(host, "ban", "add", FORWARDER_IP, "--reason", "abuse report")
    assert [(b["key"], b["reason"]) for b in bms_json(host, "ban", "list")] == [
        (FORWARDER_IP, "abuse report")]
    _, t = send(host, FORWARDER_IP, RELAY_HELO, sender, "banned")
    refused_at_data(t, "Banned for repeated policy violations.")
    host.bms.wait_log(f"REJECT: BANNED IP {FORWARDER_IP}", start=mark)
    assert f"BAN IN FORCE: ip {FORWARDER_IP} (abuse report)" in host.log_since(mark)

    assert bms(host, "ban", "del", FORWARDER_IP) == f"ban of ip {FORWARDER_IP} lifted\n"
    mid, t = send(host, FORWARDER_IP, RELAY_HELO, sender, "unbanned")
    accepted(host, mid, t)

    bms(host, "ban", "add", "*.pass.test", "--days", "1")
    bms(host, "ban", "add", "pass.test")
    _, t = send(host, FORWARDER_IP, RELAY_HELO, sender, "banned-domain")
    refused_at_data(t, "Mail from pass.test is not accepted here.")
    host.bms.wait_log("REJECT: banned domain pass.test", start=mark)
    assert "BAN IN FORCE: domain pass.test (manual)" in host.log_since(mark)
    bms(host, "ban", "del", "pass.test")
    _, t = send(host, FORWARDER_IP, RELAY_HELO, "x@mail.pass.test", "banned-suffix")
    refused_at_data(t, "Mail from mail.pass.test is not accepted here.")
    host.bms.wait_log("BAN IN FORCE: domain *.pass.test (manual)", start=mark)
    bms(host, "ban", "del", "*.pass.test")
    mid, t = send(host, FORWARDER_IP, RELAY_HELO, sender, "domain-unbanned")
    accepted(host, mid, t)
    assert bms_json(host, "ban", "list") == []


def test_blacklist_refuses_the_sender_until_deleted(host: BmsHost) -> None:
    sender = "pest@pass.test"
    mark = host.log_mark()
    bms(host, "blacklist", "add", sender)
    _, t = send(host, FORWARDER_IP, RELAY_HELO, sender, "blacklisted")
    refused_at_data(t, "Sender email local blacklist.")
    host.bms.wait_log(f"REJECT: blacklist {sender}", start=mark)
    bms(host, "blacklist", "del", sender)
    mid, t = send(host, FORWARDER_IP, RELAY_HELO, sender, "unblacklisted")
    accepted(host, mid, t)


def test_whitelist_skips_greylisting_until_deleted(host: BmsHost) -> None:
    sender = "friend@neutral.test"
    _, t = send(host, CLIENT_IP, CLIENT_PTR, sender, "not-yet-white")
    greylisted(t)

    mark = host.log_mark()
    bms(host, "whitelist", "add", "@neutral.test")
    assert bms_json(host, "whitelist", "list") == [{"entry": "@neutral.test", "until": None}]
    mid, t = send(host, CLIENT_IP, CLIENT_PTR, sender, "white")
    accepted(host, mid, t)
    host.bms.wait_log(f"PROBATION {sender}", start=mark)  # listed, SPF not pass

    bms(host, "whitelist", "del", "@neutral.test")
    _, t = send(host, CLIENT_IP, CLIENT_PTR, sender, "white-again")
    greylisted(t)


def test_greylist_pass_and_flush(host: BmsHost) -> None:
    sender = "waiting@neutral.test"
    _, t = send(host, CLIENT_IP, CLIENT_PTR, sender, "grey")
    greylisted(t)
    found = bms_json(host, "greylist", "list", "--sender", sender)
    assert [(e["origin"], e["sender"], e["recipient"], e["passed"]) for e in found] == [
        (GREY_NET, sender, RCPT, False)]

    mark = host.log_mark()
    assert bms(host, "greylist", "pass", "--sender", sender, "--client", CLIENT_IP) == (
        "greylist: 1 triplet passed\n")
    mid, t = send(host, CLIENT_IP, CLIENT_PTR, sender, "grey-passed")
    accepted(host, mid, t)
    host.bms.wait_log(f"GREYLIST PASSED: {GREY_NET} {sender} {RCPT}", start=mark)
    assert bms_json(host, "greylist", "list", "--sender", sender)[0]["passed"] is True

    assert bms(host, "greylist", "flush", "--sender", sender) == "greylist: 1 triplet flushed\n"
    _, t = send(host, CLIENT_IP, CLIENT_PTR, sender, "grey-flushed")
    greylisted(t)
