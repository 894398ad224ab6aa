"""End-of-message recipient plan: wiretap, discard, smart aliases, hide_path."""

from __future__ import annotations

import pytest

from bmslib.policy.address import Address, parse_address
from bmslib.policy.recipients import (
    RecipientPlan,
    RecipientSettings,
    SmartAlias,
    address_set,
    plan_recipients,
    smart_aliases_from,
)


def addrs(*raw: str) -> list[Address]:
    return [parse_address(r) for r in raw]


SPY = parse_address("<spy@corp.example>")
BOSS = parse_address("<Boss@Corp.Example>")
ALICE = parse_address("<alice@out.example>")


# --- config helpers ----------------------------------------------------------------------

def test_address_set() -> None:
    assert address_set(["Joe@Example.COM", "@Whole.Example", "<ann@example.com>", " ",
                        "local"], False) == {
        "example.com": frozenset({"joe", "ann"}),
        "whole.example": frozenset({""}),
        "": frozenset({"local"}),
    }
    assert address_set(["Joe@Example.COM"], True) == {"example.com": frozenset({"Joe"})}


def test_smart_aliases_from() -> None:
    aliases = smart_aliases_from({
        "team": ("boss@corp.example", "<team@corp.example>", "a@corp.example", "b@corp.example"),
        "joe": ("@out.example", "joe@corp.example"),
    })
    assert aliases == (
        SmartAlias("team", "boss@corp.example", "team@corp.example",
                   ("a@corp.example", "b@corp.example")),
        SmartAlias("joe", "@out.example", "joe@corp.example", ("joe",)),  # dest = the name
    )


@pytest.mark.parametrize("fields", [(), ("only@one.example",), ("a@b.example", " ")])
def test_malformed_smart_alias(fields: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="malformed smart alias 'bad'") as err:
        smart_aliases_from({"bad": fields})
    assert "\n" not in str(err.value)


# --- nothing to do -----------------------------------------------------------------------

def test_no_settings_no_changes() -> None:
    plan = plan_recipients(RecipientSettings(), ALICE, addrs("<bob@corp.example>"))
    assert plan == RecipientPlan((), (), None, False, ())
    assert plan.empty


# --- wiretap -----------------------------------------------------------------------------

def test_wiretap_blind() -> None:
    s = RecipientSettings(wiretap_users=address_set(["spy@corp.example"], False),
                          wiretap_dest="<tap@corp.example>")
    plan = plan_recipients(s, SPY, addrs("<x@out.example>"))
    assert plan.add == ("<tap@corp.example>",)
    assert plan.delete == ()
    assert plan.cc is None
    assert not plan.empty
    assert plan.log == ("WIRETAP: copy of mail from spy@corp.example to tap@corp.example",
                        "APPEND RCPT: <tap@corp.example>")


def test_wiretap_not_blind_adds_cc() -> None:
    s = RecipientSettings(wiretap_users=address_set(["spy@corp.example"], False),
                          wiretap_dest="tap@corp.example", wiretap_blind=False)
    plan = plan_recipients(s, SPY, addrs("<x@out.example>"))
    assert plan.cc == "tap@corp.example"
    assert plan.add == ("<tap@corp.example>",)


def test_wiretap_of_a_whole_domain() -> None:
    s = RecipientSettings(wiretap_users=address_set(["@corp.example"], False),
                          wiretap_dest="tap@corp.example")
    assert plan_recipients(s, BOSS, addrs("<x@out.example>")).add == ("<tap@corp.example>",)
    assert plan_recipients(s, ALICE, addrs("<x@corp.example>")).empty


def test_wiretap_needs_a_dest() -> None:
    s = RecipientSettings(wiretap_users=address_set(["spy@corp.example"], False))
    assert plan_recipients(s, SPY, addrs("<x@out.example>")).empty


def test_unlisted_sender_is_not_tapped() -> None:
    s = RecipientSettings(wiretap_users=address_set(["spy@corp.example"], False),
                          wiretap_dest="tap@corp.example")
    assert plan_recipients(s, ALICE, addrs("<spy@corp.example>")).empty


def test_wiretap_copy_to_someone_already_a_recipient_is_not_added() -> None:
    s = RecipientSettings(wiretap_users=address_set(["spy@corp.example"], False),
                          wiretap_dest="tap@corp.example")
    plan = plan_recipients(s, SPY, addrs("<TAP@corp.example>"))
    assert plan.add == ()
    assert plan.delete == ()


def test_wiretap_fans_out_through_a_smart_alias() -> None:
    s = RecipientSettings(
        wiretap_users=address_set(["spy@corp.example"], False),
        wiretap_dest="tap@corp.example",
        smart_aliases=smart_aliases_from({
            "fan": ("spy@corp.example", "tap@corp.example", "legal@corp.example",
                    "audit@corp.example"),
            "other": ("someone@else.example", "tap@corp.example", "wrong@corp.example"),
        }))
    plan = plan_recipients(s, SPY, addrs("<x@out.example>"))
    assert plan.add == ("<legal@corp.example>", "<audit@corp.example>")
    assert plan.delete == ()
    assert plan.log == (
        "WIRETAP: copy of mail from spy@corp.example to tap@corp.example",
        "SMART ALIAS: tap@corp.example -> legal@corp.example, audit@corp.example",
        "APPEND RCPT: <legal@corp.example>",
        "APPEND RCPT: <audit@corp.example>",
    )


# --- smart alias -------------------------------------------------------------------------

ALIASES = smart_aliases_from({
    "joe": ("@out.example", "joe@corp.example"),
    "team": ("alice@out.example", "team@corp.example", "a@corp.example", "b@corp.example"),
    "teamdom": ("@out.example", "team@corp.example", "nobody@corp.example"),
})


def test_smart_alias_replaces_the_recipient() -> None:
    rcpts = addrs("<Team@Corp.example>", "<carol@corp.example>")
    plan = plan_recipients(RecipientSettings(smart_aliases=ALIASES), ALICE, rcpts)
    assert plan.delete == ("<Team@Corp.example>",)  # as the MTA gave it
    assert plan.add == ("<a@corp.example>", "<b@corp.example>")  # full address beats @domain
    assert plan.log == ("SMART ALIAS: Team@corp.example -> a@corp.example, b@corp.example",
                        "APPEND RCPT: <a@corp.example>", "APPEND RCPT: <b@corp.example>")


def test_smart_alias_by_sender_domain_and_default_dest() -> None:
    bob = parse_address("<bob@out.example>")
    plan = plan_recipients(RecipientSettings(smart_aliases=ALIASES), bob,
                           addrs("<joe@corp.example>", "<team@corp.example>"))
    assert plan.delete == ("<joe@corp.example>", "<team@corp.example>")
    assert plan.add == ("<joe>", "<nobody@corp.example>")


def test_smart_alias_other_sender_untouched() -> None:
    plan = plan_recipients(RecipientSettings(smart_aliases=ALIASES), SPY,
                           addrs("<joe@corp.example>", "<team@corp.example>"))
    assert plan.empty


def test_smart_alias_case_sensitive_local_part() -> None:
    aliases = smart_aliases_from({"x": ("Alice@out.example", "Team@corp.example",
                                        "t@corp.example")})
    insensitive = RecipientSettings(smart_aliases=aliases)
    sensitive = RecipientSettings(smart_aliases=aliases, case_sensitive_localpart=True)
    rcpts = addrs("<team@CORP.example>")
    assert plan_recipients(insensitive, ALICE, rcpts).add == ("<t@corp.example>",)
    assert plan_recipients(sensitive, ALICE, rcpts).empty
    assert plan_recipients(sensitive, parse_address("<Alice@OUT.example>"),
                           addrs("<Team@corp.example>")).add == ("<t@corp.example>",)


def test_alias_to_itself_and_others_cancels_the_delete() -> None:
    aliases = smart_aliases_from({"keep": ("@out.example", "joe@corp.example",
                                           "JOE@corp.example", "boss@corp.example")})
    plan = plan_recipients(RecipientSettings(smart_aliases=aliases), ALICE,
                           addrs("<joe@corp.example>"))
    assert plan.delete == ()  # deleted and re-added: neither
    assert plan.add == ("<boss@corp.example>",)


def test_duplicate_destinations_added_once() -> None:
    aliases = smart_aliases_from({
        "a": ("@out.example", "x@corp.example", "d@corp.example"),
        "b": ("@out.example", "y@corp.example", "D@Corp.example"),
    })
    plan = plan_recipients(RecipientSettings(smart_aliases=aliases), ALICE,
                           addrs("<x@corp.example>", "<y@corp.example>"))
    assert plan.delete == ("<x@corp.example>", "<y@corp.example>")
    assert plan.add == ("<d@corp.example>",)


# --- discard -----------------------------------------------------------------------------

def test_discard_deletes_every_recipient() -> None:
    s = RecipientSettings(discard=address_set(["@spam.example"], False))
    rcpts = addrs("<a@corp.example>", "b@corp.example")
    plan = plan_recipients(s, parse_address("<x@SPAM.example>"), rcpts)
    assert plan.delete == ("<a@corp.example>", "b@corp.example")
    assert plan.add == ()
    assert plan.log == ("DISCARD RCPT: a@corp.example", "DISCARD RCPT: b@corp.example")
    assert plan_recipients(s, ALICE, rcpts).empty


def test_discard_with_wiretap_leaves_only_the_copy() -> None:
    s = RecipientSettings(discard=address_set(["spy@corp.example"], False),
                          wiretap_users=address_set(["spy@corp.example"], False),
                          wiretap_dest="tap@corp.example")
    plan = plan_recipients(s, SPY, addrs("<a@out.example>", "<b@out.example>"))
    assert plan.delete == ("<a@out.example>", "<b@out.example>")
    assert plan.add == ("<tap@corp.example>",)


def test_discard_and_wiretap_to_a_recipient_keeps_that_recipient() -> None:
    s = RecipientSettings(discard=address_set(["spy@corp.example"], False),
                          wiretap_users=address_set(["spy@corp.example"], False),
                          wiretap_dest="tap@corp.example")
    plan = plan_recipients(s, SPY, addrs("<a@out.example>", "<tap@corp.example>"))
    assert plan.delete == ("<a@out.example>",)
    assert plan.add == ()


def test_discard_local_part_case() -> None:
    insensitive = RecipientSettings(discard=address_set(["Spy@corp.example"], False))
    sensitive = RecipientSettings(discard=address_set(["Spy@corp.example"], True),
                                  case_sensitive_localpart=True)
    rcpts = addrs("<a@out.example>")
    assert plan_recipients(insensitive, SPY, rcpts).delete == ("<a@out.example>",)
    assert plan_recipients(sensitive, SPY, rcpts).empty
    assert plan_recipients(sensitive, parse_address("<Spy@corp.example>"),
                           rcpts).delete == ("<a@out.example>",)


# --- hide_path ---------------------------------------------------------------------------

def test_hide_path_by_domain_or_parent() -> None:
    s = RecipientSettings(hide_path=frozenset({"secret.example"}))
    plan = plan_recipients(s, ALICE, addrs("<a@corp.example>", "<b@Mail.Secret.example>"))
    assert plan.hide_path
    assert plan.log == ("HIDE PATH: mail.secret.example",)
    assert not plan.empty
    assert not plan_recipients(s, ALICE, addrs("<a@notsecret.example>")).hide_path


# --- order -------------------------------------------------------------------------------

def test_plan_is_deterministic() -> None:
    s = RecipientSettings(
        discard=address_set(["@corp.example"], False),
        wiretap_users=address_set(["@corp.example"], False), wiretap_dest="tap@corp.example",
        smart_aliases=ALIASES, hide_path=frozenset({"out.example"}))
    rcpts = addrs("<z@out.example>", "<a@out.example>", "<m@out.example>")
    plans = {plan_recipients(s, BOSS, rcpts) for _ in range(5)}
    assert len(plans) == 1
    (plan,) = plans
    assert plan.delete == ("<z@out.example>", "<a@out.example>", "<m@out.example>")
    assert plan.log[-1] == "HIDE PATH: out.example"


def test_quoted_local_part_is_quoted_again() -> None:
    aliases = smart_aliases_from({"q": ("@out.example", "x@corp.example",
                                        '"john doe"@corp.example')})
    plan = plan_recipients(RecipientSettings(smart_aliases=aliases), ALICE,
                           addrs("<x@corp.example>"))
    assert plan.add == ('<"john doe"@corp.example>',)
