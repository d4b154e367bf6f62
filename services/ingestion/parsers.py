"""Turn an uploaded file into normalised plain text plus the metadata written inside it.

Every format ends up in the shape the segmenter reads: one paragraph per line, headings
as Markdown "#" lines, table rows between "/Table Start" and "/Table End" with cells
separated by tabs. Uploads are untrusted, so each parser refuses what could hurt the
server before doing any work: oversize files, zip bombs, XML with entity declarations
(billion laughs, external entities), encrypted or unreadable PDFs.
"""

from __future__ import annotations

import codecs
import io
import re
import unicodedata
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import PurePath
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, ParseError

import yaml
from bs4 import BeautifulSoup, NavigableString, Tag
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as parse_xml_safely

from services.errors import DocumentRejected

if TYPE_CHECKING:
    from pypdf import PageObject, PdfReader

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".docx", ".pdf", ".html", ".htm")
DEFAULT_MAX_BYTES = 50 * 1024 * 1024

# Metadata keys read from HTML <meta> tags, DOCX custom properties and PDF document info.
METADATA_KEYS = ("policy_id", "title", "version", "effective_date", "classification", "owner")

# Limits for untrusted containers. A real policy DOCX has a few dozen zip entries and its
# XML compresses about 5-20x; a zip bomb compresses a thousandfold.
_MAX_ZIP_ENTRIES = 1_000
_MAX_ZIP_UNCOMPRESSED_BYTES = 256 * 1024 * 1024
_MAX_COMPRESSION_RATIO = 100
_RATIO_CHECK_FROM_BYTES = 1024 * 1024  # tiny entries may compress well without harm
# The XML parts that are parsed are held to far less than the container: parsing and walking
# them cost about 10 µs and 90 bytes of memory per paragraph, and a crafted document puts one
# in every 4-6 bytes. 256 MiB of such paragraphs passed the zip checks at 99.5x and took 578 s
# and 4 GiB to parse; at this limit the worst case measured 39 s and 400 MiB. Word writes about
# 10-50 KB of XML per page, so this still holds a document of several hundred pages.
_MAX_DOCX_XML_BYTES = 16 * 1024 * 1024
_DOCX_XML_PARTS = (
    "word/document.xml", "word/styles.xml", "word/numbering.xml", "docProps/core.xml", "docProps/custom.xml",
)
_MAX_PDF_PAGES = 5_000
# A PDF decompression bomb repeats one small compressed stream: pages sharing a content
# stream, or a form XObject drawn again and again. Real policy PDFs measured here hold page
# content about the size of the file and run about 0.05 drawing operations per file byte.
# Page content is held to the zip limits above; operations (forms included) to this budget.
_PDF_OPERATIONS_PER_BYTE = 1
_MIN_PDF_OPERATIONS = 100_000
# Word's own limits on list numbering: levels 0-8, numbers up to 32767. A label is built
# from the number ("zz...", "MMM..."), so an unchecked start value could ask for terabytes.
_MAX_LIST_LEVEL = 8
_MAX_LIST_NUMBER = 32_767
_MAX_FRONT_MATTER_CHARS = 64 * 1024
# Share of control characters above which decoded "text" is really binary data.
_MAX_CONTROL_CHAR_SHARE = 0.005

_TABLE_START, _TABLE_END = "/Table Start", "/Table End"

_INVISIBLE = dict.fromkeys(
    map(ord, "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2066\u2067\u2068\u2069\ufeff")
)
_SPACES = dict.fromkeys(
    map(ord, "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"), " "
)
_LINE_SEPARATORS = {ord("\u2028"): "\n", ord("\u2029"): "\n", ord("\x0b"): "\n", ord("\x0c"): "\n", ord("\x85"): "\n"}
_LIGATURES = {ord(c): unicodedata.normalize("NFKC", c) for c in "\ufb00\ufb01\ufb02\ufb03\ufb04\ufb05\ufb06"}
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
# A well-formed UTF-8 multi-byte sequence (no overlongs, surrogates or code points past U+10FFFF).
_UTF8_MULTIBYTE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]"
    rb"|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)
_NON_ASCII_BYTES = bytes(range(0x80, 0x100))


@dataclass(frozen=True)
class ParsedDocument:
    text: str
    metadata: dict[str, str] = field(default_factory=dict)


def parse_document(filename: str, data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> ParsedDocument:
    """Normalised text and embedded metadata of one file; DocumentRejected if it cannot be used."""
    suffix = PurePath(filename).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DocumentRejected(
            f"{filename}: unsupported file type {suffix or '(none)'!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if not data:
        raise DocumentRejected(f"{filename}: the file is empty")
    if len(data) > max_bytes:
        raise DocumentRejected(f"{filename}: the file is {len(data)} bytes, over the limit of {max_bytes} bytes")
    parser = _PARSERS[suffix]
    parsed = parser(filename, data)
    if not parsed.text.strip():
        raise DocumentRejected(f"{filename}: no text found in the file")
    return parsed


# -- plain text and Markdown -----------------------------------------------------------------


def _parse_text(filename: str, data: bytes) -> ParsedDocument:
    text = _normalise(_decode_text(filename, data))
    body, metadata = _split_front_matter(filename, text)
    if PurePath(filename).suffix.lower() in (".md", ".markdown") and "title" not in metadata:
        # The document's own H1 is its title when the front matter does not give one.
        # The closing "#"s are stripped outside the pattern, which otherwise backtracks
        # in cubic time on a long run of spaces.
        first_heading = re.search(r"^#\s+(.+)$", body, re.MULTILINE)
        title = first_heading.group(1).rstrip().rstrip("#").rstrip() if first_heading else ""
        if title:
            metadata["title"] = title
    return ParsedDocument(body, metadata)


def _decode_text(filename: str, data: bytes, declared: str | None = None) -> str:
    # Not UTF-8: the charset the file declares, else cp1252, which older Windows tools save;
    # anything that decodes as neither is binary, unless it is UTF-8 text with a bad byte.
    fallback = declared or "cp1252"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        candidates = ("utf-16",)
    else:
        candidates = ("utf-8-sig", fallback)
    for encoding in candidates:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding == fallback and declared is not None and _reads_a_byte_as_a_character(encoding):
            # Before the control characters are counted: UTF-8 punctuation read as ISO 8859-x
            # ("–" is E2 80 93) is C1 controls, and the file would be called binary data.
            _refuse_utf8_under_a_stale_declaration(filename, data)
        if _looks_binary(text):
            break
        if encoding == "cp1252" and declared is None:
            _refuse_broken_utf8(filename, data)
        return text
    else:
        # Nothing decoded. Text that says it is UTF-8, or is UTF-8 but for a byte that is not
        # cp1252 either, is broken text, not binary data: the uploader is told which byte.
        if not _looks_binary(data.decode("utf-8", errors="replace")):
            if declared == "utf-8":
                _refuse_invalid_utf8(filename, data, "the file declares UTF-8 but")
            elif declared is None:
                _refuse_broken_utf8(filename, data)
            elif _reads_a_byte_as_a_character(declared):
                _refuse_utf8_under_a_stale_declaration(filename, data)
    raise DocumentRejected(f"{filename}: not readable as text (expected UTF-8); the file looks like binary data")


def _looks_binary(text: str) -> bool:
    return "\x00" in text or len(_CONTROL_CHARS.findall(text)) > _MAX_CONTROL_CHAR_SHARE * len(text)


def _reads_a_byte_as_a_character(encoding: str) -> bool:
    """Single-byte charsets (cp1252, ISO 8859-x, KOI8-R), where UTF-8 read byte by byte turns to
    garbage; not Shift JIS or EUC-JP, whose own byte pairs often look like UTF-8."""
    return len(bytes(range(256)).decode(encoding, errors="replace")) == 256


def _refuse_broken_utf8(filename: str, data: bytes) -> None:
    """UTF-8 text with a bad byte is refused: read as cp1252, "₹50" would be indexed as "â‚¹50".

    A cp1252 file almost never holds a valid UTF-8 multi-byte sequence (an accented capital
    followed by a symbol), so one such sequence means the file was meant as UTF-8.
    """
    if _UTF8_MULTIBYTE.search(data) is None:
        return
    _refuse_invalid_utf8(filename, data, "the text is UTF-8 but")


def _refuse_invalid_utf8(filename: str, data: bytes, evidence: str) -> None:
    """Refuse data that does not decode as UTF-8, naming the line, byte offset and bytes of the first bad sequence."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = " ".join(f"0x{byte:02x}" for byte in data[exc.start:exc.end])
        raise DocumentRejected(
            f"{filename}: not valid UTF-8: {evidence} its first invalid byte sequence is on line {line} at byte "
            f"offset {exc.start} ({bad}); save the file as UTF-8 and upload it again"
        ) from None


def _refuse_utf8_under_a_stale_declaration(filename: str, data: bytes) -> None:
    """Text that declares a single-byte charset but is UTF-8 with a bad byte is refused as well.

    The declaration is evidence of its own, and genuine text in some single-byte charsets is
    full of byte pairs that are valid UTF-8 (KOI8-R "её", cp1251 "Её", TIS-620 Thai, German
    "Maß“" in cp1252): it is taken as stale only when UTF-8 sequences hold most of the
    non-ASCII bytes.
    """
    non_ascii = len(data) - len(data.translate(None, _NON_ASCII_BYTES))
    in_sequences = len(data) - len(_UTF8_MULTIBYTE.sub(b"", data))
    if in_sequences * 2 > non_ascii:
        _refuse_broken_utf8(filename, data)


def _split_front_matter(filename: str, text: str) -> tuple[str, dict[str, str]]:
    """YAML between a first line '---' and the next '---' (or '...') line is metadata."""
    match = re.match(r"^---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|$)", text, re.DOTALL)
    if match is None:
        return text, {}
    if len(match.group(1)) > _MAX_FRONT_MATTER_CHARS:
        raise DocumentRejected(f"{filename}: the front matter is longer than {_MAX_FRONT_MATTER_CHARS} characters")
    try:
        loaded = load_yaml_as_text(match.group(1))
    except yaml.YAMLError as exc:
        raise DocumentRejected(f"{filename}: the front matter is not valid YAML ({_first_line(exc)})") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise DocumentRejected(f"{filename}: the front matter must be a YAML mapping of field: value")
    return text[match.end():], scalar_fields(loaded)


def load_yaml_as_text(source: str) -> object:
    """YAML with every scalar kept as written: version 2.10 stays "2.10", not the float 2.1."""
    return yaml.load(source, Loader=yaml.BaseLoader)  # noqa: S506 - BaseLoader builds only str, list, dict


def scalar_fields(mapping: dict) -> dict[str, str]:
    """String form of a metadata mapping's scalar values (dates as ISO 8601); nested values are dropped."""
    fields: dict[str, str] = {}
    for key, value in mapping.items():
        if value is None or isinstance(value, (dict, list, tuple, set)):
            continue
        if isinstance(value, (date, datetime)):
            value = value.isoformat()
        fields[str(key).strip()] = str(value).strip()
    return fields


# -- DOCX --------------------------------------------------------------------------------------

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_DC_TITLE = "{http://purl.org/dc/elements/1.1/}title"
_CUSTOM_PROPERTY = "{http://schemas.openxmlformats.org/officeDocument/2006/custom-properties}property"


def _parse_docx(filename: str, data: bytes) -> ParsedDocument:
    parts = _DocxParts(filename, data)
    document = parts.xml("word/document.xml", required=True)
    styles_xml = parts.xml("word/styles.xml")
    styles = _heading_levels(styles_xml)
    body = document.find(f"{_W}body")
    if body is None:
        raise DocumentRejected(f"{filename}: the DOCX has no document body")
    lines: list[str] = []
    try:
        numbering = _Numbering(parts.xml("word/numbering.xml"), styles_xml)
        _docx_blocks(body, styles, numbering, lines)
    except _InvalidNumbering as exc:
        raise DocumentRejected(f"{filename}: the DOCX list numbering is invalid ({exc})") from exc
    except RecursionError as exc:
        raise DocumentRejected(f"{filename}: the DOCX is nested too deeply to read") from exc
    metadata: dict[str, str] = {}
    core = parts.xml("docProps/core.xml")
    if core is not None:
        title = core.find(_DC_TITLE)
        if title is not None and title.text and title.text.strip():
            metadata["title"] = title.text.strip()
    custom = parts.xml("docProps/custom.xml")
    if custom is not None:
        for prop in custom.iter(_CUSTOM_PROPERTY):
            key = _metadata_key(prop.get("name", ""))
            value = "".join(prop.itertext()).strip()
            if key in METADATA_KEYS and value:
                metadata[key] = value
    return ParsedDocument(_normalise("\n".join(lines)), metadata)


class _DocxParts:
    """The zip container, checked for bombs before any part is decompressed."""

    def __init__(self, filename: str, data: bytes) -> None:
        self.filename = filename
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
            raise DocumentRejected(f"{filename}: not a valid DOCX file (the zip container is broken)") from exc
        if len(infos) > _MAX_ZIP_ENTRIES:
            raise DocumentRejected(
                f"{filename}: the DOCX has {len(infos)} zip entries, over the limit of {_MAX_ZIP_ENTRIES}"
            )
        total = sum(info.file_size for info in infos)
        if total > _MAX_ZIP_UNCOMPRESSED_BYTES:
            raise DocumentRejected(
                f"{filename}: the DOCX would expand to {total} bytes, over the limit of {_MAX_ZIP_UNCOMPRESSED_BYTES}"
            )
        xml_bytes = sum(info.file_size for info in infos if info.filename in _DOCX_XML_PARTS)
        if xml_bytes > _MAX_DOCX_XML_BYTES:
            raise DocumentRejected(
                f"{filename}: the DOCX text (word/document.xml with its styles, numbering and properties) is "
                f"{xml_bytes} bytes of XML, over the limit of {_MAX_DOCX_XML_BYTES}"
            )
        for info in infos:
            if info.flag_bits & 0x1:
                raise DocumentRejected(f"{filename}: the DOCX is encrypted")
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > _RATIO_CHECK_FROM_BYTES and ratio > _MAX_COMPRESSION_RATIO:
                raise DocumentRejected(
                    f"{filename}: zip entry {info.filename!r} expands {ratio:.0f}x (a zip bomb); "
                    f"the limit is {_MAX_COMPRESSION_RATIO}x"
                )
        self.sizes = {info.filename: info.file_size for info in infos}

    def xml(self, name: str, *, required: bool = False) -> Element | None:
        if name not in self.sizes:
            if required:
                raise DocumentRejected(f"{self.filename}: not a Word document ({name} is missing)")
            return None
        try:
            with self.zip.open(name) as part:
                # The declared size is checked above; read no more than it even if the entry lies.
                raw = part.read(self.sizes[name] + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise DocumentRejected(f"{self.filename}: the DOCX part {name} is corrupt") from exc
        except NotImplementedError as exc:
            raise DocumentRejected(
                f"{self.filename}: the DOCX part {name} uses zip compression method "
                f"{self.zip.getinfo(name).compress_type}, which cannot be read"
            ) from exc
        try:
            # DOCX parts never carry a DTD; refusing any stops entity expansion and external entities.
            return parse_xml_safely(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        except DefusedXmlException as exc:
            raise DocumentRejected(
                f"{self.filename}: {name} declares a DTD or XML entities, which are not accepted"
            ) from exc
        except ParseError as exc:
            raise DocumentRejected(f"{self.filename}: {name} is not well-formed XML ({exc})") from exc


def _docx_blocks(container: Element, styles: dict[str, int], numbering: _Numbering, lines: list[str]) -> None:
    for block in container:
        if block.tag == f"{_W}p":
            line = _docx_paragraph(block, styles, numbering)
            if line.strip():
                lines.append(line)
        elif block.tag == f"{_W}tbl":
            lines.append(_TABLE_START)
            for row in block.iter(f"{_W}tr"):
                cells = [
                    " ".join(_run_text(p) for p in cell.iter(f"{_W}p")).strip()
                    for cell in row.findall(f"{_W}tc")
                ]
                if any(cells):
                    lines.append("\t".join(cells))
            lines.append(_TABLE_END)
        elif block.tag == f"{_W}sdt":
            content = block.find(f"{_W}sdtContent")
            if content is not None:
                _docx_blocks(content, styles, numbering, lines)


def _docx_paragraph(paragraph: Element, styles: dict[str, int], numbering: _Numbering) -> str:
    text = _run_text(paragraph).strip()
    style = paragraph.find(f"{_W}pPr/{_W}pStyle")
    style_id = style.get(f"{_W}val", "") if style is not None else ""
    label = numbering.label(paragraph, style_id)
    if label:
        text = f"{label} {text}"
    level = styles.get(style_id)
    if level is not None and text:
        return f"{'#' * level} {text}"
    return text


def _run_text(paragraph: Element) -> str:
    parts: list[str] = []
    for run in paragraph.iter(f"{_W}r"):
        for child in run:
            if child.tag == f"{_W}t":
                parts.append(child.text or "")
            elif child.tag == f"{_W}tab":
                parts.append("\t")
            elif child.tag in (f"{_W}br", f"{_W}cr"):
                parts.append(" ")
    return "".join(parts)


def _heading_levels(styles: Element | None) -> dict[str, int]:
    """Style id -> Markdown heading level for Title and Heading 1..6 styles."""
    levels = {"Title": 1, **{f"Heading{n}": min(n, 6) for n in range(1, 10)}}
    if styles is None:
        return levels
    for style in styles.iter(f"{_W}style"):
        style_id = style.get(f"{_W}styleId", "")
        name_element = style.find(f"{_W}name")
        name = (name_element.get(f"{_W}val", "") if name_element is not None else "").lower()
        match = re.fullmatch(r"heading (\d)", name)
        if match:
            levels[style_id] = min(int(match.group(1)), 6)
        elif name == "title":
            levels[style_id] = 1
    return levels


class _InvalidNumbering(ValueError):
    """numbering.xml asks for a list level or number Word itself would not produce."""


class _Numbering:
    """Word's automatic numbering ("4.1", "(a)"), which is not in the paragraph text.

    Clause numbers are what people cite, so a policy numbered by Word must keep them.
    Covers decimal, letter and roman formats with lvlText patterns such as "%1.%2";
    bullets get no label.
    """

    def __init__(self, numbering: Element | None, styles: Element | None) -> None:
        self.levels: dict[str, dict[int, tuple[int, str, str]]] = {}  # abstractNumId -> ilvl -> (start, fmt, text)
        self.abstract_of: dict[str, str] = {}
        self.counters: dict[str, list[int]] = {}
        self.style_numbering: dict[str, tuple[str, int]] = {}
        if numbering is None:
            return
        for abstract in numbering.iter(f"{_W}abstractNum"):
            levels = {}
            for level in abstract.findall(f"{_W}lvl"):
                levels[_list_level(level.get(f"{_W}ilvl"))] = (
                    _list_value(_val(level, "start"), "start", 1, _MAX_LIST_NUMBER),
                    _val(level, "numFmt") or "decimal",
                    _val(level, "lvlText") or "",
                )
            self.levels[abstract.get(f"{_W}abstractNumId", "")] = levels
        for num in numbering.iter(f"{_W}num"):
            self.abstract_of[num.get(f"{_W}numId", "")] = _val(num, "abstractNumId") or ""
        if styles is not None:
            for style in styles.iter(f"{_W}style"):
                num_pr = style.find(f"{_W}pPr/{_W}numPr")
                if num_pr is not None:
                    num_id = _val(num_pr, "numId")
                    if num_id:
                        self.style_numbering[style.get(f"{_W}styleId", "")] = (num_id, _list_level(_val(num_pr, "ilvl")))

    def label(self, paragraph: Element, style_id: str) -> str:
        num_pr = paragraph.find(f"{_W}pPr/{_W}numPr")
        if num_pr is not None and _val(num_pr, "numId"):
            num_id, ilvl = _val(num_pr, "numId"), _list_level(_val(num_pr, "ilvl"))
        elif style_id in self.style_numbering:
            num_id, ilvl = self.style_numbering[style_id]
        else:
            return ""
        abstract = self.abstract_of.get(num_id or "")
        levels = self.levels.get(abstract or "")
        if not levels or ilvl not in levels or num_id == "0":
            return ""
        counters = self.counters.setdefault(abstract, [0] * 10)
        start, fmt, pattern = levels[ilvl]
        counters[ilvl] = counters[ilvl] + 1 if counters[ilvl] else start
        if counters[ilvl] > _MAX_LIST_NUMBER:
            raise _InvalidNumbering(f"a list counts past {_MAX_LIST_NUMBER}")
        for deeper in range(ilvl + 1, len(counters)):
            counters[deeper] = 0
        if fmt in ("bullet", "none") or not pattern:
            return ""

        def render(match: re.Match[str]) -> str:
            level = int(match.group(1)) - 1
            level_start, level_fmt, _ = levels.get(level, (1, "decimal", ""))
            return _format_number(counters[level] or level_start, level_fmt)

        return re.sub(r"%(\d)", render, pattern)


def _list_level(text: str | None) -> int:
    return _list_value(text, "level", 0, _MAX_LIST_LEVEL)


def _list_value(text: str | None, what: str, default: int, limit: int) -> int:
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise _InvalidNumbering(f"{what} {text!r} is not a whole number") from None
    if not 0 <= value <= limit:
        raise _InvalidNumbering(f"{what} {value} is outside 0..{limit}")
    return value


def _val(element: Element, child: str) -> str | None:
    found = element.find(f"{_W}{child}")
    return found.get(f"{_W}val") if found is not None else None


def _format_number(value: int, fmt: str) -> str:
    if fmt == "lowerLetter":
        return _letters(value)
    if fmt == "upperLetter":
        return _letters(value).upper()
    if fmt == "lowerRoman":
        return _roman(value).lower()
    if fmt == "upperRoman":
        return _roman(value)
    return str(value)


def _letters(value: int) -> str:
    # Word repeats the letter after z: aa, bb, ...
    return chr(ord("a") + (value - 1) % 26) * ((value - 1) // 26 + 1)


def _roman(value: int) -> str:
    numerals = ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
                (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"))
    out = []
    for amount, numeral in numerals:
        count, value = divmod(value, amount)
        out.append(numeral * count)
    return "".join(out)


# -- PDF ---------------------------------------------------------------------------------------


def _parse_pdf(filename: str, data: bytes) -> ParsedDocument:
    from pypdf import PdfReader  # imported here: only PDF uploads need it

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise DocumentRejected(f"{filename}: the PDF is encrypted; upload an unencrypted copy")
        if len(reader.pages) > _MAX_PDF_PAGES:
            raise DocumentRejected(
                f"{filename}: the PDF has {len(reader.pages)} pages, over the limit of {_MAX_PDF_PAGES}"
            )
        pages = _pdf_page_texts(filename, reader, len(data))
        info = reader.metadata or {}
        metadata = {
            key: str(info.get(f"/{name}")).strip()
            for key, name in (("title", "Title"), *((k, k) for k in METADATA_KEYS))
            if info.get(f"/{name}") and str(info.get(f"/{name}")).strip()
        }
    except DocumentRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - pypdf signals a broken file with many exception types
        raise DocumentRejected(f"{filename}: not a readable PDF ({type(exc).__name__}: {_first_line(exc)})") from exc
    text = _normalise("\n".join(pages).translate(_LIGATURES))
    if not text.strip():
        raise DocumentRejected(f"{filename}: the PDF has no extractable text (is it a scan? run OCR first)")
    return ParsedDocument(text, metadata)


def _pdf_page_texts(filename: str, reader: PdfReader, file_bytes: int) -> list[str]:
    content_limit = max(_RATIO_CHECK_FROM_BYTES, _MAX_COMPRESSION_RATIO * file_bytes)
    operation_limit = max(_MIN_PDF_OPERATIONS, _PDF_OPERATIONS_PER_BYTE * file_bytes)
    content_bytes = operations = 0

    def count_operation(*_: object) -> None:
        nonlocal operations
        operations += 1
        # Raised inside a form pypdf logs and skips the rest of the form; the next
        # operation of the page raises again, out of extract_text.
        if operations > operation_limit:
            raise DocumentRejected(
                f"{filename}: the PDF runs over {operation_limit} drawing operations for a {file_bytes}-byte "
                "file (a decompression bomb: the same content drawn again and again)"
            )

    texts = []
    for page in reader.pages:
        content_bytes += _pdf_content_bytes(page)
        if content_bytes > content_limit:
            raise DocumentRejected(
                f"{filename}: the PDF's page content expands to over {content_limit} bytes, more than "
                f"{_MAX_COMPRESSION_RATIO}x the file (a decompression bomb)"
            )
        texts.append(page.extract_text(visitor_operand_before=count_operation) or "")
    if operations > operation_limit:
        count_operation()  # the last operation was a form that went over the budget
    return texts


def _pdf_content_bytes(page: PageObject) -> int:
    """Decoded size of a page's content streams (pypdf caps each stream's decoding itself)."""
    from pypdf.generic import ArrayObject

    contents = page.get("/Contents")
    if contents is None:
        return 0
    contents = contents.get_object()
    streams = contents if isinstance(contents, ArrayObject) else [contents]
    return sum(len(stream.get_object().get_data()) for stream in streams)


# -- HTML --------------------------------------------------------------------------------------

_HTML_SKIP = {"script", "style", "noscript", "template", "head", "svg", "math", "iframe", "object", "embed", "canvas"}
_HTML_BLOCKS = {
    "p", "div", "section", "article", "header", "footer", "main", "aside", "nav", "ul", "ol", "li", "dl",
    "dt", "dd", "blockquote", "pre", "figure", "figcaption", "address", "hr", "form", "fieldset", "details",
    "summary", "caption", "body", "html",
}
_HTML_ENTITY_DECLARATION = re.compile(r"<!ENTITY", re.IGNORECASE)


def _parse_html(filename: str, data: bytes) -> ParsedDocument:
    text = _decode_text(filename, data, _declared_charset(data))
    if _HTML_ENTITY_DECLARATION.search(text):
        raise DocumentRejected(f"{filename}: the HTML declares XML entities (<!ENTITY>), which are not accepted")
    try:
        soup = BeautifulSoup(text, "lxml")
        metadata = _html_metadata(soup)
        lines: list[str] = []
        _HtmlText(lines).walk(soup.body or soup)
    except RecursionError as exc:
        raise DocumentRejected(f"{filename}: the HTML is nested too deeply to read") from exc
    return ParsedDocument(_normalise("\n".join(lines)), metadata)


def _declared_charset(data: bytes) -> str | None:
    """The Python codec for the charset a <meta> tag or XML declaration names, if usable."""
    from bs4.dammit import EncodingDetector

    declared = EncodingDetector.find_declared_encoding(data, is_html=True)
    try:
        codec = codecs.lookup(declared).name if declared else None
    except LookupError:
        return None
    if codec in ("iso8859-1", "ascii"):
        return "cp1252"  # what browsers read for these labels (WHATWG Encoding)
    if codec is None or codec.startswith(("utf-16", "utf-32")):
        return None  # a UTF-16 declaration without a byte order mark is read as UTF-8
    return codec


def _html_metadata(soup: BeautifulSoup) -> dict[str, str]:
    metadata: dict[str, str] = {}
    if soup.title and soup.title.get_text(strip=True):
        metadata["title"] = " ".join(soup.title.get_text().split())
    for meta in soup.find_all("meta"):
        key = _metadata_key(str(meta.get("name") or ""))
        content = str(meta.get("content") or "").strip()
        if key in METADATA_KEYS and content:
            metadata[key] = content
    return metadata


class _HtmlText:
    """Block elements become lines, headings "#" lines, tables tab-separated rows."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.buffer: list[str] = []

    def walk(self, node: Tag) -> None:
        for child in node.children:
            if isinstance(child, NavigableString):
                if type(child) is NavigableString:  # not a comment, doctype or CDATA
                    self.buffer.append(str(child))
                continue
            if not isinstance(child, Tag):
                continue
            name = child.name
            if name in _HTML_SKIP:
                continue
            if re.fullmatch(r"h[1-6]", name):
                self.flush()
                heading = _collapse(child.get_text(" "))
                if heading:
                    self.lines.append(f"{'#' * int(name[1])} {heading}")
            elif name == "table":
                self.flush()
                self.table(child)
            elif name == "br":
                self.flush()
            elif name == "ol":
                self.flush()
                self.ordered_list(child)
            elif name in _HTML_BLOCKS:
                self.flush()
                self.walk(child)
                self.flush()
            else:
                self.walk(child)

    def ordered_list(self, ordered: Tag) -> None:
        """Write out the numbers a browser would show: clause numbers must survive."""
        try:
            value = int(str(ordered.get("start") or 1))
        except ValueError:
            value = 1
        kind = str(ordered.get("type") or "1")
        for item in ordered.find_all("li", recursive=False):
            label = {"a": "lowerLetter", "A": "upperLetter", "i": "lowerRoman", "I": "upperRoman"}.get(kind, "decimal")
            written = _collapse(item.get_text(" "))
            # Lists whose items already carry their own numbers are left as they are.
            if written and not re.match(r"^(?:\(?[0-9a-zA-Z]{1,5}[.)]|\d+(?:\.\d+)+)\s", written):
                self.buffer.append(f"{_format_number(value, label)}. ")
            self.walk(item)
            self.flush()
            value += 1

    def table(self, table: Tag) -> None:
        rows = []
        for row in table.find_all("tr"):
            cells = [_collapse(cell.get_text(" ")) for cell in row.find_all(["td", "th"], recursive=False)]
            if any(cells):
                rows.append("\t".join(cells))
        if rows:
            self.lines += [_TABLE_START, *rows, _TABLE_END]

    def flush(self) -> None:
        line = _collapse("".join(self.buffer))
        self.buffer.clear()
        if line:
            self.lines.append(line)


# -- shared ------------------------------------------------------------------------------------


def _normalise(text: str) -> str:
    """One newline style, NFC, no invisible marks; tabs are kept (they separate clause numbers)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFC", text)
    return text.translate(_INVISIBLE).translate(_SPACES).translate(_LINE_SEPARATORS)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _metadata_key(name: str) -> str:
    return re.sub(r"[\s-]+", "_", name.strip().lower())


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200]


_PARSERS: dict[str, Callable[[str, bytes], ParsedDocument]] = {
    ".md": _parse_text,
    ".markdown": _parse_text,
    ".txt": _parse_text,
    ".docx": _parse_docx,
    ".pdf": _parse_pdf,
    ".html": _parse_html,
    ".htm": _parse_html,
}
