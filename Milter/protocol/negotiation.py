"""Option negotiation arithmetic, exactly as libmilter's ``st_optionneg`` does it
(PROTOCOL.md §5.4).

The application sees the MTA's offer with every "no reply" bit added (we can
emulate those), asks for what it wants, and :func:`settle` turns that into
the bits sent to the MTA, remembering which NR bits we must fake.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import constants as C
from .commands import OptNeg
from .errors import NegotiationRefused
from .replies import OptNegReply


@dataclass(frozen=True, slots=True)
class Offer:
    """The MTA's offer after libmilter's defaults: 0 actions means V1 actions,
    0 protocol means V1 protocol, and the internal bits are masked out."""

    version: int
    actions: int
    protocol: int

    @classmethod
    def from_command(cls, cmd: OptNeg) -> Offer:
        actions = cmd.actions or C.SMFI_V1_ACTS
        protocol = (cmd.protocol or C.SMFI_V1_PROT) & ~C.SMFI_INTERNAL
        return cls(cmd.version, actions, protocol)

    def app_options(self) -> list[int]:
        """The mutable ``[actions, protocol, 0, 0]`` that ``negotiate()`` receives."""
        return [self.actions, self.protocol | C.SMFIP_FAKE_NR, 0, 0]


@dataclass(frozen=True, slots=True)
class Agreement:
    """The outcome of negotiation for one session.

    ``app_protocol``: what the application asked for (NR bits decide whether
    its results are forwarded).  ``mta_protocol``: what we told the MTA.
    ``mta_offer``: what the MTA offered (NR bits offered but not sent are
    emulated by writing CONTINUE ourselves).
    """

    version: int
    actions: int
    app_protocol: int
    mta_protocol: int
    mta_offer: int
    symlists: tuple[tuple[int, bytes], ...] = ()

    def reply(self) -> OptNegReply:
        return OptNegReply(self.version, self.actions, self.mta_protocol, self.symlists)

    def no_reply(self, nr_bit: int) -> bool:
        """The application promised not to reply at this stage."""
        return bool(self.app_protocol & nr_bit)

    def mta_waits(self, nr_bit: int) -> bool:
        """The MTA reads a reply at this stage (it was not told NR)."""
        return not self.mta_protocol & nr_bit


def settle(
    offer: Offer,
    result: int,
    opts: list[int],
    symlists: tuple[tuple[int, bytes], ...] = (),
    unregistered: int = 0,
) -> Agreement:
    """Turn the application's answer into the session's agreement.

    ``result`` is what ``negotiate()`` returned: CONTINUE uses ``opts``;
    ALL_OPTS takes every offered action, the NO bits of callbacks that are not
    registered (``unregistered``) and SKIP if offered; anything else refuses.
    """
    version = min(C.SMFI_PROT_VERSION, offer.version)
    if result == C.SMFIS_ALL_OPTS:
        actions = offer.actions
        app_protocol = unregistered
        if offer.protocol & C.SMFIP_SKIP:
            app_protocol |= C.SMFIP_SKIP
        symlists = ()
    elif result == C.SMFIS_CONTINUE:
        try:
            actions = int(opts[0]) & 0xFFFFFFFF
            app_protocol = int(opts[1]) & 0xFFFFFFFF
        except (IndexError, TypeError, ValueError):
            # negotiate() left opts unusable: refuse, like any other bad answer (§5.4).
            raise NegotiationRefused(f"negotiate() left unusable options {opts!r}") from None
    else:
        raise NegotiationRefused(f"negotiate() returned {result}")
    to_mta = app_protocol
    # NR bits the MTA cannot do are emulated, so they are not sent.
    to_mta &= ~(C.SMFIP_FAKE_NR & ~offer.protocol)
    # Older MTAs know no NODATA / NOUNKNOWN: drop those requests.
    if not offer.protocol & C.SMFIP_NODATA:
        to_mta &= ~C.SMFIP_NODATA
    if not offer.protocol & C.SMFIP_NOUNKNOWN:
        to_mta &= ~C.SMFIP_NOUNKNOWN
    to_mta &= ~C.SMFI_INTERNAL  # we never echo MDS sizes (§5.5)
    if actions & ~offer.actions:
        raise NegotiationRefused(
            f"actions {actions:#x} asked for, MTA offers only {offer.actions:#x}"
        )
    if to_mta & ~offer.protocol:
        raise NegotiationRefused(
            f"protocol {to_mta:#x} asked for, MTA offers only {offer.protocol:#x}"
        )
    if not actions & C.SMFIF_SETSYMLIST:
        symlists = ()
    return Agreement(version, actions, app_protocol, to_mta, offer.protocol, symlists)
