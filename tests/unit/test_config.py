"""``bmslib.config``: the one schema, the shipped sample, the original's
option names, and one-line errors naming file, section and option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmslib.config import (
    ALL_DOMAINS,
    BANNED_EXTS,
    DEFAULT_PATH,
    SCHEMA,
    Config,
    ConfigError,
    check_config,
    load_config,
    option_names,
    schema_doc,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "pymilter.cfg"
ORIGINAL = ROOT / "tests" / "data" / "original-pymilter.cfg"


def write(tmp_path: Path, text: str, name: str = "pymilter.cfg") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def load_text(tmp_path: Path, text: str) -> Config:
    return load_config([write(tmp_path, text)])


def error_of(tmp_path: Path, text: str) -> tuple[str, str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config([path])
    return path, str(info.value)


# -- the shipped sample and the original's -------------------------------------


def test_default_path() -> None:
    assert DEFAULT_PATH == "/etc/mail/pymilter.cfg"


def test_shipped_sample_loads_without_warnings() -> None:
    cfg = load_config([str(SHIPPED)])
    assert cfg.files == (str(SHIPPED),)
    assert cfg.warnings == ()
    assert check_config([str(SHIPPED)]) == []
    # Runnable from the source tree: TCP socket, local folders, the sample access file.
    assert cfg.get("milter", "socket") == "inet:8894@127.0.0.1"
    assert cfg.get("spf", "access_file") == "access"
    assert (ROOT / "access").is_file()
    assert cfg.get("dns", "nameservers") == ()
    for option in ("datadir", "logdir", "tempdir"):
        assert not Path(cfg.get("milter", option)).is_absolute()


def _documented_options(text: str) -> set[tuple[str, str]]:
    """(section, option) of every ``option =`` line, commented out or not."""
    found: set[tuple[str, str]] = set()
    section = ""
    for line in text.splitlines():
        m = re.match(r"\[(\w+)\]", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"[;#]?([\w.]+)\s*=", line)
        if m and section:
            found.add((section, m.group(1)))
    return found


def test_shipped_sample_shows_every_section_and_option() -> None:
    text = SHIPPED.read_text(encoding="utf-8")
    documented = _documented_options(text)
    # pysrs-only options are named together in one comment line.
    pysrs_only = {("srs", "socket"), ("srs", "secret.0"), ("srs", "secret.1"),
                  ("srs", "secret.2")}
    missing = [f"[{s}] {o}" for s, o in option_names()
               if (s, o) not in documented and (s, o) not in pysrs_only
               and not SCHEMA[s].options[o].unimplemented]
    assert missing == []
    assert "socket, nosrs, secret.0, secret.1, secret.2" in text
    for section in SCHEMA:
        assert f"[{section}]" in text


def test_original_sample_loads_with_one_warning_per_ignored_section() -> None:
    cfg = load_config([str(ORIGINAL)])
    ignored = [w for w in cfg.warnings if "[dspam]" in w or "[gossip]" in w]
    assert [w.split(": ")[1] for w in ignored] == ["[dspam]", "[gossip]"]
    assert all(w.startswith(str(ORIGINAL) + ": ") for w in cfg.warnings)
    assert all("\n" not in w for w in cfg.warnings)
    # The missing pysrs.cfg is a warning, as the original silently skipped it.
    assert any("[srs] config: cannot read /nonexistent/pysrs.cfg" in w for w in cfg.warnings)


def test_original_sample_values() -> None:
    cfg = load_config([str(ORIGINAL)])
    g = cfg.get
    assert g("milter", "socket") == "/var/run/milter/pythonsock"
    assert g("milter", "logdir") == "/var/lib/milter"  # defaults to datadir
    assert g("milter", "internal_connect") == ("192.168.0.0/16", "127.*")
    assert g("milter", "case_sensitive_localpart") is True
    assert g("milter", "max_demerits") == 3
    assert g("milter", "log_headers") is False
    assert g("defang", "banned_exts") == BANNED_EXTS
    assert g("defang", "porn_words")[:5] == ("penis", "breast", "horse cock", "porn",
                                             "diet pill")
    assert "frëe" in g("defang", "porn_words")
    assert g("defang", "porn_words")[-1] == "acai berry"
    assert g("defang", "spam_words") == ("$$$", "!!!", "XXX", "HGH")
    assert g("spf", "reject_neutral") == ("aol.com",)
    assert g("spf", "access_file") == "/etc/mail/access.db"
    # The sample's names and the code's names are one option each.
    assert g("wiretap", "archive") == g("wiretap", "mail_archive") == "/var/log/mail_archive"
    assert g("wiretap", "discard") == ("canned@bigcorp.com",)
    assert cfg.is_set("wiretap", "archive") and cfg.is_set("wiretap", "mail_archive")
    assert g("wiretap", "dest") == "spy@bigcorp.com"
    # Greylisting: an old config turns it on with dbfile.
    assert g("greylist", "enabled") is True
    assert (g("greylist", "time"), g("greylist", "expire"), g("greylist", "retain")) == \
        (5.0, 6.0, 36.0)
    assert cfg.section_items("smart_alias") == {
        "spy3": ("leaky@bigcorp.com", "press@news.example", "spy@bigcorp.com"),
        "spy1": ("disloyal@bigcorp.com", "spy@bigcorp.com", "spy1"),
        "copycust": ("client@clientcorp.com", "sue@bigcorp.com", "copycust"),
        "walter": ("cust@othercorp.com", "walter@bigcorp.com", "boss@bigcorp.com"),
        "walter1": ("cust@othercorp.com", "walter@bigcorp.com", "boss@bigcorp.com",
                    "walter@bigcorp.com"),
    }


# -- defaults -------------------------------------------------------------------

DEFAULTS = [
    ("milter", "socket", "/var/run/milter/pythonsock"),
    ("milter", "name", "pythonfilter"),
    ("milter", "datadir", "/var/lib/milter"),
    ("milter", "logdir", "/var/lib/milter"),
    ("milter", "tempdir", "/var/log/milter/save"),
    ("milter", "timeout", 600.0),
    ("milter", "workers", 1),
    ("milter", "umask", None),
    ("milter", "cbv_timeout", 20.0),
    ("milter", "ban_days", 7.0),
    ("milter", "max_demerits", None),
    ("milter", "dry_run", False),
    ("milter", "log_headers", False),
    ("milter", "untrapped_exception", "TEMPFAIL"),
    ("milter", "internal_connect", ()),
    ("defang", "scan_rfc822", True),
    ("defang", "banned_exts", BANNED_EXTS),
    ("spf", "access_file_colon", True),
    ("spf", "access_file_nulls", False),
    ("spf", "best_guess", False),
    ("spf", "reject_neutral", ()),
    ("spf", "trusted_forwarder", ()),
    ("srs", "maxage", 8),
    ("srs", "hashlength", 8),
    ("srs", "separator", "="),
    ("wiretap", "blind", True),
    ("wiretap", "archive", None),
    ("greylist", "enabled", False),
    ("greylist", "time", 5.0),
    ("dkim", "selector", "default"),
    ("dns", "nameservers", ()),
    ("dns", "timeout", 2.0),
    ("dns", "lifetime", 5.0),
    ("dns", "cache_size", 10000),
    ("state", "backend", "sqlite:bms.sqlite"),
    ("metrics", "listen", None),
]


@pytest.mark.parametrize(("section", "option", "value"), DEFAULTS)
def test_defaults(section: str, option: str, value: object) -> None:
    cfg = load_config([])
    assert cfg.get(section, option) == value
    assert not cfg.is_set(section, option)
    assert cfg.source(section, option) is None


def test_every_option_has_a_default_of_its_type() -> None:
    cfg = Config()
    for section, option in option_names():
        opt = SCHEMA[section].options[option]
        if opt.unimplemented:
            with pytest.raises(KeyError):
                cfg.get(section, option)
            continue
        value = cfg.get(section, option)
        assert value is not None or opt.optional, (section, option)
        assert opt.doc and "\n" not in opt.doc


def test_schema_doc_names_every_option() -> None:
    doc = schema_doc()
    for section, option in option_names():
        assert f"[{section}]" in doc
        assert re.search(rf"\b{re.escape(option)}\b", doc), option


def test_unknown_options_are_key_errors() -> None:
    cfg = Config()
    with pytest.raises(KeyError):
        cfg.get("milter", "no_such_option")
    with pytest.raises(KeyError):
        cfg.get("nosection", "socket")
    with pytest.raises(KeyError):
        cfg.is_set("milter", "nope")
    with pytest.raises(KeyError):
        cfg.section_items("dspam")


# -- errors ---------------------------------------------------------------------

ERRORS = [
    # (config text, "[section] option" named, the rest of the line)
    ("[milter]\nmax_demerits = lots\n", "[milter] max_demerits",
     "expected an integer >= 0, got 'lots'"),
    ("[milter]\nmax_demerit = 3\n", "[milter] max_demerit",
     "unknown option (did you mean max_demerits?)"),
    ("[miltr]\nsocket = /x\n", "[miltr]", "unknown section (did you mean [milter]?)"),
    ("[bogus]\n", "[bogus]", "unknown section (expected one of [milter]"),
    ("[milter]\ndry_run = maybe\n", "[milter] dry_run",
     "expected a boolean (yes/no, true/false, on/off, 1/0), got 'maybe'"),
    ("[milter]\nworkers = 0\n", "[milter] workers",
     "expected an integer from 1 to 256, or auto (one per core), got '0'"),
    ("[milter]\ntimeout = -1\n", "[milter] timeout", "expected a number greater than 0"),
    ("[milter]\ncbv_timeout = nan\n", "[milter] cbv_timeout", "expected a number"),
    ("[milter]\numask = 0999\n", "[milter] umask", "expected an octal file mode"),
    ("[milter]\nsocket = inet:127.0.0.1:8894\n", "[milter] socket",
     "(Postfix's inet:HOST:PORT is written inet:PORT@HOST here), got 'inet:127.0.0.1:8894'"),
    ("[milter]\nsocket = tcp:25\n", "[milter] socket", "expected a milter socket"),
    ("[milter]\nsocket = unix:relative/path\n", "[milter] socket", "expected a milter socket"),
    ("[milter]\nsocketname = inet:99999@localhost\n", "[milter] socketname",
     "expected a milter socket"),
    ("[milter]\nuntrapped_exception = ACCEPTX\n", "[milter] untrapped_exception",
     "expected one of CONTINUE, REJECT, TEMPFAIL, got 'ACCEPTX'"),
    ("[milter]\nemail_providers = gmail.com, 10.0.0.1\n", "[milter] email_providers",
     "expected a list of domain names, got '10.0.0.1'"),
    ("[dns]\nnameservers = 127.0.0.1, ns.example.com\n", "[dns] nameservers",
     "expected nameservers as IP, IP:PORT or [IPv6]:PORT, got 'ns.example.com'"),
    ("[dns]\nnameservers = 127.0.0.1:0\n", "[dns] nameservers", "got '127.0.0.1:0'"),
    ("[dns]\ntimeout = 0\n", "[dns] timeout", "expected a number greater than 0"),
    ("[state]\nbackend = postgres://x\n", "[state] backend",
     "expected sqlite:PATH or redis://HOST[:PORT][/DB], got 'postgres://x'"),
    ("[metrics]\nlisten = 9108\n", "[metrics] listen", "expected a listen address"),
    ("[srs]\nsecret = shhh\n", "[srs] fwdomain",
     "expected a domain name (required by [srs] secret), got nothing"),
    ("[srs]\nsign = example.com\n", "[srs] secret",
     "expected the SRS secret (required by [srs] sign), got nothing"),
    ("[srs]\nreject_spoofed = yes\n", "[srs] secret", "(required by [srs] reject_spoofed)"),
    ("[srs]\nsecret = s\nfwdomain = example.com\nsrs = 1\n", "[srs] srs",
     "expected a list of domain names, got '1'"),
    ("[srs]\nseparator = *\n", "[srs] separator", "expected one of =, -, +, got '*'"),
    ("[dkim]\ndomain = example.com\n", "[dkim] privkey", "(required by [dkim] domain)"),
    ("[wiretap]\nusers = a@example.com\n", "[wiretap] dest",
     "expected an address (required by [wiretap] users), got nothing"),
    ("[wiretap]\narchive = /a\nmail_archive = /b\n", "[wiretap] mail_archive",
     "given twice, also as [wiretap] archive"),
    ("[milter]\nscan_zip = 1\n[defang]\nscan_zip = 0\n", "[defang] scan_zip",
     "given twice, also as [milter] scan_zip"),
    ("[wiretap]\nspy = a@example.com, b@example.com\n", "[wiretap] spy", "unknown option"),
    ("[wiretap]\nsmart_alias = spy\n", "[wiretap] smart_alias",
     "expected names of options in [wiretap], got 'spy' (no such option)"),
    ("[smart_alias]\nlonely = a@example.com\n", "[smart_alias] lonely",
     "expected 'sender, recipient[, destination...]', got 'a@example.com'"),
    ("[spf]\nbest_guess = v=spf1 a mx ptr ?all\n", "[spf] best_guess",
     "expected a boolean"),
    ("[spf]\ntrusted_forwarder = careerbuilder.com, -bad-.com\n", "[spf] trusted_forwarder",
     "got '-bad-.com'"),
    ("[greylist]\ntime = soon\n", "[greylist] time", "expected a number >= 0, got 'soon'"),
]


@pytest.mark.parametrize(("text", "where", "detail"), ERRORS)
def test_errors_name_file_section_option_in_one_line(
        tmp_path: Path, text: str, where: str, detail: str) -> None:
    path, message = error_of(tmp_path, text)
    assert "\n" not in message
    assert message.startswith(f"{path}: {where}")
    assert detail in message
    assert check_config([path])[0] == message


@pytest.mark.parametrize(("text", "detail"), [
    ("socket = /x\n", "line 1: expected a [section] header, got 'socket = /x'"),
    ("[milter]\nsocket = /x\nsocket = /y\n", "line 3: [milter] socket: given twice"),
    ("[milter]\n[milter]\n", "line 2: section [milter] appears twice"),
    ("[milter]\nthis is not an option line\n", "line 2: expected 'option = value'"),
])
def test_syntax_errors_have_line_numbers(tmp_path: Path, text: str, detail: str) -> None:
    path, message = error_of(tmp_path, text)
    assert message == f"{path}: {detail}" or message.startswith(f"{path}: {detail}")
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.cfg")
    with pytest.raises(ConfigError) as info:
        load_config([path])
    assert str(info.value) == f"{path}: cannot read: No such file or directory"
    with pytest.raises(ConfigError, match="cannot read: Is a directory"):
        load_config([str(tmp_path)])


def test_all_errors_are_collected(tmp_path: Path) -> None:
    path = write(tmp_path, "[milter]\nworkers = x\ndry_run = maybe\n[nope]\n")
    errors = check_config([path])
    assert len(errors) == 3
    assert all(e.startswith(path + ": ") and "\n" not in e for e in errors)
    with pytest.raises(ConfigError) as info:
        load_config([path])
    assert info.value.errors == tuple(errors)
    assert str(info.value) == errors[0]


def test_unimplemented_options_warn_once_and_are_not_fatal(tmp_path: Path) -> None:
    a = write(tmp_path, "[dspam]\ndspam_userdir = /var/lib/dspam\ndspam_users = david\n"
              "[milter]\nerrors_url = http://example.com/cgi\n[spf]\naccess_file =\n",
              "a.cfg")
    b = write(tmp_path, "[dspam]\ndspam_userdir = /srv/dspam\n[gossip]\nserver = h:1\n", "b.cfg")
    cfg = load_config([a, b])
    assert cfg.warnings == (
        f"{a}: [dspam]: dspam is not part of bms (use a content scanner in "
        "the MTA); ignored",
        f"{a}: [milter] errors_url: bms does not put a URL in reject replies (it leaked "
        "sender data to a web server); ignored",
        f"{b}: [gossip]: GOSSiP is not part of bms; ignored",
    )
    assert check_config([a, b]) == []
    with pytest.raises(KeyError):
        cfg.get("milter", "errors_url")


# -- values -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ("1", True), ("yes", True), ("true", True), ("on", True), ("YES", True), ("True", True),
    ("0", False), ("no", False), ("false", False), ("off", False), ("No", False),
])
def test_booleans(tmp_path: Path, text: str, value: bool) -> None:
    cfg = load_text(tmp_path, f"[milter]\ndry_run = {text}\n")
    assert cfg.get("milter", "dry_run") is value
    assert cfg.is_set("milter", "dry_run")


@pytest.mark.parametrize(("text", "value"), [
    ("a, b,c", ("a", "b", "c")),
    ("a b\tc", ("a", "b", "c")),
    ("a,\n\tb ,, c", ("a", "b", "c")),
    ("127.*, ::1 , 192.168.0.0/16", ("127.*", "::1", "192.168.0.0/16")),
    ("", ()),
])
def test_word_lists(tmp_path: Path, text: str, value: tuple[str, ...]) -> None:
    cfg = load_text(tmp_path, f"[milter]\ninternal_connect = {text}\n")
    assert cfg.get("milter", "internal_connect") == value


def test_phrase_lists_split_on_commas_only(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "[defang]\nporn_words = diet pill, horse cock,\n\tacai berry\n")
    assert cfg.get("defang", "porn_words") == ("diet pill", "horse cock", "acai berry")


@pytest.mark.parametrize(("text", "value"), [
    ("aol.com, Example.COM.", ("aol.com", "example.com")),
    ("yes", (ALL_DOMAINS,)),
    ("1", (ALL_DOMAINS,)),
    ("no", ()),
    ("", ()),
])
def test_domain_lists_or_all(tmp_path: Path, text: str, value: tuple[str, ...]) -> None:
    cfg = load_text(tmp_path, f"[spf]\nreject_neutral = {text}\n")
    assert cfg.get("spf", "reject_neutral") == value


@pytest.mark.parametrize(("option", "text", "value"), [
    ("umask", "007", 0o007), ("umask", "0177", 0o177), ("umask", "0o117", 0o117),
    ("timeout", "30", 30.0), ("cbv_timeout", "2.5", 2.5), ("max_demerits", "0", 0),
    ("max_demerits", "", None), ("untrapped_exception", "reject", "REJECT"),
    ("socket", "unix:/run/bms.sock", "unix:/run/bms.sock"),
    ("socket", "local:/run/bms.sock", "local:/run/bms.sock"),
    ("socket", "/run/bms.sock", "/run/bms.sock"),
    ("socket", "inet:8894", "inet:8894"),
    ("socket", "inet6:8894@[::1]", "inet6:8894@[::1]"),
    ("socketname", "inet:1234@192.168.0.10", "inet:1234@192.168.0.10"),
])
def test_milter_values(tmp_path: Path, option: str, text: str, value: object) -> None:
    cfg = load_text(tmp_path, f"[milter]\n{option} = {text}\n")
    assert cfg.get("milter", option) == value


def test_nameservers_and_backend(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "[dns]\nnameservers = 127.0.0.1, 127.0.0.1:5353 ::1 [::1]:53\n"
                    "[state]\nbackend = redis://redis.example:6379/2\n"
                    "[metrics]\nlisten = 127.0.0.1:9108\n")
    assert cfg.get("dns", "nameservers") == ("127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:53")
    assert cfg.get("state", "backend") == "redis://redis.example:6379/2"
    assert cfg.get("metrics", "listen") == "127.0.0.1:9108"


def test_inline_comments_and_no_interpolation(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "[milter]\ndry_run = yes  # try it first\n"
                    "max_demerits = 3 ; a good value\n"
                    "[srs]\nsecret = \"100%secret\"\nfwdomain = example.com\n")
    assert cfg.get("milter", "dry_run") is True
    assert cfg.get("milter", "max_demerits") == 3
    assert cfg.get("srs", "secret") == '"100%secret"'  # quotes kept, as pysrs reads it


def test_section_and_option_names_are_case_insensitive(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "[Milter]\nDry_Run = yes\n")
    assert cfg.get("milter", "dry_run") is True
    assert cfg.get("MILTER", "DRY_RUN") is True


def test_latin1_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "latin1.cfg"
    path.write_bytes("[defang]\nporn_words = fr\xeae, x\xe3nax\n[spf]\naccess_file =\n"
                     .encode("latin-1"))
    cfg = load_config([str(path)])
    assert cfg.get("defang", "porn_words") == ("fr\xeae", "x\xe3nax")
    assert cfg.warnings == (f"{path}: not UTF-8, read as latin-1",)


def test_later_files_override_earlier_ones(tmp_path: Path) -> None:
    a = write(tmp_path, "[milter]\nworkers = 2\ndry_run = yes\nmax_demerits = 3\n"
              "[wiretap]\nmail_archive = /a\n", "a.cfg")
    b = write(tmp_path, "[milter]\nworkers = 4\nmax_demerits =\n"
              "[wiretap]\narchive = /b\n", "b.cfg")
    cfg = load_config([a, b])
    assert cfg.files == (a, b)
    assert cfg.get("milter", "workers") == 4 and cfg.source("milter", "workers") == b
    assert cfg.get("milter", "dry_run") is True and cfg.source("milter", "dry_run") == a
    assert cfg.get("milter", "max_demerits") is None  # an empty value unsets
    assert not cfg.is_set("milter", "max_demerits")
    assert cfg.get("wiretap", "mail_archive") == "/b"
    assert load_config([b, a]).get("milter", "workers") == 2


def test_legacy_defang_options_in_milter(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "[milter]\nscan_zip = yes\nblock_chinese = 1\n")
    assert cfg.get("defang", "scan_zip") is True
    assert cfg.get("defang", "block_chinese") is True
    assert cfg.get("milter", "scan_zip") is True


def test_logdir_and_greylist_derived_values(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "[milter]\ndatadir = /srv/bms\n"
                    "[greylist]\ndbfile = greylist.db\nenabled = no\n")
    assert cfg.get("milter", "logdir") == "/srv/bms"
    assert not cfg.is_set("milter", "logdir")
    assert cfg.get("greylist", "enabled") is False  # explicit beats the legacy dbfile
    cfg = load_text(tmp_path, "[greylist]\nenabled = yes\n")
    assert cfg.get("greylist", "enabled") is True


def test_srs_config_file_fills_in_what_the_config_does_not_set(tmp_path: Path) -> None:
    pysrs = write(tmp_path, "[srs]\nsecret = \"shhhh!\"\nmaxage = 21\nhashlength = 4\n"
                  "fwdomain = pysrs.example\nsocket = /var/run/milter/pysrs\n", "pysrs.cfg")
    main = write(tmp_path, f"[srs]\nconfig = {pysrs}\nfwdomain = mine.example\n"
                 "reject_spoofed = yes\n")
    cfg = load_config([main])
    assert cfg.get("srs", "secret") == '"shhhh!"'
    assert cfg.get("srs", "maxage") == 21
    assert cfg.get("srs", "fwdomain") == "mine.example"
    assert cfg.source("srs", "maxage") == pysrs
    assert cfg.files == (main, pysrs)


def test_srs_config_file_errors_name_that_file(tmp_path: Path) -> None:
    pysrs = write(tmp_path, "[srs]\nmaxage = long\n", "pysrs.cfg")
    main = write(tmp_path, f"[srs]\nconfig = {pysrs}\n")
    assert check_config([main]) == [f"{pysrs}: [srs] maxage: expected an integer >= 1, "
                                    "got 'long'"]


def test_srs_complete(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "[srs]\nsecret = s3cret\nfwdomain = Example.com\n"
                    "sign = example.com\nbanned_users = postmaster, mailer-daemon\n")
    assert cfg.get("srs", "fwdomain") == "example.com"
    assert cfg.get("srs", "sign") == ("example.com",)
    assert cfg.get("srs", "banned_users") == ("postmaster", "mailer-daemon")


def test_section_items_of_a_schema_section() -> None:
    items = Config().section_items("dns")
    assert items["timeout"] == 2.0 and set(items) == set(SCHEMA["dns"].options)


# -- hostile input ------------------------------------------------------------------

_TYPED = [(s, o) for s, o in option_names() if not SCHEMA[s].options[o].unimplemented
          and o != "config"]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_TYPED), st.text(max_size=40))
def test_any_value_loads_or_fails_in_one_line(tmp_path_factory: pytest.TempPathFactory,
                                              key: tuple[str, str], value: str) -> None:
    section, option = key
    value = value.replace("\r", " ").replace("\n", " ").replace("\x0b", " ")
    tmp = tmp_path_factory.mktemp("cfg")
    path = write(tmp, f"[{section}]\n{option} = {value}\n")
    try:
        cfg = load_config([path])
    except ConfigError as exc:
        assert "\n" not in str(exc)
        assert str(exc).startswith(path + ": ")
    else:
        cfg.get(section, option)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_any_file_loads_or_fails_in_one_line(tmp_path_factory: pytest.TempPathFactory,
                                             data: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "random.cfg"
    path.write_bytes(b"[milter]\n" + data)
    try:
        load_config([str(path)])
    except ConfigError as exc:
        assert all("\n" not in e and e.startswith(f"{path}: ") for e in exc.errors)


def test_empty_paths(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "[milter]\ndatadir =\n[spf]\naccess_file =\n")
    assert cfg.get("milter", "datadir") == ""  # the working directory, as the original
    assert cfg.get("milter", "logdir") == ""
    assert cfg.get("spf", "access_file") is None  # no access file: built-in defaults only
