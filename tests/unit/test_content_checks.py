"""Header content checks: Subject/From words, unedited forwards, charset blocking."""

from __future__ import annotations

import encodings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmslib.policy.address import parse_address
from bmslib.policy.content import (
    CJK_CHARSETS,
    ContentSettings,
    check_charsets,
    check_forward,
    check_from,
    check_subject,
    content_settings,
    decode_header_text,
    from_display_names,
    header_charsets,
    normalize_charset,
)
from bmslib.policy.decision import CONTINUE, Action

from .helpers import PROPERTY, PROPERTY_SMALL


def settings(*, block_chinese: bool = False, block_charsets: tuple[str, ...] = (),
             porn: tuple[str, ...] = (), spam: tuple[str, ...] = (),
             from_words: tuple[str, ...] = (), forward: tuple[str, ...] = ()
             ) -> ContentSettings:
    return content_settings(block_chinese=block_chinese, block_charsets=block_charsets,
                            porn_words=porn, spam_words=spam, from_words=from_words,
                            block_forward=forward)


def raw8(data: bytes) -> str:
    """A header value as the milter hands over 8-bit bytes."""
    return data.decode("utf-8", "surrogateescape")


CJK = settings(block_chinese=True)


# --- charset names -----------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["BIG5", "big5", "cn-big5", "csbig5", "x-x-big5",
                                      ' "Big5" ', "big5-tw"])
def test_big5_spellings_compare_equal(spelling: str) -> None:
    assert normalize_charset(spelling) == "big5"


@pytest.mark.parametrize(("name", "expected"), [
    ("x-gbk", "gbk"), ("cp936", "gbk"), ("GB2312", "gb2312"), ("euc-cn", "gb2312"),
    ("hz-gb-2312", "hz"), ("UTF-8", "utf-8"), ("latin1", "iso8859-1"),
    ("iso-2022-CN", "iso-2022-cn"),  # Python has no codec: kept by name
    ("x-euc-tw", "euc-tw"), ("X-ISO-2022-CN", "iso-2022-cn"), ("x-mac-roman", "mac-roman"),
    ("x-totally-unknown", "x-totally-unknown"),
])
def test_normalize_charset(name: str, expected: str) -> None:
    assert normalize_charset(name) == expected


def test_cjk_charsets_hold_the_listed_names_in_normal_form() -> None:
    for name in ("big5", "big5-hkscs", "cn-big5", "x-x-big5", "gb2312", "gbk", "x-gbk",
                 "cp936", "gb18030", "hz-gb-2312", "iso-2022-cn", "iso-2022-cn-ext",
                 "euc-cn", "x-euc-tw", "euc-tw"):
        assert normalize_charset(name) in CJK_CHARSETS
    assert "utf-8" not in CJK_CHARSETS
    assert "iso8859-1" not in CJK_CHARSETS


def test_unknown_charset_names_do_not_grow_the_codec_cache() -> None:
    before = len(encodings._cache)  # type: ignore[attr-defined]
    for i in range(200):
        normalize_charset(f"x-invented-{i}")
        decode_header_text(f"=?made-up-{i}?Q?abc?=")
    assert len(encodings._cache) == before  # type: ignore[attr-defined]


def test_content_settings_normalizes() -> None:
    s = content_settings(block_chinese=False, block_charsets=["KOI8-R", " "],
                         porn_words=["SeX", ""], spam_words=["$$$", "$", "", "HGH"],
                         from_words=["Sales", " "], block_forward=["<Joe@Example.COM>", ""])
    assert s.blocked_charsets == frozenset({"koi8-r"})
    assert s.porn_words == ("sex",)
    assert s.spam_words == ("$$$", "HGH")
    assert s.from_words == ("sales",)
    assert s.block_forward == frozenset({"joe@example.com"})
    assert CJK.blocked_charsets >= CJK_CHARSETS


# --- decoding ----------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    ("plain text", "plain text"),
    ("=?utf-8?Q?caf=C3=A9_cr=C3=A8me?=", "café crème"),
    ("=?UTF-8?B?Y2Fmw6k=?=", "café"),
    ("=?utf-8?B?Y2Fmw6k?=", "café"),  # missing padding
    ("=?iso-8859-1?q?caf=E9?= =?iso-8859-1?q?_cr=E8me?=", "café crème"),  # space dropped
    ("=?utf-8*en?Q?hi?=", "hi"),  # RFC 2231 language
    ("a\r\n\tb", "a\tb"),  # fold
    ("a\n b", "a b"),
    ("=?utf-8?Q?a=0D=0Ab?=", "a b"),  # never a line break
    (raw8("caf\xe9".encode("latin-1")), "café"),  # 8-bit latin-1
    (raw8("café".encode()), "café"),  # 8-bit UTF-8
    ("=?x-unknown?Q?abc?=", "=?x-unknown?Q?abc?="),  # unknown charset: as written
    ("=?iso-2022-cn?B?abcd?=", "=?iso-2022-cn?B?abcd?="),
])
def test_decode_header_text(raw: str, expected: str) -> None:
    assert decode_header_text(raw) == expected


def test_decode_header_text_bad_bytes_in_a_known_charset_are_replaced() -> None:
    assert decode_header_text("=?utf-8?Q?a=FFb?=") == "a\ufffdb"


def test_decode_header_text_bogus_words_never_raise() -> None:
    for raw in ("=?big5?B?!!!?=", "=?utf-8?B?====?=", "=?utf-8?B?a?=", "=?zlib?B?eJw=?=",
                "=?rot13?Q?abc?=", "=?punycode?Q?" + "a" * 100_000 + "?=",
                "=?aliases?Q?x?=", "=?mbcs?Q?x?=", "=?\x00?Q?x?=", "=??Q??="):
        assert "\n" not in decode_header_text(raw)


def test_header_charsets() -> None:
    raw = "=?BIG5?B?pKSk5Q==?= and =?iso-2022-cn?B?xx?= and =?utf-8?Q?x?= =?broken"
    assert header_charsets(raw) == frozenset({"big5", "iso-2022-cn", "utf-8"})
    assert header_charsets("no words here") == frozenset()


# --- Subject: charsets -------------------------------------------------------------------

def test_encoded_word_in_a_blocked_charset_is_rejected() -> None:
    d = check_subject(CJK, "Hello =?big5?B?pKSk5Q==?=")
    assert d.action is Action.REJECT
    assert (d.code, d.xcode, d.tag) == ("550", "5.7.1", "charset")
    assert d.lines == ("We don't accept mail in that charset (big5).",)
    assert d.log == "charset big5 in Subject: Hello 中文"
    assert not d.delay


def test_any_spelling_of_a_blocked_charset_is_rejected() -> None:
    assert check_subject(CJK, "=?x-x-big5?B?pKSk5Q==?=").action is Action.REJECT
    assert check_subject(CJK, "=?CP936?B?1tDOxA==?=").lines == (
        "We don't accept mail in that charset (gbk).",)
    assert check_subject(CJK, "=?iso-2022-cn?B?GyQpQQ4=?=").action is Action.REJECT


def test_block_charsets_lists_any_charset() -> None:
    s = settings(block_charsets=("koi8-r",))
    assert check_subject(s, "=?KOI8-R?B?8NLJ18XU?=").action is Action.REJECT
    assert check_subject(s, "=?big5?B?pKSk5Q==?=") == CONTINUE  # not blocked here
    assert check_subject(s, "=?utf-8?Q?hi?=") == CONTINUE


def test_nothing_blocked_lets_every_charset_through() -> None:
    assert check_subject(settings(), "=?big5?B?pKSk5Q==?=") == CONTINUE
    assert check_subject(settings(), raw8("中文測試".encode("big5"))) == CONTINUE


def test_raw_big5_subject_is_rejected() -> None:
    d = check_subject(CJK, raw8("免費中文測試".encode("big5")))
    assert d.action is Action.REJECT
    assert d.lines == ("We don't accept mail in that charset (big5).",)
    assert d.log == "charset big5 in Subject: 免費中文測試"


def test_raw_gb_subject_is_rejected_as_gb18030() -> None:
    d = check_subject(CJK, raw8("免费中文测试".encode("gb2312")))
    assert d.action is Action.REJECT
    assert d.lines == ("We don't accept mail in that charset (gb18030).",)
    assert d.log == "charset gb18030 in Subject: 免费中文测试"


def test_raw_cjk_detection_needs_a_cjk_charset_blocked() -> None:
    s = settings(block_charsets=("koi8-r",))
    assert check_subject(s, raw8("中文測試".encode("big5"))) == CONTINUE
    assert check_subject(settings(block_charsets=("gb2312",)),
                         raw8("中文測試".encode("big5"))).action is Action.REJECT


@pytest.mark.parametrize("text", ["café crème", "Übermäßig", "Größe und Übermäßig",
                                  "Ça va? Très bien", "naïve façade", "¡Olé!"])
def test_latin1_subject_is_not_taken_for_cjk(text: str) -> None:
    assert check_subject(CJK, raw8(text.encode("latin-1"))) == CONTINUE


def test_utf8_chinese_subject_is_not_blocked() -> None:
    assert check_subject(CJK, raw8("中文測試 免费".encode())) == CONTINUE
    assert check_subject(CJK, "=?utf-8?B?5Lit5paH5ris6Kmm?=") == CONTINUE


def test_a_single_ideograph_is_not_enough() -> None:
    assert check_subject(CJK, raw8(b"price \xa4\xa4 only")) == CONTINUE


# --- Subject: words ----------------------------------------------------------------------

WORDS = settings(porn=("viagra", "XXX rated"), spam=("$$$", "HGH", "$"))


@pytest.mark.parametrize("subject", ["Cheap VIAGRA now", "viagra", "xxx RATED movies",
                                     "Make $$$ fast", "Buy HGH", "=?utf-8?Q?V=C3=AFagra_Viagra?="])
def test_subject_words_reject(subject: str) -> None:
    d = check_subject(WORDS, subject)
    assert d.action is Action.REJECT
    assert d.tag == "subject"
    assert d.lines == ("That subject is not allowed.",)
    assert d.log == f"Subject: {decode_header_text(subject)}"


@pytest.mark.parametrize("subject", [
    "$ $ $",  # not "$$$"; the one-character word "$" is ignored
    "costs $5",
    "Buy hgh",  # spam words are case-sensitive
    "Vi agra",
    "",
])
def test_subject_words_do_not_reject(subject: str) -> None:
    assert check_subject(WORDS, subject) == CONTINUE


def test_one_character_spam_word_ignored_even_when_set_directly() -> None:
    assert check_subject(ContentSettings(spam_words=("$",)), "costs $5") == CONTINUE


def test_spam_word_in_an_encoded_word_matches() -> None:
    assert check_subject(WORDS, "=?utf-8?B?JCQkIGZhc3Q=?=").tag == "subject"  # "$$$ fast"


def test_subject_log_is_one_line() -> None:
    d = check_subject(WORDS, "viagra\r\nX-Injected: yes")
    assert d.action is Action.REJECT
    assert "\n" not in d.log and "\r" not in d.log


# --- From --------------------------------------------------------------------------------

FROM = settings(from_words=("Sales Team", "lottery"), spam=("HGH",), porn=("viagra",))


@pytest.mark.parametrize("value", [
    '"SALES TEAM" <x@example.com>',
    "Lottery Winner <x@example.com>",
    "x@example.com (HGH shop)",
    "=?utf-8?Q?Lottery_=E2=9C=93?= <x@example.com>",
    '=?utf-8?Q?Smith,_Lottery?= <x@example.com>',  # comma inside an encoded word
])
def test_from_words_in_display_name(value: str) -> None:
    d = check_from(FROM, value)
    assert d.action is Action.REJECT
    assert (d.tag, d.lines) == ("from words", ("No soliciting.",))
    assert d.log == f"From: {decode_header_text(value)}"


def test_porn_word_in_from_name_says_watch_your_language() -> None:
    d = check_from(FROM, "Cheap Viagra <x@example.com>")
    assert d.action is Action.REJECT
    assert (d.tag, d.lines) == ("from words", ("Watch your language.",))


@pytest.mark.parametrize("value", [
    "Joe <sales.team@example.com>",  # the address is not the name
    "lottery@example.com",
    "John hgh <x@example.com>",  # spam words keep their case
    "Nice Person <x@example.com>",
    "",
])
def test_from_without_words(value: str) -> None:
    assert check_from(FROM, value) == CONTINUE


def test_from_words_survive_a_value_the_parser_cannot_take() -> None:
    deep = "(" * 5000 + " Lottery <x@example.com>"
    assert check_from(FROM, deep).action is Action.REJECT
    assert "lottery" in from_display_names('"Lottery <x@example.com>').lower()
    assert from_display_names("Cheap Lottery") == "Cheap Lottery"
    assert from_display_names("Joe <joe@lottery.example>") == "Joe"


def test_from_checks_off_when_no_words() -> None:
    assert check_from(settings(), "Lottery <x@example.com>") == CONTINUE


# --- forwards ----------------------------------------------------------------------------

FWD = settings(forward=("joe@example.com", "@grumpy.example"))
JOE = parse_address("<Joe@Example.com>")
ANN = parse_address("<ann@example.com>")
GRUMPY = parse_address("<anyone@grumpy.example>")


@pytest.mark.parametrize("subject", ["Fwd: look", "FW: look", "  fwd:look", "[Fwd: look]",
                                     "[FW] x", "=?utf-8?Q?Fwd:_caf=C3=A9?="])
def test_unedited_forward_rejected(subject: str) -> None:
    d = check_forward(FWD, subject, [ANN, JOE])
    assert d.action is Action.REJECT
    assert (d.tag, d.lines) == ("forward", ("I find unedited forwards annoying.",))
    assert d.log == "unedited forward to Joe@example.com"


def test_forward_to_a_listed_domain() -> None:
    assert check_forward(FWD, "Fwd: x", [GRUMPY]).action is Action.REJECT


@pytest.mark.parametrize("subject", ["Re: Fwd: look", "Forward thinking", "fwd look",
                                     "About fw: things", ""])
def test_not_a_forward(subject: str) -> None:
    assert check_forward(FWD, subject, [JOE]) == CONTINUE


def test_forward_to_unlisted_recipient_passes() -> None:
    assert check_forward(FWD, "Fwd: look", [ANN]) == CONTINUE
    assert check_forward(settings(), "Fwd: look", [JOE]) == CONTINUE


# --- MIME part charsets ------------------------------------------------------------------

def test_check_charsets() -> None:
    d = check_charsets(CJK, ["us-ascii", "GB2312"], "a text part")
    assert d.action is Action.REJECT
    assert d.lines == ("We don't accept mail in that charset (gb2312).",)
    assert d.log == "charset gb2312 in a text part"
    assert check_charsets(CJK, ["utf-8", "iso-8859-1"], "a text part") == CONTINUE
    assert check_charsets(settings(), ["big5"], "a text part") == CONTINUE
    assert check_charsets(settings(block_charsets=("x-unheard-of",)), ['"X-Unheard-Of"'],
                          "a text part").action is Action.REJECT


# --- hostile input -----------------------------------------------------------------------

HOSTILE = settings(block_chinese=True, block_charsets=("koi8-r",), porn=("sex",),
                   spam=("$$$",), from_words=("sales",), forward=("joe@example.com",))

_pieces = st.sampled_from(["=?", "?=", "?Q?", "?B?", "big5", "utf-8", "x-unknown", "_", "=C3",
                           "\r\n\t", "\n", "<", ">", "(", ")", '"', ",", "@", "\x00",
                           "\udce9", "\udca4\udca4", "\ud800", "\udfff", "中文"])
hostile_text = st.lists(st.one_of(st.text(max_size=20), _pieces), max_size=30).map("".join)


@PROPERTY
@given(hostile_text)
def test_checks_never_raise(raw: str) -> None:
    text = decode_header_text(raw)
    assert "\n" not in text and "\r" not in text
    for d in (check_subject(HOSTILE, raw), check_from(HOSTILE, raw),
              check_forward(HOSTILE, raw, [JOE])):
        assert "\n" not in d.log and "\r" not in d.log
    header_charsets(raw)


@PROPERTY_SMALL
@given(st.text(min_size=1, max_size=8), st.integers(min_value=1, max_value=200_000))
def test_huge_values_never_raise(unit: str, repeat: int) -> None:
    raw = unit * (1_000_000 // (len(unit) * repeat) + 1) * repeat
    decode_header_text(raw)
    check_subject(HOSTILE, raw)
    check_from(HOSTILE, raw)


def test_one_megabyte_values() -> None:
    for raw in ("=?big5?B?" + "pKSk5Q" * 170_000 + "?=", "\udce9" * 1_000_000,
                "(" * 1_000_000, "=?" * 500_000, "=?a?q?" * 170_000, "\x00" * 1_000_000):
        decode_header_text(raw)
        check_subject(HOSTILE, raw)
        check_from(HOSTILE, raw)
        check_forward(HOSTILE, raw, [JOE])
