"""Fixtures of the end-to-end tier: one feature milter per socket kind, one
Postfix instance and two sendmail configurations for the whole session, and
the six ways an SMTP client reaches the milter (:class:`MtaPath`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from milters.feature_milter import FeatureMilter
from testbed import Postfix, Sendmail, SmtpClient, StoredMessage, Transaction, start_milter
from testbed.bms_mta import mta  # noqa: F401 - the bms daemon behind either MTA
from testbed.milter import RunningMilter
from testbed.pytest_plugin import *  # noqa: F403 - the e2e skip hook and fixtures
from testbed.pytest_plugin import require_netns

_helo_counter = itertools.count(1)


@pytest.fixture(scope="session")
def feature_milters() -> Iterator[dict[str, RunningMilter]]:
    """The feature milter on an inet socket (any free port) and on a unix socket."""
    require_netns()
    inet = start_milter(FeatureMilter, "inet:0@127.0.0.1", timeout=60)
    try:
        unix = start_milter(FeatureMilter, "unix", timeout=60)
    except BaseException:
        inet.stop()
        raise
    yield {"inet": inet, "unix": unix}
    unix.stop()
    inet.stop()


@dataclass
class PostfixBed:
    postfix: Postfix
    # smtpd port per listener: "inet" and "unix" (the milter socket kind, protocol
    # 6), "v2" and "v4" (the inet milter with milter_protocol 2 or 4).
    ports: dict[str, int]


@pytest.fixture(scope="session")
def postfix(feature_milters: dict[str, RunningMilter]) -> Iterator[PostfixBed]:
    """One Postfix for the session: the main listener (127.0.0.1 and ::1) uses the
    inet milter, a second listener the unix one; two more speak milter protocol
    versions 2 and 4 to the inet milter."""
    inet = feature_milters["inet"].postfix_spec
    pf = Postfix(milters=inet, ipv6=True)
    ports = {"inet": pf.port,
             "unix": pf.add_listener(smtpd_milters=feature_milters["unix"].postfix_spec).port}
    for version in (2, 4):
        listener = pf.add_listener(smtpd_milters=inet, milter_protocol=str(version))
        ports[f"v{version}"] = listener.port
    with pf:
        yield PostfixBed(pf, ports)


@pytest.fixture(scope="session")
def sendmails(feature_milters: dict[str, RunningMilter]) -> Iterator[dict[str, Sendmail]]:
    """A sendmail configuration per milter socket kind (daemons start on first use)."""
    made = {kind: Sendmail(milter=m.sendmail_spec, ipv6=True)
            for kind, m in feature_milters.items()}
    try:
        yield made
    finally:
        for sm in made.values():
            sm.cleanup()


@dataclass
class MtaPath:
    """One way from an SMTP client through an MTA to the feature milter."""

    name: str
    mta: str  # "postfix" or "sendmail"
    mode: str  # "smtpd", "bs" (sendmail -bs) or "bD" (sendmail daemon)
    socket: str  # the milter socket: "inet" or "unix"
    _connect: Callable[[str], SmtpClient]
    _stored: Callable[[Transaction, str], StoredMessage]
    _absent: Callable[[str], bool]
    protocol: int = 6  # the milter protocol version the MTA speaks
    clients: list[SmtpClient] = field(default_factory=list)

    @property
    def has_tcp_client(self) -> bool:
        return self.mode != "bs"

    def connect(self, helo: str | None = None, host: str = "127.0.0.1") -> SmtpClient:
        """A new SMTP session, EHLO sent (a unique name unless ``helo`` is given)."""
        client = self._connect(host)
        self.clients.append(client)
        code, msg = client.ehlo(helo or new_helo())
        assert code == 250, (code, msg)
        return client

    def stored(self, t: Transaction, message_id: str) -> StoredMessage:
        """The message the transaction queued, as the MTA stored (or delivered) it."""
        assert t.data is not None and t.data.code == 250, t
        return self._stored(t, message_id)

    def absent(self, message_id: str) -> bool:
        """True once the MTA has finished and holds no message with this ID."""
        return self._absent(message_id)

    def close(self) -> None:
        for c in self.clients:
            c.close_politely()
        self.clients.clear()


def new_helo() -> str:
    return f"client{next(_helo_counter)}.example.test"


PATHS = ["postfix-inet", "postfix-unix", "sendmail-bs-inet", "sendmail-bs-unix",
         "sendmail-bD-inet", "sendmail-bD-unix"]
# Also accepted by the "path" fixture (indirect parametrization), not in PATHS:
# "postfix-v2" and "postfix-v4", Postfix speaking milter protocol 2 or 4.


def _postfix_path(bed: PostfixBed, kind: str) -> MtaPath:
    pf = bed.postfix

    def absent(mid: str) -> bool:
        pf.wait_idle()
        return all(m.message_id != mid for m in pf.delivered())

    version = int(kind[1:]) if kind.startswith("v") else 6
    return MtaPath(f"postfix-{kind}", "postfix", "smtpd", "inet" if version != 6 else kind,
                   lambda host: pf.smtp(host, bed.ports[kind]),
                   lambda t, mid: pf.message(mid), absent, protocol=version)


def _sendmail_path(sm: Sendmail, mode: str, kind: str) -> MtaPath:
    def connect(host: str) -> SmtpClient:
        if mode == "bs":
            assert host == "127.0.0.1", "sendmail -bs has no TCP client"
            return sm.bs_session()
        sm.start_daemon()
        return sm.smtp(host)

    def stored(t: Transaction, mid: str) -> StoredMessage:
        assert t.queue_id, t
        m = sm.queued(t.queue_id)
        assert m.message_id == mid, (m.message_id, mid)
        return m

    def absent(mid: str) -> bool:
        return all(q.stored().message_id != mid for q in sm.queue_files())

    return MtaPath(f"sendmail-{mode}-{kind}", "sendmail", mode, kind, connect, stored, absent)


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> Iterator[MtaPath]:
    """Each test runs once per MTA, mode and milter socket kind."""
    name: str = request.param
    parts = name.split("-")
    if parts[0] == "postfix":
        p = _postfix_path(request.getfixturevalue("postfix"), parts[1])
    else:
        sendmails = request.getfixturevalue("sendmails")
        p = _sendmail_path(sendmails[parts[2]], parts[1], parts[2])
    yield p
    p.close()

