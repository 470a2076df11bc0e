"""Tests for app.ingest: one real small file per format, the bad inputs people
actually have (empty, binary, encrypted, truncated, zip bombs, broken links),
and property tests for normalisation and "no raw traceback ever escapes".

All fixtures are generated in tmp_path at test time; nothing binary is committed.
"""

from __future__ import annotations

import io
import json
import mailbox
import os
import random
import tempfile
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import extract_office, extract_text, ingest
from app.ingest import (
    MAX_FILE_BYTES,
    MAX_TEXT_CHARS,
    SUPPORTED_SUFFIXES,
    Extracted,
    IngestError,
    extract,
    iter_files,
    normalise,
)

# ---------------------------------------------------------------------------
# Fixture builders
# ---------------------------------------------------------------------------


def minimal_pdf(text: str = "Hello PDF world", title: str | None = None) -> bytes:
    """A valid one-page PDF with a Helvetica text object and a correct xref.

    Offsets are computed rather than hard-coded so the file stays valid when
    the text changes.
    """
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode() if text else b""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    if title:
        objects.append(b"<< /Title (%s) >>" % title.encode())
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    info = b" /Info %d 0 R" % len(objects) if title else b""
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, info, xref_at)
    return bytes(out)


def encrypted_pdf(user_password: str) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=io.BytesIO(minimal_pdf()))
    writer.encrypt(user_password=user_password, owner_password="owner")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def blank_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def make_docx(path: Path, *, core_title: str = "", heading: str = "My Heading") -> Path:
    import docx

    document = docx.Document()
    if core_title:
        document.core_properties.title = core_title
    document.add_paragraph("Preface before any heading.")
    document.add_heading(heading, level=1)
    document.add_paragraph("First   paragraph of the body.")
    document.add_paragraph("Second paragraph.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "cell A"
    table.rows[0].cells[1].text = "cell B"
    document.save(str(path))
    return path


def make_email(subject: str = "Weekend plans", *, html: str | None = None,
               plain: str | None = "Hi Sam,\n\nSee you on Saturday.\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Alex <alex@example.com>"
    msg["To"] = "sam@example.com"
    msg["Subject"] = subject
    if plain is not None:
        msg.set_content(plain)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    return msg


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def assert_fails(path: Path, *fragments: str) -> str:
    """extract() must raise IngestError whose one-line message has the fragments."""
    with pytest.raises(IngestError) as info:
        extract(path)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message
    return message


# ---------------------------------------------------------------------------
# Plain text and Markdown
# ---------------------------------------------------------------------------


def test_txt_keeps_paragraphs_and_normalises_whitespace(tmp_path):
    path = write(tmp_path / "diary.txt", "  Dear   diary,\r\n\tToday\t was\x07 fine.\n\n\n\nNew  paragraph. \n")
    result = extract(path)
    assert result == Extracted(title="diary", text="Dear diary,\nToday was fine.\n\nNew paragraph.")


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
def test_txt_with_bom(tmp_path, encoding):
    data = "Grüße aus Köln".encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    assert extract(write(tmp_path / "bom.txt", data)).text == "Grüße aus Köln"


def test_txt_legacy_8bit_is_read_as_windows_1252(tmp_path):
    path = write(tmp_path / "old.txt", "Le café était très bon.".encode("cp1252"))
    assert extract(path).text == "Le café était très bon."


def test_txt_mostly_utf8_with_a_bad_byte_uses_replacement(tmp_path):
    path = write(tmp_path / "mixed.txt", "naïve text ".encode() * 20 + b"\xff end")
    text = extract(path).text
    assert "naïve" in text and "\ufffd" in text


@pytest.mark.parametrize("data", [
    b"abc\x00def" * 10,                                                   # NUL bytes
    random.Random(0).randbytes(4000).replace(b"\x00", b"\x01"),           # undecodable
    b"\x01\x02\x03\x04 a" * 20,                                           # control chars
])
def test_binary_data_in_text_file_is_refused(tmp_path, data):
    assert_fails(write(tmp_path / "blob.txt", data), "binary")


def test_unknown_legacy_encoding_is_refused(tmp_path):
    path = write(tmp_path / "ru.txt", "Привет, как дела? Всё хорошо.".encode("cp1251"))
    assert_fails(path, "not utf-8", "save it as utf-8")


def test_empty_file_is_refused(tmp_path):
    assert_fails(write(tmp_path / "empty.md", b""), "empty")


def test_whitespace_only_file_has_no_text(tmp_path):
    assert_fails(write(tmp_path / "blank.txt", " \n\t\n "), "no text")


def test_too_large_file_is_refused_without_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "MAX_FILE_BYTES", 10)
    monkeypatch.setattr(extract_text, "read_bytes", lambda p: pytest.fail("file was read"))
    assert_fails(write(tmp_path / "big.txt", "x" * 11), "too large", "limit")


def test_too_much_text_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "MAX_TEXT_CHARS", 10)
    assert_fails(write(tmp_path / "long.txt", "word " * 10), "too much text", "limit")


def test_documented_limits():
    assert MAX_FILE_BYTES == 50 * 1024 * 1024
    assert MAX_TEXT_CHARS == 5_000_000
    assert SUPPORTED_SUFFIXES == {".txt", ".md", ".markdown", ".html", ".htm", ".pdf",
                                  ".docx", ".eml", ".mbox", ".json", ".jsonl"}


def test_markdown_title_and_link_syntax(tmp_path):
    md = ("Intro line\n\n# My Notes #\n\nSee [the docs](https://x.example/a) and "
          "![a cat](cat.png).\n\n## Later\n")
    result = extract(write(tmp_path / "notes.MD", md))
    assert result.title == "My Notes"
    assert "See the docs and a cat." in result.text
    assert "https://" not in result.text
    assert result.text.startswith("Intro line\n\n# My Notes #")


def test_markdown_without_heading_uses_stem(tmp_path):
    assert extract(write(tmp_path / "ideas.markdown", "just text")).title == "ideas"


# ---------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------


def test_html_title_paragraphs_and_dropped_tags(tmp_path):
    html = """<html><head><title> My   Blog </title><style>p{color:red}</style></head>
    <body><nav><a href="/">Home</a><script>nested()</script></nav>
    <script>alert("x")</script><!-- a private comment -->
    <h1>Post</h1><p>First
       paragraph with <b>bold</b> text.</p><p>Second<br>line two</p>
    <ul><li>one</li><li>two</li></ul></body></html>"""
    result = extract(write(tmp_path / "post.html", html))
    assert result.title == "My Blog"
    assert result.text == ("Post\n\nFirst paragraph with bold text.\n\nSecond\nline two"
                           "\n\none\n\ntwo")


def test_html_meta_charset_is_honoured(tmp_path):
    html = '<html><head><meta charset="windows-1252"></head><body><p>Café</p></body></html>'
    assert extract(write(tmp_path / "c.htm", html.encode("cp1252"))).text == "Café"


def test_html_deeply_nested_does_not_crash(tmp_path):
    depth = 20_000   # also guards against quadratic tree walks (this once took minutes)
    html = "<div>" * depth + "deep text" + "</div>" * depth
    path = write(tmp_path / "deep.html", html)
    try:
        result = extract(path)
    except IngestError as err:
        assert "nested" in str(err) or "no text" in str(err)
    else:
        assert isinstance(result.text, str)


# ---------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------


def test_pdf_text_and_metadata_title(tmp_path):
    result = extract(write(tmp_path / "paper.pdf", minimal_pdf(title="A Study")))
    assert result == Extracted(title="A Study", text="Hello PDF world")


def test_pdf_without_title_uses_stem(tmp_path):
    assert extract(write(tmp_path / "scan1.PDF", minimal_pdf())).title == "scan1"


def test_pdf_encrypted_with_password_is_refused(tmp_path):
    assert_fails(write(tmp_path / "secret.pdf", encrypted_pdf("secret")), "encrypted", "password")


def test_pdf_encrypted_with_empty_user_password_is_read(tmp_path):
    assert extract(write(tmp_path / "open.pdf", encrypted_pdf(""))).text == "Hello PDF world"


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_pdf_truncated_is_refused(tmp_path, keep):
    data = minimal_pdf()
    assert_fails(write(tmp_path / "cut.pdf", data[: int(len(data) * keep)]), "pdf")


def test_pdf_that_is_not_a_pdf(tmp_path):
    assert_fails(write(tmp_path / "fake.pdf", "this is plain text"), "pdf")


def test_pdf_without_text_layer(tmp_path):
    assert_fails(write(tmp_path / "image.pdf", blank_pdf()), "no extractable text", "scanned")


# ---------------------------------------------------------------------------
# DOCX
# ---------------------------------------------------------------------------


def test_docx_paragraphs_tables_and_heading_title(tmp_path):
    result = extract(make_docx(tmp_path / "letter.docx"))
    assert result.title == "My Heading"
    assert result.text == ("Preface before any heading.\n\nMy Heading\n\n"
                           "First paragraph of the body.\n\nSecond paragraph.\n\ncell A | cell B")


def test_docx_core_title_wins(tmp_path):
    assert extract(make_docx(tmp_path / "d.docx", core_title="Official")).title == "Official"


def test_docx_not_a_zip(tmp_path):
    assert_fails(write(tmp_path / "old.docx", "Plain text pretending"), "not a zip")


def test_docx_zip_without_document(tmp_path):
    path = tmp_path / "other.docx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "hi")
    assert_fails(path, "docx")


def test_docx_zip_bomb_ratio_is_refused(tmp_path):
    path = tmp_path / "bomb.docx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("word/document.xml", b"\0" * 5_000_000)
    assert_fails(path, "zip bomb")


def test_docx_uncompressed_size_limit(tmp_path, monkeypatch):
    path = make_docx(tmp_path / "d.docx")
    monkeypatch.setattr(extract_office, "MAX_DOCX_UNCOMPRESSED_BYTES", 1000)
    assert_fails(path, "unpacks to", "limit")


# ---------------------------------------------------------------------------
# Email
# ---------------------------------------------------------------------------


def test_eml_prefers_plain_text_and_uses_subject(tmp_path):
    msg = make_email(html="<p>HTML version</p>")
    result = extract(write(tmp_path / "m.eml", bytes(msg)))
    assert result == Extracted(title="Weekend plans", text="Hi Sam,\n\nSee you on Saturday.")


def test_eml_html_only_is_stripped(tmp_path):
    msg = make_email(plain=None, html="<html><body><p>Hello</p><p>there <i>friend</i></p></body></html>")
    assert extract(write(tmp_path / "h.eml", bytes(msg))).text == "Hello\n\nthere friend"


def test_eml_malformed_headers_do_not_crash(tmp_path):
    raw = (b"Subject: =?utf-8?q?broken=ZZ?= =?unknown-charset?b?@@@?=\n"
           b"From: <<<not an address\n"
           b"Date: yesterday-ish\n"
           b"Content-Type: text/plain; charset=no-such-charset\n"
           b"\n"
           b"Body survives.\n")
    result = extract(write(tmp_path / "bad.eml", raw))
    assert result.text == "Body survives."
    assert "broken" in result.title


def test_eml_without_headers_is_refused(tmp_path):
    assert_fails(write(tmp_path / "x.eml", "\njust a body, no headers\n"), "not an email")


def test_eml_binary_is_refused(tmp_path):
    assert_fails(write(tmp_path / "x.eml", b"Subject: a\n\n\x00\x01\x02"), "binary")


def test_mbox_joins_messages(tmp_path):
    path = tmp_path / "archive.mbox"
    box = mailbox.mbox(str(path))
    box.add(make_email("one", plain="First message."))
    box.add(make_email("two", plain="Second message."))
    box.close()
    result = extract(path)
    assert result == Extracted(title="archive (2 messages)", text="First message.\n\nSecond message.")


def test_mbox_without_messages_is_refused(tmp_path):
    assert_fails(write(tmp_path / "empty.mbox", "no From_ lines here\n"), "no messages")


# ---------------------------------------------------------------------------
# JSON / JSON Lines
# ---------------------------------------------------------------------------


def test_json_single_object_title_and_nested_text(tmp_path):
    doc = {"Title": "My note", "id": 7, "Body": "Top text.",
           "replies": [{"content": "<p>Hello <b>world</b></p>"}, {"url": "https://x"}],
           "meta": {"note": ["a", "b"]}}
    result = extract(write(tmp_path / "note.json", json.dumps(doc)))
    assert result == Extracted(title="My note", text="Top text.\n\nHello world\n\na\n\nb")


def test_json_list_of_posts_uses_stem(tmp_path):
    posts = [{"full_text": "post one", "title": "ignored"}, {"text": "post two"}]
    result = extract(write(tmp_path / "tweets.json", json.dumps(posts)))
    assert result == Extracted(title="tweets", text="post one\n\npost two")


def test_json_invalid(tmp_path):
    assert_fails(write(tmp_path / "bad.json", '{"text": "unterminated'), "not valid json", "line 1")


def test_json_without_text_keys(tmp_path):
    assert_fails(write(tmp_path / "nums.json", '{"a": 1, "b": [2, 3]}'), "no text found")


def test_json_deep_nesting_is_capped(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    assert_fails(write(tmp_path / "deep.json", deep), "json")
    moderately = {"text": "top"}
    node = moderately
    for _ in range(extract_text.MAX_JSON_DEPTH + 10):
        node["child"] = {"text": "deep"}
        node = node["child"]
    text = extract(write(tmp_path / "mid.json", json.dumps(moderately))).text
    assert text.startswith("top") and text.count("deep") < extract_text.MAX_JSON_DEPTH


def test_jsonl_skips_bad_lines(tmp_path):
    lines = '{"text": "one"}\nnot json\n\n{"message": "two"}\n'
    assert extract(write(tmp_path / "feed.jsonl", lines)).text == "one\n\ntwo"


def test_jsonl_all_lines_bad(tmp_path):
    assert_fails(write(tmp_path / "feed.jsonl", "nope\n{broken\n"), "no valid json lines")


# ---------------------------------------------------------------------------
# Dispatch and error conversion
# ---------------------------------------------------------------------------


def test_every_supported_suffix_has_a_reader():
    assert set(ingest._READERS) == SUPPORTED_SUFFIXES


def test_unreadable_file_reports_permission(tmp_path, monkeypatch):
    path = write(tmp_path / "a.txt", "x")

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", deny)
    assert_fails(path, "permission denied")


def test_unsupported_suffix(tmp_path):
    assert_fails(write(tmp_path / "a.xyz", "x"), "unsupported file type .xyz", ".pdf")


def test_missing_file(tmp_path):
    assert_fails(tmp_path / "gone.txt", "not found")


def test_unexpected_parser_exception_becomes_ingest_error(tmp_path, monkeypatch):
    def explode(path):
        raise ValueError("weird\ninternal problem")

    monkeypatch.setitem(ingest._READERS, ".txt", explode)
    message = assert_fails(write(tmp_path / "a.txt", "x"), "could not read text file")
    assert "weird internal problem" in message


# ---------------------------------------------------------------------------
# iter_files
# ---------------------------------------------------------------------------


def _rel(root: Path, items):
    return [(str(p.relative_to(root)), None if e is None else str(e)) for p, e in items]


def test_iter_files_walks_tree_deterministically(tmp_path):
    root = tmp_path / "docs"
    for name in ["b.txt", "A.md", "sub/c.pdf", "sub/deeper/d.json", "image.png",
                 ".hidden.txt", ".git/config.txt", "sub/notes.TXT"]:
        write(root / name, "x")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "dangling.txt").symlink_to(root / "missing.txt")
    (root / "self.txt").symlink_to(root / "self.txt")
    (root / "alias.txt").symlink_to(root / "b.txt")   # same real file as b.txt

    results = _rel(root, iter_files([root]))
    files = [p for p, e in results if e is None]
    errors = {p: e for p, e in results if e is not None}

    # alias.txt sorts first, so b.txt (the same real file) is not yielded again.
    assert files == ["A.md", "alias.txt", "sub/c.pdf", "sub/deeper/d.json", "sub/notes.TXT"]
    assert "broken symbolic link" in errors["dangling.txt"]
    assert "loop" in errors["self.txt"]
    assert "loop" in errors["sub/loop"]
    assert set(errors) == {"dangling.txt", "self.txt", "sub/loop"}
    assert results == _rel(root, iter_files([root]))  # deterministic


def test_iter_files_explicit_paths(tmp_path):
    txt = write(tmp_path / ".private.txt", "x")   # hidden but named explicitly
    odd = write(tmp_path / "data.xyz", "x")
    results = list(iter_files([txt, odd, tmp_path / "nope.md", txt]))
    assert results[0] == (txt, None)
    assert results[1][0] == odd and "unsupported file type .xyz; supported:" in str(results[1][1])
    assert results[2][0] == tmp_path / "nope.md" and "not found" in str(results[2][1])
    assert len(results) == 3   # the duplicate is yielded once


def test_iter_files_unreadable_folder(tmp_path, monkeypatch):
    write(tmp_path / "ok" / "a.txt", "x")
    write(tmp_path / "locked" / "b.txt", "x")
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(ingest.os, "scandir", scandir)
    results = _rel(tmp_path, iter_files([tmp_path]))
    assert results == [("locked", "cannot open folder: permission denied"), ("ok/a.txt", None)]


def test_iter_files_then_extract_end_to_end(tmp_path):
    write(tmp_path / "a.txt", "alpha")
    write(tmp_path / "b.md", "# Bee\n\nbeta")
    got = [(p.name, extract(p)) for p, err in iter_files([tmp_path]) if err is None]
    assert got == [("a.txt", Extracted("a", "alpha")), ("b.md", Extracted("Bee", "# Bee\n\nbeta"))]


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

_TRICKY = st.sampled_from(list("\x00\x01\x07\x1b\x7f\x85\x9f\r\n\t\x0b\x0c\x1c\x1d\x1e\x1f"
                               "\u2028\u2029\xa0\u3000\ufeff\ufffd \ud800\udfff"))


@given(st.text(st.one_of(st.characters(), _TRICKY)))
def test_normalise_is_clean_and_idempotent(raw):
    once = normalise(raw)
    assert normalise(once) == once
    assert not any(ord(c) < 32 and c != "\n" for c in once)
    assert not any(0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in once)
    assert "\n\n\n" not in once and once == once.strip()
    once.encode("utf-8")  # no lone surrogates survive


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(suffix=st.sampled_from(sorted(SUPPORTED_SUFFIXES)), data=st.binary(max_size=2000))
def test_extract_never_leaks_raw_exceptions(suffix, data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(data)
        try:
            result = extract(path)
        except IngestError as err:
            assert str(err) and "\n" not in str(err)
        else:
            assert result.text and result.title


@settings(max_examples=15, deadline=None)
@given(cut=st.integers(min_value=1, max_value=len(minimal_pdf()) - 1),
       flip=st.integers(min_value=0, max_value=255))
def test_damaged_pdf_never_leaks_raw_exceptions(cut, flip):
    data = bytearray(minimal_pdf())
    data[cut] = flip
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "damaged.pdf"
        path.write_bytes(bytes(data))
        try:
            extract(path)
        except IngestError:
            pass
