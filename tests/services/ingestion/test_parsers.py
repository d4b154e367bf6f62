"""Parsers on real files of each format, and on the hostile files an upload form receives."""

from __future__ import annotations

import io
import random
import time
import zipfile
import zlib

import docx
import pytest
from pypdf import PdfReader, PdfWriter

from services.errors import DocumentRejected
from services.ingestion import parsers
from services.ingestion.parsers import SUPPORTED_SUFFIXES, parse_document
from services.ingestion.segmenter import segment

pytestmark = pytest.mark.unit

POLICY_MD = """---
policy_id: CRD-HL-001
title: Home Loan Credit and LTV Policy
version: "2.0"
effective_date: 2026-04-01
classification: internal
owner: Chief Credit Officer
---
# Home Loan Credit and LTV Policy
## 1. Purpose and scope
1.1 This policy sets the credit standards.
## 4. Loan-to-value limits
4.1 The maximum LTV ratio is 90%.
"""


# -- file builders -----------------------------------------------------------------------------


def make_pdf(lines: list[str], title: str | None = None, with_text: bool = True) -> bytes:
    """A minimal valid one-page PDF with a Helvetica text stream (pypdf cannot write text)."""

    def escape(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    content = "BT /F1 12 Tf 14 TL 72 720 Td " + " ".join(f"({escape(line)}) Tj T*" for line in lines) + " ET"
    contents = " /Contents 5 0 R" if with_text else ""
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >>{contents} >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
    ]
    if title:
        objects.append(f"<< /Title ({escape(title)}) >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{obj}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    info = f" /Info {len(objects)} 0 R" if title else ""
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def make_docx() -> bytes:
    document = docx.Document()
    document.core_properties.title = "Home Loan Credit and LTV Policy"
    document.add_heading("Home Loan Credit and LTV Policy", level=1)
    document.add_heading("1. Purpose and scope", level=2)
    document.add_paragraph("1.1 This policy sets the credit standards.")
    document.add_paragraph("Salaried applicants", style="List Number")
    document.add_paragraph("Self-employed applicants", style="List Number")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Loan amount", "LTV cap"
    table.cell(1, 0).text, table.cell(1, 1).text = "Up to INR 30 lakh", "90%"
    document.add_heading("4. Loan-to-value limits", level=2)
    document.add_paragraph("4.1 The maximum LTV ratio is 90%.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def replace_zip_entries(data: bytes, replacements: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as target:
        for info in source.infolist():
            if info.filename not in replacements:
                target.writestr(info.filename, source.read(info.filename))
        for name, content in replacements.items():
            target.writestr(name, content)
    return buffer.getvalue()


DOCUMENT_XML_HEAD = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
)
DOCUMENT_XML_BODY = (
    '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    "<w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>"
)


# -- text formats ------------------------------------------------------------------------------


def test_markdown_front_matter_becomes_metadata_and_headings_keep_their_hashes() -> None:
    parsed = parse_document("home-loans.md", POLICY_MD.encode())
    assert parsed.metadata == {
        "policy_id": "CRD-HL-001",
        "title": "Home Loan Credit and LTV Policy",
        "version": "2.0",
        "effective_date": "2026-04-01",
        "classification": "internal",
        "owner": "Chief Credit Officer",
    }
    assert parsed.text.startswith("# Home Loan Credit and LTV Policy\n## 1. Purpose and scope\n")
    assert "policy_id" not in parsed.text


def test_markdown_without_front_matter_takes_its_title_from_the_first_h1() -> None:
    parsed = parse_document("note.markdown", b"Intro line\n# Travel Policy\n1.1 Text.\n")
    assert parsed.metadata == {"title": "Travel Policy"}


def test_a_long_run_of_spaces_in_the_title_heading_takes_linear_time() -> None:
    # The H1 title pattern backtracked in cubic time: 1,500 spaces took over ten seconds.
    started = time.perf_counter()
    parsed = parse_document("note.md", b"# Travel" + b" " * 1_500 + b"Policy ##\n1.1 Text.\n")
    assert parsed.metadata == {"title": "Travel" + " " * 1_500 + "Policy"}
    assert time.perf_counter() - started < 1.0


def test_front_matter_that_is_not_a_mapping_is_rejected() -> None:
    with pytest.raises(DocumentRejected, match=r"^bad\.md: the front matter must be a YAML mapping"):
        parse_document("bad.md", b"---\n- a list\n---\n# Title\n")
    with pytest.raises(DocumentRejected, match=r"^bad\.md: the front matter is not valid YAML"):
        parse_document("bad.md", b"---\ntitle: [unclosed\n---\n# Title\n")


def test_text_is_normalised_bom_crlf_invisible_marks_and_odd_spaces() -> None:
    raw = "\ufeff1.1\tRule \u200e1.2 applies.\r\n1.2\u00a0Second\u2003line.\r\n".encode()
    parsed = parse_document("rules.txt", raw)
    assert parsed.text == "1.1\tRule 1.2 applies.\n1.2 Second line.\n"


def test_windows_1252_text_is_read() -> None:
    parsed = parse_document("legacy.txt", "1.1 The caf\u00e9 \u201crule\u201d \u2013 applies.".encode("cp1252"))
    assert parsed.text == "1.1 The caf\u00e9 \u201crule\u201d \u2013 applies."


@pytest.mark.parametrize("filename", ["limits.txt", "limits.md", "limits.html"])
def test_utf8_with_one_bad_byte_is_rejected_naming_the_offset(filename: str) -> None:
    # Read wholesale as cp1252, "₹" came out as "â‚¹" and the amounts were indexed so.
    head = "<p>" if filename.endswith(".html") else ""
    data = f"{head}1.1 The limit is ₹50 lakh.\n1.2 ".encode() + b"Caf\xe9 rule.\n"
    offset = data.index(b"\xe9")
    message = rf"^{filename}: not valid UTF-8: .* at byte offset {offset} \(0xe9\); save the file as UTF-8"
    with pytest.raises(DocumentRejected, match=message):
        parse_document(filename, data)


def test_cp1252_is_still_read_when_it_has_no_utf8_sequences() -> None:
    data = "1.1 The caf\u00e9 \u201crule\u201d: \u20ac50 \u2013 applies.".encode("cp1252")
    assert parse_document("legacy.md", data).text == "1.1 The caf\u00e9 \u201crule\u201d: \u20ac50 \u2013 applies."
    html = "<p>1.1 The caf\u00e9 \u201crule\u201d.</p>".encode("cp1252")
    assert parse_document("legacy.html", html).text == "1.1 The caf\u00e9 \u201crule\u201d."


def test_binary_junk_named_txt_is_rejected() -> None:
    junk = random.Random(7).randbytes(4096)
    with pytest.raises(DocumentRejected, match=r"^junk\.txt: not readable as text"):
        parse_document("junk.txt", junk)
    with pytest.raises(DocumentRejected, match=r"binary"):
        parse_document("nul.md", b"1.1 text\x00\x00 more text")


@pytest.mark.parametrize(
    ("filename", "data", "message"),
    [
        ("setup.exe", b"MZ\x90\x00", r"^setup\.exe: unsupported file type '\.exe'"),
        ("README", b"text", r"^README: unsupported file type '\(none\)'"),
        ("empty.md", b"", r"^empty\.md: the file is empty"),
        ("blank.txt", b"  \n\t\n", r"^blank\.txt: no text found"),
        ("only-front-matter.md", b"---\ntitle: T\n---\n", r"no text found"),
    ],
)
def test_unusable_files_are_rejected_with_the_file_named(filename: str, data: bytes, message: str) -> None:
    with pytest.raises(DocumentRejected, match=message):
        parse_document(filename, data)


def test_files_over_the_size_limit_are_rejected_before_parsing() -> None:
    with pytest.raises(DocumentRejected, match=r"^big\.md: the file is 2001 bytes, over the limit of 2000 bytes"):
        parse_document("big.md", b"a" * 2001, max_bytes=2000)
    assert parse_document("fits.md", b"a" * 2000, max_bytes=2000).text == "a" * 2000


def test_suffixes_are_matched_case_insensitively() -> None:
    assert set(SUPPORTED_SUFFIXES) >= {".md", ".txt", ".docx", ".pdf", ".html", ".htm", ".markdown"}
    assert parse_document("POLICY.MD", b"# T\n1.1 x\n").text == "# T\n1.1 x\n"


# -- DOCX --------------------------------------------------------------------------------------


def test_docx_headings_numbering_tables_and_title() -> None:
    parsed = parse_document("home-loans.docx", make_docx())
    assert parsed.metadata == {"title": "Home Loan Credit and LTV Policy"}
    assert parsed.text.splitlines() == [
        "# Home Loan Credit and LTV Policy",
        "## 1. Purpose and scope",
        "1.1 This policy sets the credit standards.",
        "1. Salaried applicants",  # Word's automatic numbering is not in the text; it is rebuilt
        "2. Self-employed applicants",
        "/Table Start",
        "Loan amount\tLTV cap",
        "Up to INR 30 lakh\t90%",
        "/Table End",
        "## 4. Loan-to-value limits",
        "4.1 The maximum LTV ratio is 90%.",
    ]
    numbers = [c.number for c in segment(parsed.text)]
    assert numbers == ["preamble", "1", "1.1", "1.1.1.", "1.1.2.", "4", "4.1"]


def test_docx_custom_properties_carry_policy_metadata() -> None:
    custom = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/custom-properties" '
        'xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes">'
        '<property fmtid="{D5CDD505-2E9C-101B-9397-08002B2CF9AE}" pid="2" name="Policy ID">'
        "<vt:lpwstr>CRD-HL-001</vt:lpwstr></property>"
        '<property fmtid="{D5CDD505-2E9C-101B-9397-08002B2CF9AE}" pid="3" name="version">'
        "<vt:lpwstr>2.0</vt:lpwstr></property>"
        '<property fmtid="{D5CDD505-2E9C-101B-9397-08002B2CF9AE}" pid="4" name="colour">'
        "<vt:lpwstr>blue</vt:lpwstr></property></Properties>"
    )
    data = replace_zip_entries(make_docx(), {"docProps/custom.xml": custom.encode()})
    parsed = parse_document("p.docx", data)
    assert parsed.metadata == {"title": "Home Loan Credit and LTV Policy", "policy_id": "CRD-HL-001", "version": "2.0"}


def test_docx_zip_bomb_is_rejected_before_extraction() -> None:
    # 16 MiB of zeros deflates to about 16 KiB: a thousandfold expansion.
    bomb = replace_zip_entries(make_docx(), {"word/media/padding.bin": b"\0" * (16 * 1024 * 1024)})
    assert len(bomb) < 200_000
    with pytest.raises(DocumentRejected, match=r"^bomb\.docx: zip entry 'word/media/padding\.bin' expands \d+x"):
        parse_document("bomb.docx", bomb)


def test_docx_total_expanded_size_is_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    # Incompressible content passes the ratio check, so only the total-size check can stop it.
    data = replace_zip_entries(make_docx(), {"word/media/photo.bin": random.Random(1).randbytes(300_000)})
    parse_document("ok.docx", data)
    monkeypatch.setattr(parsers, "_MAX_ZIP_UNCOMPRESSED_BYTES", 200_000)
    with pytest.raises(DocumentRejected, match=r"^big\.docx: the DOCX would expand to \d+ bytes"):
        parse_document("big.docx", data)


def test_docx_xml_is_limited_before_it_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Within the zip limits, 256 MiB of tiny paragraphs took minutes and gigabytes to parse.
    data = make_docx()
    xml_bytes = sum(info.file_size for info in zipfile.ZipFile(io.BytesIO(data)).infolist()
                    if info.filename in parsers._DOCX_XML_PARTS)
    monkeypatch.setattr(parsers, "_MAX_DOCX_XML_BYTES", xml_bytes)
    parse_document("ok.docx", data)
    monkeypatch.setattr(parsers, "_MAX_DOCX_XML_BYTES", xml_bytes - 1)
    message = rf"^big\.docx: the DOCX text \(word/document\.xml .*\) is {xml_bytes} bytes of XML, over the limit of"
    with pytest.raises(DocumentRejected, match=message):
        parse_document("big.docx", data)


def test_docx_with_too_many_entries_is_rejected() -> None:
    entries = {f"word/media/{i}.txt": b"x" for i in range(1_001)}
    with pytest.raises(DocumentRejected, match=r"zip entries, over the limit of 1000"):
        parse_document("many.docx", replace_zip_entries(make_docx(), entries))


def test_docx_billion_laughs_is_rejected() -> None:
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10)
    )
    xml = f"{DOCUMENT_XML_HEAD}<!DOCTYPE lolz [{entities}]>{DOCUMENT_XML_BODY}"
    data = replace_zip_entries(make_docx(), {"word/document.xml": xml.encode()})
    with pytest.raises(DocumentRejected, match=r"^laughs\.docx: word/document\.xml declares a DTD or XML entities"):
        parse_document("laughs.docx", data)


def test_docx_external_entity_is_rejected() -> None:
    xml = (
        f'{DOCUMENT_XML_HEAD}<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        + DOCUMENT_XML_BODY.replace("&lol9;", "&xxe;")
    )
    data = replace_zip_entries(make_docx(), {"word/document.xml": xml.encode()})
    with pytest.raises(DocumentRejected, match=r"declares a DTD or XML entities"):
        parse_document("xxe.docx", data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PK\x03\x04 not really a zip", r"^broken\.docx: not a valid DOCX file"),
        (replace_zip_entries(make_docx(), {"word/document.xml": b"<w:document><unclosed>"}), r"is not well-formed XML"),
    ],
)
def test_broken_docx_is_rejected(data: bytes, message: str) -> None:
    with pytest.raises(DocumentRejected, match=message):
        parse_document("broken.docx", data)


def docx_with_numbering(start: str = "1", fmt: str = "decimal", level: str = "0") -> bytes:
    """The builder's DOCX with the first level of its numbered lists, and the level the
    "List Number" style uses, rewritten."""
    data = make_docx()
    archive = zipfile.ZipFile(io.BytesIO(data))
    numbering, styles = archive.read("word/numbering.xml").decode(), archive.read("word/styles.xml").decode()
    first_level = '<w:lvl w:ilvl="0"><w:start w:val="1"/><w:numFmt w:val="decimal"/>'
    list_number = '<w:numPr><w:numId w:val="5"/></w:numPr>'
    assert first_level in numbering and list_number in styles
    numbering = numbering.replace(
        first_level, f'<w:lvl w:ilvl="{level}"><w:start w:val="{start}"/><w:numFmt w:val="{fmt}"/>'
    )
    styles = styles.replace(list_number, f'<w:numPr><w:ilvl w:val="{level}"/><w:numId w:val="5"/></w:numPr>')
    return replace_zip_entries(data, {"word/numbering.xml": numbering.encode(), "word/styles.xml": styles.encode()})


def test_docx_list_numbering_is_rebuilt_from_its_start_and_format() -> None:
    lines = parse_document("n.docx", docx_with_numbering(start="4", fmt="lowerRoman")).text.splitlines()
    assert lines[3:5] == ["iv. Salaried applicants", "v. Self-employed applicants"]


@pytest.mark.parametrize(
    ("numbering", "message"),
    [
        # Each of these crashed the parser (ValueError, IndexError) or exhausted memory:
        # a start of 10**15 in roman numerals is 10**12 "M"s.
        ({"start": "x"}, r"start 'x' is not a whole number"),
        ({"level": "zero"}, r"level 'zero' is not a whole number"),
        ({"level": "15"}, r"level 15 is outside 0\.\.8"),
        ({"start": "1000000000000000", "fmt": "lowerRoman"}, r"start 1000000000000000 is outside 0\.\.32767"),
        ({"start": "1000000000000", "fmt": "lowerLetter"}, r"start 1000000000000 is outside 0\.\.32767"),
        ({"start": "32767"}, r"a list counts past 32767"),
    ],
)
def test_docx_with_impossible_list_numbering_is_rejected(numbering: dict[str, str], message: str) -> None:
    with pytest.raises(DocumentRejected, match=r"^n\.docx: the DOCX list numbering is invalid \(.*" + message):
        parse_document("n.docx", docx_with_numbering(**numbering))


def test_docx_with_an_unsupported_zip_compression_method_is_rejected() -> None:
    data = bytearray(make_docx())
    # Set the compression method of every entry to 99 (AES), which zipfile cannot read,
    # in the local headers (offset 8) and in the central directory (offset 10).
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        start = data.find(signature)
        while start >= 0:
            data[start + offset : start + offset + 2] = (99).to_bytes(2, "little")
            start = data.find(signature, start + 4)
    with pytest.raises(DocumentRejected, match=r"^aes\.docx: .*word/document\.xml.* zip compression method 99"):
        parse_document("aes.docx", bytes(data))


def test_deeply_nested_docx_content_controls_are_rejected() -> None:
    # Nested <w:sdt> blocks are walked recursively; 2,000 of them raised RecursionError.
    depth = 2_000
    xml = (
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
        + "<w:sdt><w:sdtContent>" * depth + "<w:p><w:r><w:t>1.1 Rule.</w:t></w:r></w:p>"
        + "</w:sdtContent></w:sdt>" * depth + "</w:body></w:document>"
    )
    data = replace_zip_entries(make_docx(), {"word/document.xml": xml.encode()})
    with pytest.raises(DocumentRejected, match=r"^deep\.docx: the DOCX is nested too deeply to read"):
        parse_document("deep.docx", data)


def test_zip_that_is_not_a_word_document_is_rejected() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(DocumentRejected, match=r"not a Word document \(word/document\.xml is missing\)"):
        parse_document("other.docx", buffer.getvalue())


# -- PDF ---------------------------------------------------------------------------------------


def test_pdf_text_and_title() -> None:
    pdf = make_pdf(
        ["Home Loan Policy", "1. Purpose and scope", "1.1 This policy sets the rules (see 2).", "(a) first item"],
        title="Home Loan Policy",
    )
    parsed = parse_document("home-loans.pdf", pdf)
    assert parsed.metadata == {"title": "Home Loan Policy"}
    assert parsed.text.splitlines() == [
        "Home Loan Policy",
        "1. Purpose and scope",
        "1.1 This policy sets the rules (see 2).",
        "(a) first item",
    ]
    assert [c.number for c in segment(parsed.text)] == ["preamble", "1.", "1.1", "1.1.(a)"]


def test_encrypted_pdf_is_rejected() -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["1.1 Secret rule."]))))
    writer.encrypt("secret")
    buffer = io.BytesIO()
    writer.write(buffer)
    with pytest.raises(DocumentRejected, match=r"^locked\.pdf: the PDF is encrypted"):
        parse_document("locked.pdf", buffer.getvalue())


@pytest.mark.parametrize(
    "data",
    [make_pdf(["1.1 Rule."])[:150], b"%PDF-1.4\n" + random.Random(3).randbytes(2000), b"not a pdf at all"],
)
def test_broken_pdf_is_rejected(data: bytes) -> None:
    with pytest.raises(DocumentRejected, match=r"^broken\.pdf: not a readable PDF"):
        parse_document("broken.pdf", data)


def test_pdf_without_text_is_rejected() -> None:
    with pytest.raises(DocumentRejected, match=r"^scan\.pdf: the PDF has no extractable text"):
        parse_document("scan.pdf", make_pdf([], with_text=False))


def pdf_from_objects(objects: list[bytes]) -> bytes:
    """A PDF file of numbered objects (1 is the catalog) with a correct cross-reference table."""
    out = b"%PDF-1.4\n"
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    return out + f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()


def flate_stream(content: bytes, extra: str = "") -> bytes:
    packed = zlib.compress(content, 9)
    return f"<< {extra} /Length {len(packed)} /Filter /FlateDecode >>\nstream\n".encode() + packed + b"\nendstream"


FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def text_operations(count: int) -> bytes:
    return b"BT /F1 12 Tf 72 720 Td " + b"(1.1 a) Tj " * count + b"ET"


def test_pdf_pages_sharing_one_compressed_stream_are_rejected_as_a_bomb() -> None:
    # 3 pages draw the same 1.1 MB stream, packed to about 1 KB: each page's text was
    # extracted (about 8 s a page here); a 75 MB stream, the most pypdf decodes, on
    # 5,000 pages would take days.
    pages = 3
    kids = " ".join(f"{4 + i} 0 R" for i in range(pages)).encode()
    page = b"<< /Type /Page /Parent 2 0 R /Resources << /Font << /F1 3 0 R >> >> /Contents 7 0 R >>"
    pdf = pdf_from_objects([
        b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [" + kids + b"] /Count 3 >>", FONT,
        *[page] * pages, flate_stream(text_operations(100_000)),
    ])
    assert len(pdf) < 3_000
    started = time.perf_counter()
    with pytest.raises(DocumentRejected, match=r"^bomb\.pdf: the PDF's page content expands to over \d+ bytes"):
        parse_document("bomb.pdf", pdf)
    assert time.perf_counter() - started < 2.0


def test_pdf_drawing_one_form_many_times_is_rejected_as_a_bomb(monkeypatch: pytest.MonkeyPatch) -> None:
    # The page content is a few bytes of "/Fm1 Do"; each Do extracts the whole form again.
    monkeypatch.setattr(parsers, "_MIN_PDF_OPERATIONS", 15_000)
    form = flate_stream(text_operations(6_000),
                        "/Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >>")
    content = b"/Fm1 Do " * 3
    pdf = pdf_from_objects([
        b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [5 0 R] /Count 1 >>", FONT, form,
        (b"<< /Type /Page /Parent 2 0 R /Resources << /Font << /F1 3 0 R >> /XObject << /Fm1 4 0 R >> >>"
         b" /Contents 6 0 R >>"),
        f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream",
    ])
    with pytest.raises(DocumentRejected, match=r"^forms\.pdf: the PDF runs over 15000 drawing operations"):
        parse_document("forms.pdf", pdf)
    # Drawn twice, the same form is within the budget and its text is read.
    once = pdf.replace(b"/Fm1 Do /Fm1 Do /Fm1 Do ", b"/Fm1 Do /Fm1 Do         ")
    assert parse_document("forms.pdf", once).text.count("1.1 a") == 12_000


# -- HTML --------------------------------------------------------------------------------------


def test_html_blocks_headings_tables_and_meta() -> None:
    html = b"""<!DOCTYPE html><html><head><title>Travel  Policy</title>
    <meta name="policy_id" content="FIN-EXP-001"><meta name="Version" content="1.1">
    <meta name="viewport" content="width=device-width">
    <style>p { color: red }</style><script>var x = "1.1 not a clause";</script></head>
    <body><nav>Home</nav><h1>Travel and Expenses Policy</h1><h2>2. Air travel</h2>
    <p>2.1 Economy class is the <b>default</b>
       for flights under six hours.</p>
    <ul><li>(a) book through the travel desk;</li><li>(b) keep the boarding pass.</li></ul>
    <table><tr><th>Grade</th><th>Class</th></tr><tr><td>E1</td><td>Economy</td></tr></table>
    <div>2.2 Upgrades<br>need approval.</div><!-- a comment -->
    <h2>3. Hotels</h2><ol><li>Book approved hotels.</li><li>Keep receipts:<ol type="a"><li>room;</li>
    <li>meals.</li></ol></li></ol><ol start="3"><li>3.3 Already numbered.</li></ol></body></html>"""
    parsed = parse_document("travel.html", html)
    assert parsed.metadata == {"title": "Travel Policy", "policy_id": "FIN-EXP-001", "version": "1.1"}
    assert parsed.text.splitlines() == [
        "Home",
        "# Travel and Expenses Policy",
        "## 2. Air travel",
        "2.1 Economy class is the default for flights under six hours.",
        "(a) book through the travel desk;",
        "(b) keep the boarding pass.",
        "/Table Start",
        "Grade\tClass",
        "E1\tEconomy",
        "/Table End",
        "2.2 Upgrades",
        "need approval.",
        "## 3. Hotels",
        "1. Book approved hotels.",
        "2. Keep receipts:",
        "a. room;",
        "b. meals.",
        "3.3 Already numbered.",
    ]
    assert [c.number for c in segment(parsed.text)] == [
        "preamble", "2", "2.1", "2.1.(a)", "2.1.(b)", "2.2", "3", "3.1.", "3.2.", "3.2.a.", "3.2.b.", "3.3",
    ]


@pytest.mark.parametrize(
    ("head", "encoding"),
    [
        ('<meta charset="windows-1251">', "cp1251"),
        ('<meta http-equiv="Content-Type" content="text/html; charset=koi8-r">', "koi8_r"),
        ('<meta charset="shift_jis">', "shift_jis"),
    ],
)
def test_html_is_read_in_the_charset_it_declares(head: str, encoding: str) -> None:
    # Read as cp1252, the Russian came out as "Êðåäèòíûé" and was indexed so; the
    # Japanese was rejected as binary data.
    rule = "1.1 Кредитный лимит 90%." if encoding != "shift_jis" else "1.1 融資限度額は90%です。"
    html = f"<html><head>{head}</head><body><p>{rule}</p></body></html>".encode(encoding)
    assert parse_document("limits.html", html).text == rule


def test_html_that_is_valid_utf8_is_read_as_utf8_whatever_it_declares() -> None:
    # A stale declaration left by an editor that saved UTF-8 is common; UTF-8 wins.
    html = '<meta charset="iso-8859-1"><p>1.1 The café rule – ₹50.</p>'.encode()
    assert parse_document("cafe.html", html).text == "1.1 The café rule – ₹50."
    latin = '<meta charset="iso-8859-1"><p>1.1 The café \u201crule\u201d.</p>'.encode("cp1252")
    assert parse_document("cafe.html", latin).text == "1.1 The café \u201crule\u201d."


@pytest.mark.parametrize("charset", ["iso-8859-1", "windows-1252", "iso-8859-15", "koi8-r"])
def test_html_declaring_a_single_byte_charset_but_holding_broken_utf8_is_rejected(charset: str) -> None:
    # The declaration is stale: an editor saved the page as UTF-8, and one byte went bad. Read
    # in the declared charset, "₹50" came out as "â‚¹50" and the amounts were indexed so.
    clause = "<p>1.1 The limit is ₹50 lakh per customer – see the café rules.</p>\n"
    more = "<p>1.2 Loans above the limit need the approval of the credit committee and the branch head.</p>\n"
    data = f'<meta charset="{charset}">{clause}{more * 3}'.encode() + b"<p>1.3 Caf\xe9.</p>"
    offset = data.index(b"\xe9")
    message = rf"^limits\.html: not valid UTF-8: .* at byte offset {offset} \(0xe9\); save the file as UTF-8"
    with pytest.raises(DocumentRejected, match=message):
        parse_document("limits.html", data)


@pytest.mark.parametrize(
    "head",
    [
        '<meta charset="utf-8">',
        '<meta http-equiv="Content-Type" content="text/html; charset=UTF-8">',
        '<?xml version="1.0" encoding="utf-8"?>',
    ],
)
@pytest.mark.parametrize(("bad", "shown"), [(b"\xe9", "0xe9"), (b"\xe2\x82", "0xe2 0x82"), (b"\xff", "0xff")])
def test_html_declaring_utf8_with_a_bad_byte_names_the_line_offset_and_bytes(head: str, bad: bytes, shown: str) -> None:
    # Refused as "binary data" with no position, so staff could not tell what to fix.
    data = (
        f"{head}<html><body>\n<p>1.1 The limit is ₹50 lakh.</p>\n".encode()
        + b"<p>1.2 Caf" + bad + b" rule.</p>\n</body></html>"
    )
    offset = data.rindex(bad)  # "₹" is E2 82 B9: the bad bytes are the last of their kind
    message = (
        rf"^limits\.html: not valid UTF-8: the file declares UTF-8 but its first invalid byte sequence is "
        rf"on line 3 at byte offset {offset} \({shown}\); save the file as UTF-8 and upload it again$"
    )
    with pytest.raises(DocumentRejected, match=message):
        parse_document("limits.html", data)


@pytest.mark.parametrize("head", ["", '<meta charset="windows-1252">'])
def test_utf8_with_a_byte_cp1252_lacks_is_refused_as_utf8_not_binary(head: str) -> None:
    # "Á" is C3 81, and 81 is not a cp1252 character: the cp1252 reading failed too.
    data = f"{head}<p>1.1 ÁRBOL rule.</p>\n".encode() + b"<p>1.2 Caf\xe9.</p>"
    offset = data.index(b"\xe9")
    message = rf"^a\.html: not valid UTF-8: the text is UTF-8 but .* on line 2 at byte offset {offset} \(0xe9\)"
    with pytest.raises(DocumentRejected, match=message):
        parse_document("a.html", data)


@pytest.mark.parametrize("head", [b"", b'<meta charset="utf-8">'])
def test_binary_data_named_html_is_still_refused_as_binary(head: bytes) -> None:
    junk = head + random.Random(11).randbytes(4096)
    with pytest.raises(DocumentRejected, match=r"^junk\.html: not readable as text .* looks like binary data$"):
        parse_document("junk.html", junk)
    nul = head + b"<p>1.1 text\x00\x00\xe9 more</p>"
    with pytest.raises(DocumentRejected, match=r"binary data"):
        parse_document("junk.html", nul)


@pytest.mark.parametrize(
    ("charset", "encoding", "rule"),
    [
        ("iso-8859-1", "latin-1", "1.1 The café rule applies."),  # é is E9: nothing that looks like UTF-8
        # These hold a few byte pairs that are also valid UTF-8 ("ß“" is DF 93, "её" in KOI8-R
        # C5 A3), among many more bytes that are not: the declaration stands.
        ("windows-1252", "cp1252", "1.1 Die Bank bewahrt Daten fünf Jahre auf; „das Maß“ gilt für Größe."),
        ("koi8-r", "koi8_r", "1.1 Банк хранит её данные; всё ещё действует учёт операций."),
    ],
)
def test_html_in_a_declared_single_byte_charset_is_read_in_it(charset: str, encoding: str, rule: str) -> None:
    html = f'<meta charset="{charset}"><p>{rule}</p>'.encode(encoding)
    assert parse_document("rules.html", html).text == rule


def test_html_entity_declarations_are_rejected() -> None:
    html = b'<!DOCTYPE html [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><html><body><p>&lol2;</p></body></html>'
    with pytest.raises(DocumentRejected, match=r"^evil\.htm: the HTML declares XML entities"):
        parse_document("evil.htm", html)


def test_html_with_only_script_has_no_text() -> None:
    with pytest.raises(DocumentRejected, match=r"no text found"):
        parse_document("empty.html", b"<html><body><script>alert(1)</script></body></html>")
