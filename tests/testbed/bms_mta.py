"""The module's bms daemon behind either MTA, for tests/e2e/test_bms_*.py: the
``mta`` fixture runs a test once through Postfix and once through sendmail
``-bD``, using the ``postfix`` and ``sendmail`` fixtures the test module
defines (module scope, pointed at its own bms daemon)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from .bmsd import BmsDaemon
from .mail import StoredMessage
from .postfix import Postfix
from .sendmail import Sendmail
from .smtp import SmtpClient, Transaction


@dataclass
class Mta:
    """One MTA in front of the module's bms daemon: the module defines the
    ``postfix`` and ``sendmail`` fixtures (module scope) that ``mta`` uses."""

    name: str
    connect: Callable[[str], SmtpClient]  # an SMTP session from this source address
    stored: Callable[[Transaction, str], StoredMessage]


@pytest.fixture(scope="module")
def postfix(bms: BmsDaemon) -> Iterator[Postfix]:
    """Postfix in front of the module's ``bms`` daemon (import it into the module)."""
    with Postfix(milters=bms.postfix_spec) as pf:
        yield pf


@pytest.fixture(scope="module")
def sendmail(bms: BmsDaemon) -> Iterator[Sendmail]:
    """sendmail -bD in front of the module's ``bms`` daemon (import it into the module)."""
    with Sendmail(milter=bms.libmilter_spec, milter_name="bms",
                  milter_timeouts="C:10s;S:20s;R:30s;E:60s") as sm:
        sm.start_daemon()
        yield sm


@pytest.fixture(params=["postfix", "sendmail"])
def mta(request: pytest.FixtureRequest) -> Iterator[Mta]:
    clients: list[SmtpClient] = []
    if request.param == "postfix":
        pf: Postfix = request.getfixturevalue("postfix")
        port = pf.port

        def stored(t: Transaction, mid: str) -> StoredMessage:
            return pf.message(mid)
    else:
        sm: Sendmail = request.getfixturevalue("sendmail")
        port = sm.port

        def stored(t: Transaction, mid: str) -> StoredMessage:
            assert t.queue_id, t
            return sm.queued(t.queue_id)

    def connect(source: str) -> SmtpClient:
        client = SmtpClient("127.0.0.1", port, source_address=(source, 0))
        clients.append(client)
        return client

    yield Mta(request.param, connect, stored)
    for c in clients:
        c.close_politely()
