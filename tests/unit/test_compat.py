"""pymilter 1.0.x API compatibility (PYMILTER_API.md): a milter written for
pymilter runs unchanged under TestCtx and TestBase, and the module-level API
has pymilter's names, values and behaviour."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from milters import compat_milter
from milters.compat_milter import CompatMilter

import Milter
from Milter import lowlevel as L
from Milter import test as milter_test
from Milter import testctx
from Milter.protocol import replies as R

from .helpers import UseFactory

MESSAGE = b"""From: alice@example.net
To: bob@example.org
Subject: please quarantine this
X-Remove: yes
X-Folded: part one
\tpart two

Body with REPLACE marker
second line
"""

REJECT_MESSAGE = MESSAGE.replace(b"please quarantine this", b"reject me")


def _macros(set_macro: Any) -> None:
    set_macro("j", "mx.example.org")
    set_macro("{auth_authen}", "alice")
    set_macro("{auth_type}", "PLAIN")
    set_macro("i", "Q123")


# --- TestCtx ---------------------------------------------------------------------------------

@pytest.fixture
def ctx(use_factory: UseFactory) -> testctx.TestCtx:
    use_factory(CompatMilter)
    c = testctx.TestCtx()
    _macros(c._setsymval)
    return c


def test_testctx_runs_the_compat_milter(ctx: testctx.TestCtx) -> None:
    assert ctx._connect("client.example.net", "client", "192.0.2.1") == Milter.CONTINUE
    m: CompatMilter = ctx.getpriv()
    assert (m.hostname, m.family, m.hostaddr) == ("client.example.net", socket.AF_INET,
                                                  ("192.0.2.1", 1234))
    assert m.connect_macro == "mx.example.org"
    assert m.helo == "client"
    # connect, header and eoh are @noreply, data is @nocallback, unknown is not overridden.
    assert m._protocol == 0x41780
    assert ctx._protocol == 0x41780

    rc = ctx._feedFile(BytesIO(MESSAGE), "change@example.net", "drop@example.org",
                       "keep@example.org")
    assert rc == Milter.CONTINUE
    assert m.mailfrom == "<change@example.net>"
    assert m.auth_authen == "alice"
    assert m.auth_type is None  # @symlist hides it at envfrom
    assert m.queue_id == "Q123"
    assert m.eom_macro == "Q123"  # no symlist for eom
    assert m.rcpts == ["<drop@example.org>", "<keep@example.org>"]
    assert ("X-Folded", b"part one\n\tpart two") in m.headers  # @decode('bytes')
    assert m.calls[:3] == ["connect", "hello", "envfrom"]
    assert "eom" in m.calls

    assert ctx._addrcpt == [(compat_milter.BCC, compat_milter.BCC_PARAMS)]
    assert ctx._delrcpt == ["<drop@example.org>"]
    assert ctx._headerschanged
    assert ctx._msg is not None
    assert ctx._msg["X-Compat"] == "checked"
    assert ctx._msg["X-Compat-Top"] == "first"
    assert "X-Remove" not in ctx._msg
    assert ctx._envfromchanged
    assert ctx._sender == compat_milter.NEW_SENDER
    assert ctx._quarantine == compat_milter.QUARANTINE_REASON
    assert ctx._bodyreplaced
    assert ctx._body is not None
    full = ctx._body.getvalue()
    assert full.endswith(b"\n\nBody with REPLACED marker\nsecond line\n")
    assert full.startswith(b"From: alice@example.net\n")
    assert ctx._reply is None

    # What went over the wire at EOM, in call order (§10 packet types).
    kinds = [type(r).__name__ for r in ctx._replies]
    assert kinds == ["Verdict", "AddHeader", "InsertHeader", "ChangeHeader", "AddRcptPar",
                     "DelRcpt", "ChangeFrom", "Quarantine", "ReplaceBody", "Verdict"]
    assert ctx._replies[0] == R.PROGRESS
    assert ctx._replies[2] == R.InsertHeader(0, b"X-Compat-Top", b"first")
    assert ctx._replies[3] == R.ChangeHeader(1, b"X-Remove", b"")
    assert ctx._replies[4] == R.AddRcptPar(b"<bcc@example.com>", b"NOTIFY=NEVER")
    assert ctx._activity > 0

    ctx._close()
    assert m.closed == 1
    assert ctx.closed


def test_testctx_multi_line_setreply(ctx: testctx.TestCtx) -> None:
    assert ctx._connect() == Milter.CONTINUE
    rc = ctx._feedFile(BytesIO(REJECT_MESSAGE))
    assert rc == Milter.REJECT
    assert ctx._reply == ("550", "5.7.1", *compat_milter.REJECT_MSG_LINES)
    assert ctx._replies[-1] == R.ReplyCode(
        b"550-5.7.1 message refused\r\n550-5.7.1 by the compat milter\r\n550 5.7.1 100%% sure")


def test_testctx_recipient_reject(ctx: testctx.TestCtx) -> None:
    assert ctx._connect() == Milter.CONTINUE
    rc = ctx._feedFile(BytesIO(MESSAGE), "a@example.net", "reject@example.org")
    assert rc == Milter.REJECT
    assert ctx._reply == ("550", "5.1.1", *compat_milter.REJECT_RCPT_LINES)


def test_testctx_helo_reject_closes(ctx: testctx.TestCtx) -> None:
    assert ctx._connect(helo="reject.example") == Milter.REJECT
    m: CompatMilter = ctx.getpriv()
    assert ctx._reply == ("550", "5.7.1", "HELO refused")
    assert m.closed == 1
    assert ctx.closed


def test_testctx_ipv6_connect(ctx: testctx.TestCtx) -> None:
    assert ctx._connect(ip="2001:db8::1") == Milter.CONTINUE
    m: CompatMilter = ctx.getpriv()
    assert (m.family, m.hostaddr) == (socket.AF_INET6, ("2001:db8::1", 1234, 0, 0))
    with pytest.raises(ValueError):
        testctx.TestCtx()._connect(ip="not-an-ip")


def test_testctx_disabled_action(ctx: testctx.TestCtx, monkeypatch: pytest.MonkeyPatch,
                                 caplog: pytest.LogCaptureFixture) -> None:
    """The MTA does not offer ADDRCPT: addrcpt raises DisabledAction inside eom,
    which the exception policy turns into a 451 (and no edit is sent)."""
    monkeypatch.setattr(testctx.TestCtx, "default_opts",
                        [Milter.CURR_ACTS & ~Milter.ADDRCPT, 0x1FFFFF, 0, 0])
    assert ctx._connect() == Milter.CONTINUE
    assert ctx.getpriv()._actions == Milter.CURR_ACTS & ~Milter.ADDRCPT
    with caplog.at_level(logging.ERROR, "Milter"):
        rc = ctx._feedFile(BytesIO(MESSAGE))
    assert rc == Milter.TEMPFAIL
    assert "DisabledAction: ADDRCPT" in caplog.text
    assert ctx._addrcpt == []
    # progress() went out before the failure; the edits made before it did not.
    assert ctx._replies == [
        R.PROGRESS, R.ReplyCode(b"451 4.3.0 pymilter: untrapped exception in pythonfilter")]


def test_testctx_default_opts_not_changed_in_place(ctx: testctx.TestCtx) -> None:
    before = list(testctx.TestCtx.default_opts)
    ctx._connect()
    assert testctx.TestCtx.default_opts == before == [Milter.CURR_ACTS, 0x1FFFFF, 0, 0]


def test_testctx_getsymval_outside_a_stage(ctx: testctx.TestCtx) -> None:
    ctx._connect()
    assert ctx.getsymval("j") == "mx.example.org"
    assert ctx.getsymval("{auth_type}") == "PLAIN"


def test_testctx_actions_outside_eom_raise(ctx: testctx.TestCtx) -> None:
    ctx._connect()
    with pytest.raises(OSError):
        ctx.addheader("X-A", "b")
    with pytest.raises(OSError):
        ctx.addrcpt("<x>")


def test_testctx_second_message_on_the_same_connection(ctx: testctx.TestCtx) -> None:
    ctx._connect()
    assert ctx._feedFile(BytesIO(MESSAGE)) == Milter.CONTINUE
    assert ctx._feedFile(BytesIO(REJECT_MESSAGE)) == Milter.REJECT
    m: CompatMilter = ctx.getpriv()
    assert m.calls.count("eom") == 2
    assert m.closed == 0


# --- TestBase -------------------------------------------------------------------------------

def _testbase_class(logfile: Path) -> type[Any]:
    class T(milter_test.TestBase, CompatMilter):  # type: ignore[misc]
        def __init__(self) -> None:
            milter_test.TestBase.__init__(self, logfile=str(logfile))
            CompatMilter.__init__(self)

    return T


def test_testbase_runs_the_compat_milter(tmp_path: Path) -> None:
    t = _testbase_class(tmp_path / "milter.log")()
    _macros(t.setsymval)
    # Importing Milter.test rebinds NOREPLY to CONTINUE, as pymilter's does.
    assert Milter.NOREPLY == Milter.CONTINUE  # type: ignore[comparison-overlap]
    assert t.connect("client.example.net", helo="client", ip="192.0.2.1") == Milter.CONTINUE
    assert t._protocol == 0x41780
    assert (t.hostname, t.family, t.hostaddr) == ("client.example.net", socket.AF_INET,
                                                  ("192.0.2.1", 1234))
    assert t.connect_macro == "mx.example.org"
    rc = t.feedFile(BytesIO(MESSAGE), "change@example.net", "drop@example.org",
                    "keep@example.org")
    assert rc == Milter.CONTINUE
    assert t.auth_authen == "alice"
    assert t.auth_type is None  # symlist filtering in TestBase.getsymval
    assert ("X-Folded", b"part one\n\tpart two") in t.headers
    assert t._addrcpt == [compat_milter.BCC]  # plain strings under TestBase
    assert t._delrcpt == ["<drop@example.org>"]
    assert t._headerschanged
    assert t._msg["X-Compat"] == "checked"
    assert "X-Remove" not in t._msg
    assert t._envfromchanged
    assert t._sender == compat_milter.NEW_SENDER
    assert t._quarantine == compat_milter.QUARANTINE_REASON
    assert t._bodyreplaced
    assert t._body.getvalue().endswith(b"\n\nBody with REPLACED marker\nsecond line\n")
    assert t._reply is None
    assert t.closed == 1  # feedFile closes after every message
    log = (tmp_path / "milter.log").read_text()
    assert "addheader: X-Compat=checked" in log
    assert "chgfrom: sender=<changed@example.net>" in log


def test_testbase_reject_paths(tmp_path: Path) -> None:
    klass = _testbase_class(tmp_path / "milter.log")
    t = klass()
    assert t.connect(helo="reject.example") == Milter.REJECT
    assert t._reply == ("550", "5.7.1", "HELO refused")
    assert t.closed == 1
    t._close()  # the log file stays open until _close(), as in pymilter
    t = klass()
    assert t.connect() == Milter.CONTINUE
    assert t.feedFile(BytesIO(REJECT_MESSAGE)) == Milter.REJECT
    assert t._reply == ("550", "5.7.1", *compat_milter.REJECT_MSG_LINES)
    assert t.closed == 1
    t = klass()
    assert t.connect() == Milter.CONTINUE
    assert t.feedFile(BytesIO(MESSAGE), "a@b", "reject@example.org") == Milter.REJECT
    assert t._reply == ("550", "5.1.1", *compat_milter.REJECT_RCPT_LINES)
    assert t.closed == 0  # stopped before eom: no close
    t._close()


def test_testbase_without_log_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        ) -> None:
    t = _testbase_class(tmp_path / "missing" / "milter.log")()
    t.log("to stdout")
    assert "to stdout" in capsys.readouterr().out


def test_testbase_actions_outside_eom_raise(tmp_path: Path) -> None:
    t = _testbase_class(tmp_path / "milter.log")()
    with pytest.raises(OSError):
        t.addheader("X-A", "b")
    t._close()


# --- pymilter API ---------------------------------------------------------------------------

CONSTANTS = {
    "CONTINUE": 0, "REJECT": 1, "DISCARD": 2, "ACCEPT": 3, "TEMPFAIL": 4, "SKIP": 8,
    "ALL_OPTS": 10, "SUCCESS": 0, "FAILURE": -1, "VERSION": 0x01000001,
    "ADDHDRS": 0x001, "CHGBODY": 0x002, "MODBODY": 0x002, "ADDRCPT": 0x004, "DELRCPT": 0x008,
    "CHGHDRS": 0x010, "QUARANTINE": 0x020, "CHGFROM": 0x040, "ADDRCPT_PAR": 0x080,
    "SETSYMLIST": 0x100, "V1_ACTS": 0x00F, "V2_ACTS": 0x03F, "CURR_ACTS": 0x1FF,
    "P_NOCONNECT": 0x000001, "P_NOHELO": 0x000002, "P_NOMAIL": 0x000004,
    "P_NORCPT": 0x000008, "P_NOBODY": 0x000010, "P_NOHDRS": 0x000020, "P_NOEOH": 0x000040,
    "P_NR_HDR": 0x000080, "P_NOUNKNOWN": 0x000100, "P_NODATA": 0x000200, "P_SKIP": 0x000400,
    "P_RCPT_REJ": 0x000800, "P_NR_CONN": 0x001000, "P_NR_HELO": 0x002000,
    "P_NR_MAIL": 0x004000, "P_NR_RCPT": 0x008000, "P_NR_DATA": 0x010000,
    "P_NR_UNKN": 0x020000, "P_NR_EOH": 0x040000, "P_NR_BODY": 0x080000,
    "P_HDR_LEADSPC": 0x100000,
    "M_CONNECT": 0, "M_HELO": 1, "M_ENVFROM": 2, "M_ENVRCPT": 3, "M_DATA": 4, "M_EOM": 5,
    "M_EOH": 6,
}


@pytest.mark.parametrize(("name", "value"), CONSTANTS.items())
def test_constants_have_libmilters_values(name: str, value: int) -> None:
    assert getattr(Milter, name) == value
    assert getattr(L, name) == value


def test_noreply_is_7_until_milter_test_is_imported() -> None:
    assert L.NOREPLY == 7
    code = "import Milter; print(Milter.NOREPLY); import Milter.test; print(Milter.NOREPLY)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["7", "0"]


def test_names_pymilter_does_not_export() -> None:
    for name in ("SMFIP_MDS_256K", "P_MDS_256K", "SMFI_CURR_PROT", "NOHREPL"):
        assert not hasattr(Milter, name)


def test_module_level_names() -> None:
    assert issubclass(Milter.error, Exception)
    assert issubclass(Milter.DisabledAction, RuntimeError)
    assert Milter.OPTIONAL_CALLBACKS["header"] == (Milter.P_NR_HDR, Milter.P_NOHDRS)
    assert Milter.OPTIONAL_CALLBACKS["envfrom"] == (Milter.P_NR_MAIL, Milter.P_NOMAIL)
    assert set(Milter.OPTIONAL_CALLBACKS) == {"connect", "hello", "envfrom", "envrcpt",
                                              "data", "unknown", "eoh", "body", "header"}
    assert Milter.MACRO_CALLBACKS == {"connect": 0, "hello": 1, "envfrom": 2, "envrcpt": 3,
                                      "data": 4, "eom": 5, "eoh": 6}
    assert Milter.R.findall("a %% b % c") == ["%%", "%"]
    assert isinstance(Milter.__version__, str)
    assert Milter.getversion() >= (1, 0, 1)


def test_star_import_works() -> None:
    """pymilter quirk fixed: __all__ is a list."""
    namespace: dict[str, Any] = {}
    exec("from Milter import *", namespace)
    assert namespace["Base"] is Milter.Base
    assert namespace["CONTINUE"] == 0
    assert "runmilter" in namespace


def test_param2dict_dictfromlist_envcallback() -> None:
    assert Milter.param2dict(["SIZE=1234", "body=8BITMIME", "SMTPUTF8", "A=b=c"]) == {
        "SIZE": "1234", "BODY": "8BITMIME", "SMTPUTF8": None, "A": "b=c"}
    assert Milter.dictfromlist(["size=1", "BARE", "=x"]) == {"SIZE": "1"}
    got: list[Any] = []

    def c(*args: Any, **kw: Any) -> str:
        got.append((args, kw))
        return "r"

    assert Milter.envcallback(c, ["<a@b>", "size=10", "BARE", "ret=HDRS"]) == "r"
    assert got == [(("<a@b>", "BARE"), {"SIZE": "10", "RET": "HDRS"})]


def test_unique_id_increases() -> None:
    first = Milter.uniqueID()
    second = Milter.uniqueID()
    assert isinstance(first, int) and second == first + 1


def test_decode_mask() -> None:
    names = ["P_NOHELO", "P_SKIP", "P_NR_HDR"]
    assert Milter.decode_mask(Milter.P_NOHELO | Milter.P_SKIP, names) == ["P_NOHELO", "P_SKIP"]
    assert Milter.decode_mask(0, names) == []
    # Leftover bits: one hex string (pymilter quirk fixed; it appended characters).
    assert Milter.decode_mask(Milter.P_SKIP | 0x40000000, names) == ["P_SKIP", "0x40000000"]


# --- decorators ---------------------------------------------------------------------------------

def test_noreply_looks_up_noreply_late(monkeypatch: pytest.MonkeyPatch) -> None:
    class M(Milter.Base):
        @Milter.noreply
        def hello(self, hostname: str) -> int:
            return Milter.CONTINUE

        @Milter.noreply
        def envfrom(self, f: str, *params: str) -> int:
            return Milter.REJECT

    assert M.hello.milter_protocol == Milter.P_NR_HELO  # type: ignore[attr-defined]
    m = M()
    m._protocol = Milter.P_NR_HELO | Milter.P_NR_MAIL
    for value in (7, 0, 42):
        monkeypatch.setattr(Milter, "NOREPLY", value)
        assert m.hello("h") == value
    with pytest.raises(RuntimeError, match="CONTINUE with @noreply"):
        m.envfrom("<a>")
    m._protocol = 0  # NR not negotiated: the method's own result
    assert m.hello("h") == Milter.CONTINUE
    assert m.envfrom("<a>") == Milter.REJECT


def test_nocallback() -> None:
    class M(Milter.Base):
        @Milter.nocallback
        def header(self, field: str, value: str) -> int:
            return Milter.REJECT

        @Milter.nocallback
        def eoh(self) -> int:
            return Milter.CONTINUE

    assert M.header.milter_protocol == Milter.P_NOHDRS  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="CONTINUE with @nocallback"):
        M().header("a", "b")
    assert M().eoh() == Milter.CONTINUE


@pytest.mark.parametrize("decorator", [Milter.noreply, Milter.nocallback])
def test_noreply_nocallback_refuse_non_optional_methods(decorator: Any) -> None:
    def eom(self: Any) -> int:
        return Milter.CONTINUE

    with pytest.raises(ValueError, match="non-optional method: eom"):
        decorator(eom)


def test_symlist_limits() -> None:
    with pytest.raises(ValueError, match="limited to 5"):
        Milter.symlist("a", "b", "c", "d", "e", "f")

    def header(self: Any, f: str, v: str) -> int:
        return Milter.CONTINUE

    with pytest.raises(ValueError, match="non-symlist method"):
        Milter.symlist("i")(header)

    def envfrom(self: Any, f: str) -> int:
        return Milter.CONTINUE

    assert Milter.symlist("i", "{auth_type}")(envfrom)._symlist == (  # type: ignore[attr-defined]
        "i", "{auth_type}")


def test_symlist_and_noreply_stack_in_either_order() -> None:
    class M(Milter.Base):
        @Milter.symlist("i")
        @Milter.noreply
        def envfrom(self, f: str, *p: str) -> int:
            return Milter.CONTINUE

        @Milter.noreply
        @Milter.symlist("{rcpt_addr}")
        def envrcpt(self, to: str, *p: str) -> int:
            return Milter.CONTINUE

    assert M.envfrom._symlist == ("i",)  # type: ignore[attr-defined]
    assert M.envrcpt._symlist == ("{rcpt_addr}",)  # type: ignore[attr-defined]
    assert M.envfrom.milter_protocol == Milter.P_NR_MAIL  # type: ignore[attr-defined]
    assert M.envrcpt.milter_protocol == Milter.P_NR_RCPT  # type: ignore[attr-defined]


def test_decode_strategies() -> None:
    def f(self: Any) -> int:
        return 0

    assert Milter.decode("bytes")(f) is f
    assert f.error_strategy == "bytes"  # type: ignore[attr-defined]
    seen: list[Any] = []

    class Strict(Milter.Base):
        @Milter.decode("strict")
        def envfrom(self, f: Any, *p: Any) -> int:
            seen.append((f, *p))
            return Milter.CONTINUE

        @Milter.decode("replace")
        def envrcpt(self, to: Any, *p: Any) -> int:
            seen.append((to, *p))
            return Milter.CONTINUE

        def header(self, field: str, value: Any) -> int:
            seen.append((field, value))
            return Milter.CONTINUE

    m = Strict()
    m.envfrom_bytes(b"<\xe9>", b"SIZE=1")
    m.envrcpt_bytes(b"<\xe9>")
    m.header_bytes("X", b"v\xe9")
    assert seen == [(b"<\xe9>", "SIZE=1"), ("<\ufffd>",), ("X", "v\udce9")]


def test_decode_bytes_header_rebinds_header_bytes() -> None:
    class B(Milter.Base):
        @Milter.decode("bytes")
        def header(self, field: str, value: Any) -> int:
            return Milter.REJECT if value == b"\xff" else Milter.CONTINUE

    m = B()
    assert m.header_bytes("X", b"\xff") == Milter.REJECT
    assert m.__dict__["header_bytes"] == m.header  # assigned on the instance, as pymilter does


# --- protocol_mask and negotiate -----------------------------------------------------------------

def test_protocol_mask_is_cached_and_inherited() -> None:
    class Parent(Milter.Base):
        def hello(self, hostname: str) -> int:
            return Milter.CONTINUE

    class Child(Parent):
        def envfrom(self, f: str, *p: str) -> int:
            return Milter.CONTINUE

    parent = Parent.protocol_mask()
    assert "_protocol_mask" in Parent.__dict__
    assert parent & (Milter.P_NOHELO | Milter.P_NR_HELO) == Milter.P_NOHELO | Milter.P_NR_HELO
    assert parent & Milter.P_NOMAIL == 0
    # pymilter quirk kept: the subclass inherits the parent's cached mask.
    assert Child.protocol_mask() == parent

    class Fresh(Milter.Base):
        def envfrom(self, f: str, *p: str) -> int:
            return Milter.CONTINUE

    class FreshChild(Fresh):
        def hello(self, hostname: str) -> int:
            return Milter.CONTINUE

    # Computed on the child first: each gets its own.
    assert FreshChild.protocol_mask() != Fresh.protocol_mask()
    assert FreshChild.protocol_mask() & Milter.P_NOHELO


def test_enable_protocols_and_class_decorators() -> None:
    @Milter.rejected_recipients
    class RcptRej(Milter.Base):
        def eom(self) -> int:
            return Milter.CONTINUE

    @Milter.header_leading_space
    class LeadSpace(Milter.Base):
        def eom(self) -> int:
            return Milter.CONTINUE

    class Both(Milter.Base):
        def eom(self) -> int:
            return Milter.CONTINUE

    Milter.enable_protocols(Both, Milter.P_RCPT_REJ | Milter.P_HDR_LEADSPC)
    assert RcptRej._protocol_mask == 0x1FF880 & ~Milter.P_RCPT_REJ  # type: ignore[attr-defined]
    assert LeadSpace.protocol_mask() == 0x1FF880 & ~Milter.P_HDR_LEADSPC
    assert Both.protocol_mask() == 0x0FF080
    for klass, extra in ((RcptRej, Milter.P_RCPT_REJ), (LeadSpace, Milter.P_HDR_LEADSPC),
                         (Both, Milter.P_RCPT_REJ | Milter.P_HDR_LEADSPC)):
        m = klass()
        opts = [Milter.CURR_ACTS, 0x1FFFFF, 0, 0]
        assert m.negotiate(opts) == Milter.CONTINUE
        assert opts == [Milter.CURR_ACTS, 0x77F | extra, 0, 0]
        assert m._protocol == 0x77F | extra

    class Inherits(RcptRej):
        pass

    assert Inherits.protocol_mask() == RcptRej.protocol_mask()


def test_base_negotiate_with_symlists_uses_the_context(use_factory: UseFactory) -> None:
    use_factory(CompatMilter)
    ctx = testctx.TestCtx()
    ctx._connect()
    assert ctx._symlist[Milter.M_ENVFROM] == {b"{auth_authen}", b"i"}
    assert ctx.session.agreement is not None
    assert ctx.session.agreement.symlists == ((Milter.M_ENVFROM, b"{auth_authen} i"),)


def test_base_negotiate_failure_gives_all_opts() -> None:
    class NoCtx(Milter.Base):
        @Milter.symlist("i")
        def envfrom(self, f: str, *p: str) -> int:
            return Milter.CONTINUE

    m = NoCtx()
    opts = [Milter.CURR_ACTS & ~Milter.SETSYMLIST, 0x1FFFFF, 0, 0]
    assert m.negotiate(opts) == Milter.ALL_OPTS
    assert m._protocol == 0


def test_setreply_percent_rule() -> None:
    recorded: list[tuple[Any, ...]] = []

    class FakeCtx:
        def setreply(self, *args: Any) -> None:
            recorded.append(args)

        def setpriv(self, priv: Any) -> None:
            pass

    m = Milter.Base()
    m._setctx(FakeCtx())
    for bad in ("100% sure", "%%% odd", "a % b"):
        with pytest.raises(ValueError, match="must be doubled"):
            m.setreply("550", "5.7.1", bad)
    with pytest.raises(ValueError):
        m.setreply("550", "5.7.1", "ok %%", "bad %")
    assert recorded == []
    m.setreply("550", "5.7.1", "100%% sure", "%%%% fine")
    m.setreply("550")
    assert recorded == [("550", "5.7.1", "100%% sure", "%%%% fine"), ("550", None)]


def test_setsymlist_outside_negotiate_and_limits(ctx: testctx.TestCtx) -> None:
    ctx._connect()
    m: CompatMilter = ctx.getpriv()
    with pytest.raises(RuntimeError):
        m.setsymlist(Milter.M_EOM, "i")
    with pytest.raises(ValueError):
        m.setsymlist(Milter.M_EOM, "a", "b", "c", "d", "e", "f")
    m._actions = Milter.CURR_ACTS & ~Milter.SETSYMLIST
    with pytest.raises(Milter.DisabledAction):
        m.setsymlist(Milter.M_EOM, "i")


# --- glue --------------------------------------------------------------------------------------

def test_glue_callbacks(use_factory: UseFactory) -> None:
    made: list[Any] = []

    class G(Milter.Base):
        def __init__(self) -> None:
            made.append(self)

        def close(self) -> int:
            made.append("closed")
            return Milter.CONTINUE

    class Ctx:
        def __init__(self) -> None:
            self.priv: Any = None

        def getpriv(self) -> Any:
            return self.priv

        def setpriv(self, priv: Any) -> None:
            self.priv = priv

    use_factory(G)
    c = Ctx()
    assert Milter.close_callback(c) == Milter.CONTINUE  # no object yet
    assert Milter.connect_callback(c, "h", socket.AF_INET, ("1.2.3.4", 25)) == Milter.CONTINUE
    assert len(made) == 1 and c.priv is made[0] and made[0]._ctx is c
    opts = [Milter.CURR_ACTS, 0x1FFFFF, 0, 0]
    c2 = Ctx()
    assert Milter.negotiate_callback(c2, opts) == Milter.CONTINUE
    assert c2.priv is made[1]
    assert Milter.close_callback(c2) == Milter.CONTINUE
    assert made[2] == "closed"
    assert made[1]._ctx is None and made[1]._protocol == 0
