"""bmslib.content.mime: the streaming structure scanner (offsets, leniency, names),
plus property tests through defang.scan: hostile bytes never raise, and a rewrite
touches only the parts it replaces."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bmslib.content import mime
from bmslib.content.defang import DefangSettings, scan

CT_MIXED = [("Content-Type", 'multipart/mixed; boundary="b"')]


def parse(body: bytes, headers: list[tuple[str, str]] | None = None,
          limits: mime.Limits | None = None) -> mime.Structure:
    return mime.parse(io.BytesIO(body), CT_MIXED if headers is None else headers,
                      limits or mime.Limits())


def content(body: bytes, part: mime.Part) -> bytes:
    return body[part.body_start:part.end]


def leaves(root: mime.Part) -> list[mime.Part]:
    return [p for p in root.walk() if p.is_leaf]


def check_offsets(st_: mime.Structure) -> None:
    """Every part lies inside its parent, children in order, never overlapping."""
    for part in st_.root.walk():
        start = part.body_start if part.header_start is None else part.header_start
        assert 0 <= start <= part.body_start <= part.end <= st_.size
        prev = start
        for child in part.children:
            assert child.header_start is not None
            assert prev <= child.header_start and child.end <= part.end
            prev = child.end


NESTED = (b"This is the preamble.\r\n"
          b"--b\r\n"
          b"Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n"
          b"--alt\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nplain text\r\n"
          b"--alt\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n"
          b"--alt--\r\n"
          b"--b\r\n"
          b"Content-Type: application/pdf; name=\"r.pdf\"\r\n"
          b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"
          b"--b--\r\n"
          b"This is the epilogue.\r\n")


def test_nested_multipart_structure_and_offsets() -> None:
    s = parse(NESTED)
    root = s.root
    assert root.content_type == "multipart/mixed" and root.boundary == b"b"
    assert [c.content_type for c in root.children] == ["multipart/alternative",
                                                       "application/pdf"]
    alt = root.children[0]
    assert [c.content_type for c in alt.children] == ["text/plain", "text/html"]
    assert [content(NESTED, p) for p in leaves(root)] == [b"plain text", b"<p>html</p>",
                                                         b"JVBERi0="]
    pdf = root.children[1]
    assert pdf.names == ("r.pdf",) and pdf.name == "r.pdf" and pdf.cte == "base64"
    assert alt.children[0].charset == "iso-8859-1"
    assert s.notes == () and s.size == len(NESTED) and root.end == len(NESTED)
    check_offsets(s)


def test_preamble_and_epilogue_lie_outside_every_part() -> None:
    s = parse(NESTED)
    first, last = s.root.children[0], s.root.children[-1]
    assert NESTED[:first.header_start] == b"This is the preamble.\r\n--b\r\n"
    assert NESTED[last.end:] == b"\r\n--b--\r\nThis is the epilogue.\r\n"


def test_missing_final_boundary_ends_at_end_of_body() -> None:
    body = b"--b\r\nContent-Type: text/plain\r\n\r\none\r\n--b\r\n\r\ntwo\r\nlast line\r\n"
    s = parse(body)
    assert "missing final boundary" in s.notes
    assert [content(body, p) for p in s.root.children] == [b"one", b"two\r\nlast line\r\n"]
    assert s.root.children[-1].end == len(body)


def test_outer_boundary_closes_inner_part() -> None:
    body = (b"--b\r\nContent-Type: multipart/mixed; boundary=in\r\n\r\n"
            b"--in\r\nContent-Type: text/plain\r\n\r\ninner\r\n"
            b"--b\r\nContent-Type: application/octet-stream; name=x.bin\r\n\r\nMZ\r\n--b--\r\n")
    s = parse(body)
    inner, after = s.root.children
    assert inner.content_type == "multipart/mixed" and not inner.closed
    assert content(body, inner.children[0]) == b"inner"
    assert after.names == ("x.bin",) and content(body, after) == b"MZ"
    assert "missing final boundary" in s.notes
    check_offsets(s)


def test_lf_only_body_has_the_same_structure() -> None:
    lf = NESTED.replace(b"\r\n", b"\n")
    a, b = parse(NESTED), parse(lf)
    assert [p.content_type for p in a.root.walk()] == [p.content_type for p in b.root.walk()]
    assert [content(lf, p) for p in leaves(b.root)] == [content(NESTED, p)
                                                       for p in leaves(a.root)]
    check_offsets(b)


def test_transport_padding_after_delimiters_and_in_boundary_parameter() -> None:
    body = b"--b \t\r\n\r\none\r\n--b--  \r\n"
    s = parse(body, [("Content-Type", 'multipart/mixed; boundary="b "')])
    assert [content(body, p) for p in s.root.children] == [b"one"]
    assert s.root.closed and s.notes == ()


def test_boundary_prefix_is_not_a_delimiter() -> None:
    body = b"--b\r\n\r\n--bx\r\n--b-\r\n--b--\r\n"
    s = parse(body)
    assert [content(body, p) for p in s.root.children] == [b"--bx\r\n--b-"]


def test_delimiter_inside_a_long_line_is_content() -> None:
    long_line = b"a" * mime.LINE_CAP + b"--b\r\n"
    body = b"--b\r\n\r\n" + long_line + b"--b--\r\n"
    s = parse(body)
    assert content(body, s.root.children[0]) == long_line[:-2]


def test_rfc2231_continuations_and_charset() -> None:
    body = (b"--b\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment;\r\n filename*0*=utf-8''%C3%A9t%C3%A9;\r\n"
            b" filename*1=\"-report\"; filename*2*=.%65xe\r\n\r\nx\r\n"
            b"--b\r\nContent-Disposition: attachment; filename*0=\"plain\";"
            b" filename*1=\"file.txt\"\r\n\r\ny\r\n--b--\r\n")
    s = parse(body)
    a, b = s.root.children
    assert a.filename == "été-report.exe" and a.names == ("été-report.exe",)
    assert "utf-8" in a.header_charsets
    assert b.filename == "plainfile.txt"


def test_rfc2047_names_decoded_and_charsets_collected() -> None:
    body = (b"--b\r\nContent-Type: application/octet-stream;\r\n"
            b" name=\"=?big5?B?pKSk5Q==?=.exe\"\r\n"
            b"Content-Disposition: attachment; filename=\"=?utf-8?B?ZXZpbC5leGU=?=\"\r\n\r\nx\r\n"
            b"--b--\r\n")
    part = parse(body).root.children[0]
    assert part.name == "中文.exe" and part.filename == "evil.exe"
    assert set(part.names) == {"中文.exe", "evil.exe"}
    assert part.header_charsets == {"big5", "utf-8"}


def test_odd_charsets_in_names_never_raise() -> None:
    body = b"".join(
        b"--b\r\nContent-Disposition: attachment; filename*=" + cs + b"''ev%69l.exe\r\n"
        b"Content-Type: a/b; name=\"=?" + cs + b"?Q?x=2Eexe?=\"\r\n\r\nx\r\n"
        for cs in (b"utf\x00-8", b"rot13", b"base64", b"x-unknown", b"", b"utf-16"))
    parts = parse(body + b"--b--\r\n").root.children
    assert [p.filename for p in parts[:4]] == ["evil.exe"] * 4
    assert all(p.filename.endswith("exe") and p.name.endswith("exe") for p in parts[:5])


def test_every_name_parameter_is_kept() -> None:
    body = (b"--b\r\nContent-Type: text/plain; name=a.txt; name=b.exe\r\n"
            b"Content-Type: text/plain; name=c.com\r\n"
            b"Content-Disposition: inline; filename=d.txt\r\n"
            b"Content-Disposition: filename=e.scr\r\n\r\nx\r\n--b--\r\n")
    s = parse(body)
    assert set(s.root.children[0].names) == {"a.txt", "b.exe", "c.com", "d.txt", "e.scr"}
    assert "duplicate Content-Type" in s.notes


def test_many_parameters_keep_the_first_and_last_ones() -> None:
    params = b"".join(b"; name=a%d.txt" % i for i in range(40))
    sections = b"".join(b"; filename*%d=x" % i for i in range(1, 400))
    body = (b"--b\r\nContent-Type: a/b" + params + b"; name=last.exe\r\n"
            b"Content-Disposition: attachment; filename*0*=utf-8''%C3%A9" + sections
            + b"; filename*400=.scr\r\n\r\nx\r\n--b--\r\n")
    part = parse(body).root.children[0]
    assert part.name == "a0.txt" and "last.exe" in part.names and "a39.txt" in part.names
    assert "a10.txt" not in part.names
    assert part.filename == "é" + "x" * 254 + ".scr"  # sections 0-127 and 273-400


def test_8bit_names_are_decoded_as_utf8_or_latin1() -> None:
    body = (b"--b\r\nContent-Type: a/b; name=\"caf\xc3\xa9.txt\"\r\n\r\nx\r\n"
            b"--b\r\nContent-Type: a/b; name=\"caf\xe9.txt\"\r\n\r\nx\r\n--b--\r\n")
    assert [p.name for p in parse(body).root.children] == ["café.txt", "café.txt"]


def test_no_boundary_parameter_is_a_single_leaf() -> None:
    body = b"--b\r\nContent-Type: application/x-msdownload; name=x.exe\r\n\r\nMZ\r\n"
    s = parse(body, [("Content-Type", "multipart/mixed")])
    assert s.root.is_leaf and s.root.children == [] and "no boundary parameter" in s.notes


def test_boundary_that_never_appears() -> None:
    body = b"just text\r\n--other\r\n"
    s = parse(body)
    assert s.root.is_multipart and s.root.children == []
    assert "boundary never appears" in s.notes


def test_part_after_final_boundary_is_still_parsed() -> None:
    body = b"--b\r\n\r\none\r\n--b--\r\n--b\r\nContent-Type: a/b; name=late.exe\r\n\r\nMZ\r\n"
    s = parse(body)
    assert [p.names for p in s.root.children] == [(), ("late.exe",)]
    assert "part after final boundary" in s.notes


def test_missing_blank_line_after_part_headers() -> None:
    body = b"--b\r\nContent-Type: text/plain\r\nthis is body text\r\n--b--\r\n"
    s = parse(body)
    part = s.root.children[0]
    assert content(body, part) == b"this is body text"
    assert "missing blank line after part headers" in s.notes


def test_headers_cut_short_by_a_delimiter() -> None:
    body = b"--b\r\nContent-Type: a/b; name=x.exe\r\n--b--\r\n"
    part = parse(body).root.children[0]
    assert part.names == ("x.exe",) and part.body_start == part.end == body.index(b"--b--")


def test_large_header_block_keeps_its_content_fields() -> None:
    junk = b"".join(b"X-Junk-%d: %s\r\n" % (i, b"j" * 100) for i in range(1000))
    body = (b"--b\r\n" + junk + b"Content-Type: application/octet-stream; name=evil.exe\r\n"
            b"\r\nMZ\r\n--b--\r\n")
    s = parse(body)
    assert s.root.children[0].names == ("evil.exe",)
    assert "part header too large" in s.notes


def test_content_fields_beyond_the_limit_leave_no_usable_headers() -> None:
    huge = b"Content-Type: text/html;\r\n" + b"".join(
        b" x%d=%s;\r\n" % (i, b"v" * 100) for i in range(1000))
    body = b"--b\r\n" + huge + b" name=a.exe\r\n\r\nMZ\r\n--b--\r\n"
    s = parse(body)
    part = s.root.children[0]
    assert not part.headers_usable and part.content_type == "text/plain" and part.names == ()
    assert "part header too large" in s.notes


def test_message_rfc822_is_parsed_in_place() -> None:
    inner = (b"From: a@example.com\r\nSubject: fwd\r\n"
             b"Content-Type: multipart/mixed; boundary=in\r\n\r\n"
             b"--in\r\nContent-Type: a/b; name=x.exe\r\n\r\nMZ\r\n--in--\r\n")
    body = b"--b\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"--b--\r\n"
    s = parse(body)
    msg = s.root.children[0]
    assert msg.is_message and not msg.is_leaf
    (embedded,) = msg.children
    assert embedded.embedded and embedded.header_start == msg.body_start
    assert embedded.message_depth == 1 and embedded.content_type == "multipart/mixed"
    assert embedded.children[0].names == ("x.exe",)
    check_offsets(s)


def test_rfc822_left_alone_when_disabled_or_encoded() -> None:
    body = b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\nhi\r\n--b--\r\n"
    off = parse(body, limits=mime.Limits(rfc822=False)).root.children[0]
    assert off.is_leaf
    enc = body.replace(b"rfc822\r\n", b"rfc822\r\nContent-Transfer-Encoding: base64\r\n")
    assert parse(enc).root.children[0].is_leaf


def test_digest_parts_default_to_message_rfc822() -> None:
    body = b"--d\r\n\r\nSubject: one\r\n\r\nbody\r\n--d--\r\n"
    s = parse(body, [("Content-Type", "multipart/digest; boundary=d")])
    part = s.root.children[0]
    assert part.content_type == "message/rfc822" and part.is_message


def test_depth_limits_make_leaves_marked_too_deep() -> None:
    depth = 5
    body = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
                    for i in range(depth))
    s = parse(body, [("Content-Type", "multipart/mixed; boundary=b0")],
              mime.Limits(max_multipart_depth=3))
    deep = [p for p in s.root.walk() if p.too_deep]
    assert len(deep) == 1 and deep[0].multipart_depth == 3
    assert "multipart nested too deep" in s.notes
    msgs = b"Content-Type: message/rfc822\r\n\r\n" * 4 + b"Subject: x\r\n\r\nhi\r\n"
    s = mime.parse(io.BytesIO(msgs), None, mime.Limits(max_rfc822_depth=2))
    assert [p.too_deep for p in s.root.walk()] == [False, False, True]


def test_part_limit_truncates() -> None:
    body = b"--b\r\n\r\nx\r\n" * 50
    s = parse(body, limits=mime.Limits(max_parts=10))
    assert s.truncated and "too many MIME parts" in s.notes and s.size == len(body)


def test_whole_message_mode_and_empty_inputs() -> None:
    s = mime.parse(io.BytesIO(b""), None)
    assert s.root.content_type == "text/plain" and s.size == 0
    s = parse(b"", [])
    assert s.root.is_leaf and s.root.end == 0
    s = mime.parse(io.BytesIO(b"Content-Type: text/plain; charset=gb2312\r\n\r\nhi"), None)
    assert s.root.charset == "gb2312" and s.root.body_start == 44


def test_top_level_fields_may_be_folded_and_8bit() -> None:
    headers = [("Subject", "x"),
               ("content-type", "application/octet-stream;\n\tname=\"r\xe9.pdf\""),
               ("Content-Disposition", "attachment;\r\n filename=\"x.exe\"")]
    root = parse(b"MZ", headers).root
    assert root.names == ("ré.pdf", "x.exe")


# --- properties ------------------------------------------------------------------

SETTINGS = DefangSettings(banned_exts=frozenset({"exe", "scr"}), scan_zip=True, scan_html=True)
PIECES = [b"--b\r\n", b"--b--\r\n", b"--c\r\n", b"\r\n", b"\n", b"Content-Type: ",
          b"multipart/mixed; boundary=c\r\n", b"message/rfc822\r\n", b"text/html\r\n",
          b"name=\"x.exe\"\r\n", b"name*0*=utf-8''a; name*1=.exe\r\n", b"filename=a.zip\r\n",
          b"Content-Transfer-Encoding: base64\r\n", b"<script>", b"\x00\xff\xfe",
          b"=?utf-8?B?", b"=?utf\x00-8?Q?", b"*=utf\x00'", b"PK\x03\x04", b"--", b" \t", b"\r"]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=40)), max_size=60),
       st.sampled_from([CT_MIXED, [], [("Content-Type", "message/rfc822")],
                        [("Content-Type", "text/html"), ("Content-Transfer-Encoding", "base64")],
                        [("Content-Type", "application/zip; name=\"\udcff.zip\"")]]))
def test_garbage_never_raises_and_offsets_stay_consistent(
        pieces: list[bytes], headers: list[tuple[str, str]]) -> None:
    body = b"".join(pieces)
    s = parse(body, headers)
    check_offsets(s)
    fp = io.BytesIO(body)
    result = scan(headers, fp, SETTINGS)
    assert fp.tell() == 0
    assert not [n for n in result.notes if n.startswith("scanner error")]
    out = io.BytesIO()
    result.rewrite(fp, out, "/save/x")
    if not result.changed:
        assert out.getvalue() == body


PART = st.tuples(st.booleans(), st.binary(max_size=30).map(lambda b: b.replace(b"-", b"_")))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=30).map(lambda b: b.replace(b"-", b"_")),
       st.lists(PART, min_size=1, max_size=8),
       st.binary(max_size=30).map(lambda b: b.replace(b"-", b"_")))
def test_rewrite_changes_only_the_replaced_parts(
        preamble: bytes, parts: list[tuple[bool, bytes]], epilogue: bytes) -> None:
    segments = []
    for bad, payload in parts:
        name = b"evil.exe" if bad else b"fine.txt"
        segments.append(b"Content-Type: application/octet-stream; name=\"" + name + b"\"\r\n\r\n"
                        + payload)
    body = (preamble + b"\r\n--b\r\n" + b"\r\n--b\r\n".join(segments) + b"\r\n--b--\r\n"
            + epilogue)
    fp = io.BytesIO(body)
    result = scan(CT_MIXED, fp, SETTINGS)
    assert len(result.findings) == sum(bad for bad, _ in parts)
    out = io.BytesIO()
    assert result.rewrite(fp, out, "/save/x") == ()
    new = out.getvalue()
    head, _, rest = new.partition(b"\r\n--b\r\n")
    assert head == preamble
    got, _, tail = rest.rpartition(b"\r\n--b--\r\n")
    assert tail == epilogue
    for (bad, _), seg, new_seg in zip(parts, segments, got.split(b"\r\n--b\r\n"), strict=True):
        if bad:
            assert new_seg.startswith(b"Content-Type: text/plain; charset=us-ascii; "
                                      b"name=\"WARNING.TXT\"\r\n")
            assert b"File name: evil.exe\r\n" in new_seg and b"/save/x" in new_seg
        else:
            assert new_seg == seg
