"""Option negotiation arithmetic (PROTOCOL.md §5.4, PYMILTER_API.md §6)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from milters import shapes

import Milter
from Milter.protocol import commands as cmd
from Milter.protocol import constants as C
from Milter.protocol import replies as R
from Milter.protocol.errors import NegotiationRefused
from Milter.protocol.negotiation import Offer, settle

from .helpers import PROPERTY, Mta, UseFactory, h, inet

CONTINUE, ALL_OPTS = C.SMFIS_CONTINUE, C.SMFIS_ALL_OPTS
FAKE_NR = 0x000FF080
NO_BITS = 0x37F  # every P_NO* bit


def _classes() -> dict[str, type[Milter.Base]]:
    """Fresh classes each call: protocol_mask() caches on the class."""
    return {"eom-only": shapes.eom_only(), "template": shapes.template(),
            "sample": shapes.sample()}


# (class, protocol_mask, requested protocol when the MTA offers 0x1FFFFF) — §6.1.
WORKED = [("eom-only", 0x1FF880, 0x77F), ("template", None, 0xC9780), ("sample", None, 0x7700)]


@pytest.mark.parametrize(("name", "mask", "requested"), WORKED, ids=[w[0] for w in WORKED])
def test_worked_examples(name: str, mask: int | None, requested: int) -> None:
    klass = _classes()[name]
    if mask is not None:
        assert klass.protocol_mask() == mask
    offer = Offer(6, 0x1FF, 0x1FFFFF)
    opts = offer.app_options()
    assert opts == [0x1FF, 0x1FFFFF, 0, 0]  # the NR bits are all in 0x1FFFFF already
    assert opts[1] & ~klass.protocol_mask() == requested
    agreement = settle(offer, CONTINUE, [0x1FF, requested, 0, 0])
    assert agreement.app_protocol == requested
    assert agreement.mta_protocol == requested  # all offered: nothing emulated
    assert agreement.actions == 0x1FF
    assert agreement.version == 6


@pytest.mark.parametrize(("name", "mask", "requested"), WORKED, ids=[w[0] for w in WORKED])
def test_worked_examples_through_a_context(use_factory: UseFactory, name: str, mask: int | None,
                                           requested: int) -> None:
    klass = _classes()[name]
    use_factory(klass)
    mta = Mta()
    reply = mta.optneg()
    assert (reply.version, reply.actions, reply.protocol) == (6, 0x1FF, requested)
    assert mta.ctx.getpriv()._protocol == requested
    assert mta.ctx.getpriv()._actions == 0x1FF
    if name == "sample":
        assert reply.symlists == ((C.SMFIM_ENVFROM, b"{auth_authen}"),)


def test_base_subclass_overriding_only_eom_is_0x77f(use_factory: UseFactory) -> None:
    use_factory(_classes()["eom-only"])
    mta = Mta()
    assert mta.raw(cmd.OptNeg(6, 0x1FF, 0x1FFFFF)) == h(
        "00 00 00 0d 4f 00 00 00 06 00 00 01 ff 00 00 07 7f")


def test_postfix_v2_template_trace_d_arithmetic() -> None:
    """§10.1 D: offer 2/0x1FF/0x7F; the app sees 0xFF0FF and keeps 0xC9080;
    every NR bit is emulated, so 0 goes to the MTA."""
    klass = _classes()["template"]
    offer = Offer.from_command(cmd.OptNeg(2, 0x1FF, 0x7F))
    opts = offer.app_options()
    assert opts == [0x1FF, 0xFF0FF, 0, 0]
    app = opts[1] & ~klass.protocol_mask()
    assert app == 0xC9080
    agreement = settle(offer, CONTINUE, [0x1FF, app, 0, 0])
    assert agreement.version == 2
    assert agreement.app_protocol == 0xC9080
    assert agreement.mta_protocol == 0
    assert agreement.reply() == R.OptNegReply(2, 0x1FF, 0)
    for nr in (C.SMFIP_NR_CONN, C.SMFIP_NR_RCPT, C.SMFIP_NR_HDR, C.SMFIP_NR_EOH,
               C.SMFIP_NR_BODY):
        assert agreement.no_reply(nr) and agreement.mta_waits(nr)
    assert not agreement.no_reply(C.SMFIP_NR_HELO)


def test_nodata_and_nounknown_dropped_when_not_offered() -> None:
    offer = Offer(3, 0x1FF, 0x17F)  # Postfix milter_protocol = 3: no NODATA
    agreement = settle(offer, CONTINUE, [0x1FF, C.SMFIP_NODATA | C.SMFIP_NOUNKNOWN | 0x7F, 0, 0])
    assert agreement.mta_protocol == C.SMFIP_NOUNKNOWN | 0x7F
    assert agreement.app_protocol & C.SMFIP_NODATA
    offer = Offer(2, 0x1FF, 0x7F)
    agreement = settle(offer, CONTINUE, [0x1FF, C.SMFIP_NODATA | C.SMFIP_NOUNKNOWN, 0, 0])
    assert agreement.mta_protocol == 0


def test_all_opts() -> None:
    offer = Offer(6, 0x1FF, 0x1FFFFF)
    agreement = settle(offer, ALL_OPTS, [0, 0, 0, 0], ((0, b"j"),),
                       unregistered=C.SMFIP_NOUNKNOWN | C.SMFIP_NODATA)
    assert agreement.actions == 0x1FF
    assert agreement.app_protocol == C.SMFIP_NOUNKNOWN | C.SMFIP_NODATA | C.SMFIP_SKIP
    assert agreement.mta_protocol == agreement.app_protocol
    assert agreement.symlists == ()
    # SKIP only when offered.
    agreement = settle(Offer(2, 0xF, 0x7F), ALL_OPTS, [0, 0, 0, 0])
    assert (agreement.actions, agreement.app_protocol, agreement.mta_protocol) == (0xF, 0, 0)


def test_offer_defaults_like_libmilter() -> None:
    offer = Offer.from_command(cmd.OptNeg(6, 0, 0))
    assert (offer.actions, offer.protocol) == (C.SMFI_V1_ACTS, C.SMFI_V1_PROT)
    offer = Offer.from_command(cmd.OptNeg(6, 0x1FF, 0x1FFFFF | C.SMFIP_MDS_256K | 0x40000000))
    assert offer.protocol == 0x1FFFFF  # internal bits masked out


@pytest.mark.parametrize(("mta", "ours"), [(2, 2), (3, 3), (4, 4), (6, 6), (7, 6), (1 << 24, 6)])
def test_reply_version_is_min_of_6_and_mta(mta: int, ours: int) -> None:
    assert settle(Offer(mta, 0x1FF, 0x7F), CONTINUE, [0, 0, 0, 0]).version == ours


@pytest.mark.parametrize("result", [C.SMFIS_REJECT, C.SMFIS_TEMPFAIL, C.SMFIS_ACCEPT,
                                    C.SMFIS_DISCARD, C.SMFIS_NOREPLY, C.SMFIS_SKIP, 99])
def test_refused_on_any_other_result(result: int) -> None:
    with pytest.raises(NegotiationRefused):
        settle(Offer(6, 0x1FF, 0x1FFFFF), result, [0x1FF, 0, 0, 0])


@pytest.mark.parametrize("opts", [[], [0x1FF], [0x1FF, None, 0, 0], [0x1FF, "x", 0, 0]])
def test_refused_when_opts_unusable(opts: list[Any]) -> None:
    with pytest.raises(NegotiationRefused):
        settle(Offer(6, 0x1FF, 0x1FFFFF), CONTINUE, opts)


def test_refused_when_actions_not_offered() -> None:
    with pytest.raises(NegotiationRefused):
        settle(Offer(6, 0x0F, 0x1FFFFF), CONTINUE, [0x1F, 0, 0, 0])


@pytest.mark.parametrize("bit", [C.SMFIP_RCPT_REJ, C.SMFIP_SKIP, C.SMFIP_HDR_LEADSPC,
                                 C.SMFIP_NOCONNECT])
def test_refused_when_protocol_not_offered(bit: int) -> None:
    offer = Offer(6, 0x1FF, 0x1FFFFF & ~bit)
    with pytest.raises(NegotiationRefused):
        settle(offer, CONTINUE, [0x1FF, bit, 0, 0])


def test_mds_bits_never_echoed() -> None:
    offer = Offer.from_command(cmd.OptNeg(6, 0x1FF, 0x1FFFFF | C.SMFIP_MDS_1M))
    agreement = settle(offer, CONTINUE, [0x1FF, C.SMFIP_MDS_1M | C.SMFIP_SKIP, 0, 0])
    assert agreement.mta_protocol == C.SMFIP_SKIP


def test_symlists_only_with_setsymlist_action() -> None:
    offer = Offer(6, 0x1FF, 0x1FFFFF)
    lists = ((2, b"{auth_authen} i"), (0, b"j"))
    assert settle(offer, CONTINUE, [0x1FF, 0, 0, 0], lists).symlists == lists
    assert settle(offer, CONTINUE, [0x0FF, 0, 0, 0], lists).symlists == ()


@PROPERTY
@given(st.integers(2, 6), st.integers(0, 0x1FF), st.integers(0, 0x1FFFFF),
       st.integers(0, 0x1FF), st.integers(0, 0x1FFFFF | FAKE_NR))
def test_settle_invariants(version: int, offered_act: int, offered_prot: int,
                           req_act: int, req_prot: int) -> None:
    """Whatever the request: what goes to the MTA is a subset of its offer, and
    the NR bits withheld from the MTA are exactly those it could not do."""
    offer = Offer.from_command(cmd.OptNeg(version, offered_act, offered_prot))
    try:
        agreement = settle(offer, CONTINUE, [req_act, req_prot, 0, 0])
    except NegotiationRefused:
        removable = FAKE_NR | C.SMFIP_NODATA | C.SMFIP_NOUNKNOWN
        assert (req_act & ~offer.actions) or (req_prot & ~removable & ~offer.protocol)
        return
    assert agreement.mta_protocol & ~offer.protocol == 0
    assert agreement.actions == req_act
    assert agreement.app_protocol == req_prot
    assert agreement.mta_protocol == req_prot & ~(
        (FAKE_NR | C.SMFIP_NODATA | C.SMFIP_NOUNKNOWN) & ~offer.protocol)


# --- through a Context ---------------------------------------------------------------

class _Refuser(Milter.Base):
    closed = 0

    def negotiate(self, opts: list[int]) -> int:
        return Milter.REJECT

    def close(self) -> int:
        type(self).closed += 1
        return Milter.CONTINUE


def test_refusal_sends_nothing_and_closes_once(use_factory: UseFactory) -> None:
    _Refuser.closed = 0
    use_factory(_Refuser)
    mta = Mta()
    assert mta.raw(cmd.OptNeg(6, 0x1FF, 0x1FFFFF), inet()) == b""
    assert mta.ctx.closed
    assert _Refuser.closed == 1
    mta.eof()
    assert _Refuser.closed == 1


@pytest.mark.parametrize("payload", [b"\0\0\0\x01\0\0\x01\xff\0\x1f\xff\xff",  # version 1
                                     b"\0\0\0\x06\0\0\x01\xff\0\x1f\xff"])  # 11 bytes
def test_bad_offer_is_refused_without_reply(use_factory: UseFactory, payload: bytes) -> None:
    use_factory(_classes()["eom-only"])
    mta = Mta()
    assert mta.raw(b"\0\0\0" + bytes((len(payload) + 1,)) + b"O" + payload) == b""
    assert mta.ctx.closed


def test_symlist_without_setsymlist_action_falls_back_to_all_opts(use_factory: UseFactory) -> None:
    """Base.negotiate: setsymlist raises DisabledAction, so ALL_OPTS (§6.2)."""
    use_factory(_classes()["sample"])
    mta = Mta()
    reply = mta.optneg(actions=0xFF)
    assert (reply.actions, reply.protocol, reply.symlists) == (0xFF, C.SMFIP_SKIP, ())
    assert mta.ctx.getpriv()._protocol == 0


def test_extra_optneg_bytes_ignored(use_factory: UseFactory) -> None:
    use_factory(_classes()["eom-only"])
    mta = Mta()
    extra = cmd.OptNeg(6, 0x1FF, 0x1FFFFF).encode()[5:] + b"junk"
    replies = mta.send(b"\0\0\0\x11O" + extra)
    assert replies == [R.OptNegReply(6, 0x1FF, 0x77F)]
