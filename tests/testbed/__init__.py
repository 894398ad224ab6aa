"""A test bed of real MTAs and milters (TESTBED.md), for end-to-end tests and benchmarks.

* :mod:`.postfix`: a private Postfix instance (:class:`Postfix`);
* :mod:`.sendmail`: sendmail 8.17, unpacked, driven with ``-bs`` or ``-bD``
  (:class:`Sendmail`), and its queue files read back;
* :mod:`.milter`: a ``Milter.Base`` factory served by ``Milter.server`` in a
  thread (:func:`start_milter`);
* :mod:`.smtp`: the SMTP client (:class:`SmtpClient`);
* :mod:`.mail`: :class:`StoredMessage`, what both MTAs' stores parse into.

Rule one (TESTBED.md): no packet may leave the machine.  MTAs may only be run
inside the private network namespace ``./test.sh`` sets up
(:func:`in_private_netns`; ``scripts/lib.sh``'s ``run_in_netns`` for other
scripts).  Import this package with ``tests/`` on ``sys.path``
(``import testbed``); a conftest.py gets the e2e skip hook and fixtures with
``from testbed.pytest_plugin import *``.

Example (a benchmark or a policy test)::

    with running_milter(MyMilter, "inet:0@127.0.0.1") as milter, \
            Postfix(milters=milter.postfix_spec) as postfix:
        smtp = postfix.smtp()
        smtp.ehlo("client.example.test")
        mid, msg = make_message(body="hello\n")
        t = smtp.transaction("a@example.test", ["b@example.test"], msg)
        smtp.quit()
        delivered = postfix.message(mid)      # waits until the queue is empty
        assert delivered.get("X-Checked") == "yes"

    with Sendmail(milter=milter.sendmail_spec) as sendmail:
        smtp = sendmail.bs_session()          # or sendmail.start_daemon().smtp()
        ...
        queued = sendmail.queued(t.queue_id)  # qf/df files, parsed
"""

from __future__ import annotations

import os

from .mail import StoredMessage, make_message, new_message_id, split_headers
from .milter import RunningMilter, free_port, free_ports, running_milter, start_milter
from .postfix import Postfix, PostfixError
from .sendmail import QueueFile, Sendmail, SendmailError
from .smtp import Reply, SmtpClient, Transaction
from .waiting import WaitTimeout, wait_for

SKIP_REASON = ("end-to-end tests run real MTAs only inside a private network namespace: "
               "run ./test.sh")


def in_private_netns() -> bool:
    """True inside the loopback-only namespace of ``scripts/lib.sh run_in_netns``."""
    return os.environ.get("BMS_NETNS") == "1"


__all__ = [
    "SKIP_REASON",
    "Postfix",
    "PostfixError",
    "QueueFile",
    "Reply",
    "RunningMilter",
    "Sendmail",
    "SendmailError",
    "SmtpClient",
    "StoredMessage",
    "Transaction",
    "WaitTimeout",
    "free_port",
    "free_ports",
    "in_private_netns",
    "make_message",
    "new_message_id",
    "running_milter",
    "split_headers",
    "start_milter",
    "wait_for",
]
