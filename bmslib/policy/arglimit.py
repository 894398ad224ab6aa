"""The cap on HELO and MAIL/RCPT argument lengths (``[milter]
max_argument_length``, issue 13).

A HELO name is looked at again for every MAIL (SPF, the HELO policy, the
headers we add), so a HELO of 100 KB made each later MAIL on the connection
cost about 25 times the normal; an argument over the cap is refused at its
command instead, and per-command work stays linear in a bounded size.  The
MTAs' own SMTP command line limit is about 2048 bytes, so only a broken or
hostile MTA connection ever meets the cap.
"""

from __future__ import annotations

from collections.abc import Sequence

from .decision import CONTINUE, Decision

TAG = "argument too long"


def check_length(command: str, args: Sequence[str], limit: int) -> Decision:
    """501 5.5.4 when ``args`` (with a separating space each) exceed
    ``limit`` characters; ``limit`` 0: no cap."""
    size = sum(len(a) for a in args) + max(0, len(args) - 1)
    if not limit or size <= limit:
        return CONTINUE
    return Decision.reject(TAG, f"{command} argument too long.", code="501", xcode="5.5.4",
                           log=f"{command} argument of {size} characters (limit {limit})")
