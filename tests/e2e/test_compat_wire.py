"""The pymilter-style CompatMilter, unchanged, through real Postfix and sendmail.

The unit tier runs the same class under ``TestCtx`` and ``TestBase``
(tests/unit/test_compat.py); here it serves real MTAs, which completes
"runs unchanged under TestCtx, TestBase and over the wire".
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from milters.compat_milter import REJECT_MSG_LINES, REJECT_RCPT_LINES, CompatMilter
from testbed import Postfix, Sendmail, SmtpClient, StoredMessage, Transaction, make_message
from testbed.milter import RunningMilter, start_milter
from testbed.pytest_plugin import require_netns

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def compat_milter() -> Iterator[RunningMilter]:
    require_netns()
    running = start_milter(CompatMilter, "inet:0@127.0.0.1", timeout=60)
    yield running
    running.stop()


class Bed:
    def __init__(self, mta: str, postfix: Postfix | None, sendmail: Sendmail | None) -> None:
        self.mta, self.postfix, self.sendmail = mta, postfix, sendmail

    def client(self) -> SmtpClient:
        client = self.postfix.smtp() if self.postfix else self.sendmail.smtp()  # type: ignore
        code, _ = client.ehlo("compat.example.test")
        assert code == 250
        return client

    def stored(self, t: Transaction, mid: str) -> StoredMessage:
        if self.postfix is not None:
            return self.postfix.message(mid)
        assert self.sendmail is not None and t.queue_id
        return self.sendmail.queued(t.queue_id)


@pytest.fixture(scope="module", params=["postfix", "sendmail"])
def bed(request: pytest.FixtureRequest, compat_milter: RunningMilter) -> Iterator[Bed]:
    if request.param == "postfix":
        # The milter adds <bcc@example.com>: deliver that domain too.
        domains = {"virtual_mailbox_domains": "example.test example.com"}
        with Postfix(milters=compat_milter.postfix_spec, main_cf=domains) as pf:
            yield Bed("postfix", pf, None)
    else:
        sm = Sendmail(milter=compat_milter.sendmail_spec)
        try:
            sm.start_daemon()
            yield Bed("sendmail", None, sm)
        finally:
            sm.cleanup()


def test_every_action_of_the_compat_milter(bed: Bed) -> None:
    client = bed.client()
    mid, msg = make_message(subject="hello", body="please REPLACE me\n",
                            headers=[("X-Remove", "going away"), ("X-Keep", "stays")])
    t = client.transaction("change@example.net",
                           ["keep@example.test", "drop@example.test", "reject@example.test"],
                           msg)
    client.close_politely()
    # Multi-line setreply at RCPT: both lines reach the client, the transaction goes on.
    refused = t.rcpt["reject@example.test"]
    assert refused.code == 550
    assert all(line in refused.text for line in REJECT_RCPT_LINES), refused
    assert t.data is not None and t.data.code == 250, t

    m = bed.stored(t, mid)
    assert m.get("X-Compat") == "checked"  # addheader
    assert m.get("X-Compat-Top") == "first"  # addheader with index 0
    assert m.index("X-Compat-Top") < m.index("From")
    assert m.get("X-Remove") is None  # chgheader(..., 1, "") deletes
    assert m.get("X-Keep") == "stays"
    assert m.text == "please REPLACED me\n"  # replacebody
    assert m.sender == "changed@example.net"  # chgfrom
    assert sorted(m.recipients) == ["bcc@example.com", "keep@example.test"]  # addrcpt/delrcpt


def test_message_reject_with_three_lines(bed: Bed) -> None:
    client = bed.client()
    _mid, msg = make_message(subject="please reject this")
    t = client.transaction("someone@example.net", ["keep@example.test"], msg)
    client.close_politely()
    assert t.data is not None and t.data.code == 550
    assert "message refused" in t.data.text and "by the compat milter" in t.data.text
    # setreply needs "%%" (a lone % makes sendmail drop the text); both MTAs
    # (sendmail 8.17, Postfix 3.7) show it as one "%".
    assert "100% sure" in t.data.text and "%%" not in t.data.text
    assert REJECT_MSG_LINES[0] in t.data.text
