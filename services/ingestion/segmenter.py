"""Split a parsed document into numbered clauses, each with its enclosing headings.

A clause starts at a line that begins with a clause number. Numbers are kept as the
document writes them ("1.", "4.1.2", "1.2.1.(1)", "1.2.1.Guidance.1.", "Part 3.Chapter 1.7.(1)",
"A.1.", "12)") because people cite them that way; the ObliQA benchmark's PassageIDs use
the same form. Three things are resolved from context:

* sub-items on their own line, "(a)", "(ii)", "a)", "b.", are appended to the clause they
  belong to: "(a)" under "4.1.1" is "4.1.1.(a)", "(i)" under that is "4.1.1.(a).(i)";
* appendix lines numbered "A2.1" under the heading "APP2" become "APP2.A2.1";
* a Markdown heading "## 4. Scope" is clause "4" (no trailing dot).

Lines that start no clause (continuations, bullets, table rows between "/Table Start" and
"/Table End") belong to the clause above them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

PREAMBLE = "preamble"

_TABLE_START = "/Table Start"
_TABLE_END = "/Table End"

# The closing "##" and any emphasis are stripped with str methods, not in the pattern:
# "(.*?)\s*#*\s*$" backtracked in cubic time on a long run of spaces inside the line.
_MARKDOWN_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")

# Containers open a part of a document rather than a rule. Longer spellings come first so
# that "APPENDIX" is not read as "APP" followed by "ENDIX".
_CONTAINER_WORDS = (
    "SCHEDULE|Schedule|APPENDIX|Appendix|ANNEX|Annex|APP|PART|Part|CHAPTER|Chapter|SECTION|Section"
)
_CONTAINER_RANK = {
    "schedule": 0, "appendix": 0, "annex": 0, "app": 0,
    "part": 1, "chapter": 2, "section": 3,
}
_CONTAINER = re.compile(rf"^({_CONTAINER_WORDS})(?![A-Za-z])(?:\s?(\d+[A-Z]?|[IVXL]+\b|[A-Z]\b))?:?")

# Where a clause number may start: a container, a dotted number, a lettered number
# ("A.1.", "A2.1", "D.1.1."), or a number closed by a bracket ("12)").
_BASE_START = re.compile(
    rf"^(?:(?:{_CONTAINER_WORDS})(?=[\s\d.:]|$)|\d+[A-Z]?(?:\.|\)|$)|\d+[A-Z]?\.|[A-Z]\d*\.(?:\d|$))"
)
# One dot-separated part of a number after its start: "2", "11A", "(1)", "B" (as in "7.B.1."),
# "A2" (as in "APP2.A2.1"), or a word label such as "Guidance" or "Pricing_controls"
# (not an all-capitals title, which is the heading's text: "PART 1.INTRODUCTION").
_SEGMENT = r"\.(?:\d{1,3}[A-Z]?|\([A-Za-z0-9]{1,5}\)|[A-Z]\d{0,2}(?=\.)|[A-Z][a-z][A-Za-z_]*)"
_TRAILING_SEGMENTS = re.compile(rf"^(?:{_SEGMENT})*\.?(?=\s|$)|^(?:{_SEGMENT})*")
# A number followed by a space rather than a tab. Stricter, because such a line is often
# prose: a bare "4" or "2018" is not a number here, "4.", "4.1", "A.1." and "12)" are.
_UNTABBED = re.compile(
    rf"^(?:\d{{1,3}}[A-Z]?(?:{_SEGMENT})+\.?|\d{{1,3}}\.|[A-Z]\d{{0,2}}\.\d{{1,3}}[A-Z]?(?:{_SEGMENT})*\.?"
    rf"|[A-Z]\d{{1,2}}(?:{_SEGMENT})+\.?|\d{{1,3}}\))(?=\s|$)"
)

# A number standing alone before a tab may also hold containers and stray spaces:
# "Part 3.Chapter 1.7.(1)", "Schedule 1.Part 3 .85.(1)", "SECTION VIII.ANNEX 3", "APPENDIX.Appendix A:.65)".
_CONTAINER_SEGMENT = rf"\s?\.(?:{_CONTAINER_WORDS})(?![A-Za-z])(?:\s?(?:\d+[A-Z]?|[IVXL]+|[A-Z]))?:?"
# Also lower-case item labels ("166).a)", "4.9.a.") and topic labels with spaces
# ("6.2.2.Senior Management Responsibilities.2.").
_TABBED_SEGMENT = r"\.[a-z]{1,4}(?=[.)]|$)|\)|\.[A-Z][a-z]+(?:[ _][A-Za-z()&,'/-]+)*"
_TABBED_NUMBER = re.compile(
    rf"^(?:(?:{_CONTAINER_WORDS})(?![A-Za-z])(?:\s?(?:\d+[A-Z]?|[IVXL]+|[A-Z]))?:?|\d{{1,3}}[A-Z]?|[A-Z]\d{{0,2}})"
    rf"(?:{_CONTAINER_SEGMENT}|\s?{_SEGMENT}|{_TABBED_SEGMENT}|\s\(\d{{1,3}}\))*[.)]?$"
)

# Sub-items on their own line: "(a)", "(iv)", "(2)", "(A)", "a)", "iv)", "b.", "ii." (not
# "etc." or "see." at the start of a wrapped line: bare labels are one letter or roman).
_SUB_ITEM = re.compile(r"^(\((?:[a-z]{1,5}|[A-Z]|\d{1,3})\)|(?:[a-z]|[ivxl]{2,6})[.)])(?=\s|$)")
_ROMAN = re.compile(r"^[ivxl]+$")

_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\ufeff"))


@dataclass(frozen=True)
class Clause:
    number: str
    heading_path: tuple[str, ...]
    text: str


@dataclass
class _Open:
    """The clause being collected."""

    number: str
    heading_path: tuple[str, ...]
    lines: list[str]


@dataclass(frozen=True)
class _Heading:
    kind: str  # "markdown", "container" or "numbered"
    level: int  # markdown level or container rank; unused for numbered headings
    key: str  # the clause number without trailing dots (for numbered ancestry)
    label: str


@dataclass(frozen=True)
class _NumberedLine:
    number: str
    rest: str
    is_container: bool


def segment(text: str) -> list[Clause]:
    """Clauses of a document in reading order; text before the first clause is "preamble"."""
    return _Segmenter().run(text)


class _Segmenter:
    def __init__(self) -> None:
        self.clauses: list[Clause] = []
        self.current: _Open | None = None
        self.preamble: list[str] = []
        self.headings: list[_Heading] = []
        # Numbering state for sub-items: the clause they hang off and the open item labels.
        self.base = ""
        self.base_path: tuple[str, ...] = ()
        self.items: list[tuple[str, str]] = []  # (style, label)
        self.appendix: tuple[str, str] | None = None  # ("APP2", "2")
        self.base_is_container = False
        self.last_top: dict[str, int] = {}  # top-level sequence per style: "." or ")"

    def run(self, text: str) -> list[Clause]:
        # Keep a trailing tab: "1.2.1.Guidance<TAB>" is a number with an empty text.
        lines = [raw.translate(_INVISIBLE).rstrip(" \r\n\f\v\u2003\xa0") for raw in text.splitlines()]
        closed_tables = _closed_table_starts(lines)
        in_table = False
        for index, line in enumerate(lines):
            stripped = line.strip()
            if in_table:
                if stripped.startswith(_TABLE_END):
                    in_table = False
                elif stripped:
                    self._continue(line)
                continue
            if stripped.startswith(_TABLE_START):
                # A table whose end marker is missing would swallow the rest of the
                # document, so only a closed table hides clause numbers inside it.
                in_table = index in closed_tables
                continue
            if not stripped or stripped.startswith(_TABLE_END):
                continue
            self._line(line.lstrip())
        self._close()
        if self.preamble:
            self.clauses.insert(0, Clause(PREAMBLE, (), "\n".join(self.preamble)))
        return self.clauses

    # -- one line -----------------------------------------------------------------------

    def _line(self, line: str) -> None:
        heading = _MARKDOWN_HEADING.match(line)
        if heading:
            # "## **4. Limits** ##" is the heading "4. Limits".
            title = heading.group(2).rstrip().rstrip("#").rstrip().strip("*_").strip()
            self._markdown_heading(len(heading.group(1)), title)
            return
        numbered = _read_number(line)
        if numbered is not None:
            self._numbered(numbered)
            return
        if line == "Guidance" and self.base:
            # A bare "Guidance" label opens the guidance block of the rule above it.
            self._start_base(f"{self.base.rstrip('.')}.Guidance", line, is_heading=False)
            return
        sub = _SUB_ITEM.match(line)
        if sub and self.base:
            self._sub_item(sub.group(1), _join(sub.group(1), line[sub.end():].strip()))
            return
        self._continue(line)

    def _markdown_heading(self, level: int, title: str) -> None:
        self._pop_headings(lambda h: h.kind != "markdown" or h.level >= level)
        enclosing = tuple(h.label for h in self.headings)
        self.headings.append(_Heading("markdown", level, "", title))
        numbered = _read_number(title) or _read_number(re.sub(r"^(\d{1,3})\s", r"\1.\t", title))
        if numbered is None:
            if self.current is None and not self.clauses:
                # A title above the first clause is part of the preamble.
                self.preamble.append(title)
                return
            # An unnumbered section ("## Definitions") is cited by its title.
            number, is_container = title, False
        else:
            # "## 4. Scope" is clause "4", as a policy's readers cite it.
            number, is_container = numbered.number.rstrip(".") or numbered.number, numbered.is_container
            if is_container:
                self.last_top.clear()
            else:
                self._note_top_level(number)
        self._close()
        self.current = _Open(number, enclosing, [title])
        self.base, self.base_path, self.items = number, enclosing, []
        self.base_is_container = is_container

    def _numbered(self, numbered: _NumberedLine) -> None:
        number = numbered.number
        list_style = _bare_list_style(number)
        if list_style and (self._continues_list(number, list_style) or self._is_list_restart(number)):
            self._sub_item(number, _join(number, numbered.rest), style_hint=list_style)
            return
        number = self._in_appendix(number, numbered.is_container)
        first_line = _join(number, numbered.rest)
        if numbered.is_container:
            self.last_top.clear()
            rank = _container_rank(number)
            self._pop_headings(
                lambda h: h.kind == "numbered" or (h.kind == "container" and h.level >= rank)
            )
            self._start_base(number, first_line, is_heading=False)
            self.base_is_container = True
            self.headings.append(_Heading("container", rank, _key(number), first_line))
            return
        self._note_top_level(number)
        self._pop_for_number(number)
        is_heading = _looks_like_title(numbered.rest) and "(" not in number
        self._start_base(number, first_line, is_heading=is_heading)

    def _start_base(self, number: str, first_line: str, *, is_heading: bool) -> None:
        self._close()
        path = tuple(h.label for h in self.headings)
        self.current = _Open(number, path, [first_line])
        core, items = _split_items(number)
        self.base, self.base_path, self.items = core, path, items
        self.base_is_container = False
        if is_heading:
            self.headings.append(_Heading("numbered", 0, _key(number), first_line))

    def _sub_item(self, label: str, line: str, style_hint: str | None = None) -> None:
        style = style_hint or _item_style(label, self.items)
        for position, (open_style, _) in enumerate(self.items):
            if open_style == style:
                del self.items[position:]
                break
        self.items.append((style, label))
        number = self.base
        for _, item in self.items:
            number = f"{number.rstrip('.')}.{item}"  # "3" + "2." + "a." -> "3.2.a."
        self._close()
        self.current = _Open(number, self.base_path, [line])

    def _continue(self, line: str) -> None:
        line = line.rstrip()
        if self.current is None:
            self.preamble.append(line)
        else:
            self.current.lines.append(line)

    def _close(self) -> None:
        if self.current is not None:
            self.clauses.append(
                Clause(self.current.number, self.current.heading_path, "\n".join(self.current.lines))
            )
            self.current = None

    # -- context ------------------------------------------------------------------------

    def _in_appendix(self, number: str, is_container: bool) -> str:
        """Appendix rules are numbered "A2.1" under the heading "APP2"; cite them as "APP2.A2.1"."""
        if is_container:
            match = re.match(r"^(APP\s?(\d+))$", number)
            self.appendix = (match.group(1), match.group(2)) if match else None
            return number
        if self.appendix is not None:
            heading, digits = self.appendix
            if re.match(rf"^A{digits}(?:\.|$)", number):
                return f"{heading}.{number}"
        return number

    def _continues_list(self, number: str, style: str) -> bool:
        """ "2." right after list item "1." of a clause is the next item, not chapter 2."""
        previous = next((label for open_style, label in self.items if open_style == style), None)
        return previous is not None and int(number[:-1]) == int(previous[:-1]) + 1

    def _is_list_restart(self, number: str) -> bool:
        """A bare "1." inside a deeper clause starts a list of that clause, not chapter 1 again."""
        match = re.fullmatch(r"(\d{1,3})([.)])", number)
        if match is None or not self.base or int(match.group(1)) != 1:
            return False
        if self.last_top.get(match.group(2)) is None:
            # Right after "Part 2" a "1." starts the part's numbering; after a clause
            # of an appendix or a guidance block it is an item of that clause.
            return not self.base_is_container
        return True

    def _note_top_level(self, number: str) -> None:
        # "12)" paragraphs and "12." chapters are separate sequences: guidance numbered
        # "15)" may quote rule "7.2.1" and then go on with "16)".
        match = re.match(r"^(\d+)([.)]|$)", number)
        if match:
            self.last_top[match.group(2) or "."] = int(match.group(1))

    def _pop_for_number(self, number: str) -> None:
        key = _key(number)
        has_container = _CONTAINER.match(number) is not None

        def stale(h: _Heading) -> bool:
            if h.kind == "numbered":
                return not _is_ancestor(h.key, key)
            if h.kind == "container" and has_container:
                return not _is_ancestor(h.key, key)
            return False

        self._pop_headings(stale)

    def _pop_headings(self, stale: Callable[[_Heading], bool]) -> None:
        # Headings nest, so once one is stale everything opened after it is too.
        for position, heading in enumerate(self.headings):
            if stale(heading):
                del self.headings[position:]
                return


# -- pure helpers ---------------------------------------------------------------------------


def _closed_table_starts(lines: list[str]) -> set[int]:
    """Indexes of "/Table Start" lines followed by "/Table End" before the next table starts."""
    closed: set[int] = set()
    start: int | None = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(_TABLE_START):
            start = index
        elif stripped.startswith(_TABLE_END) and start is not None:
            closed.add(start)
            start = None
    return closed


def _read_number(line: str) -> _NumberedLine | None:
    """The clause number a line starts with, or None if it starts no clause."""
    head, tab, rest = line.partition("\t")
    head = head.strip()
    if tab and head and len(head) <= 160 and _is_tabbed_number(head):
        number = _tidy(head)
        return _NumberedLine(number, rest.strip(), _is_container(number))
    container = _CONTAINER.match(line)
    if container:
        after = line[container.end():]
        more = _TRAILING_SEGMENTS.match(after).group(0)
        remainder = after[len(more):]
        # "Part 12 of FSMR ..." and "Section A10.1 in App10 ..." are prose; "PART 2 CREDIT
        # RISK", "Part 2 - Scope" and "PART 1.INTRODUCTION" are headings.
        heading_like = re.match(r"^(?:\s*[-–—:.]|\s*[A-Z(]|\.[A-Z])", remainder) is not None
        if not remainder.strip() or (heading_like and container.group(2) is not None):
            number = _tidy(container.group(0) + more).rstrip(":")
            return _NumberedLine(number, remainder.strip(" .:-–—\t"), _is_container(number))
        return None
    match = _UNTABBED.match(line)
    if match:
        number = match.group(0)
        return _NumberedLine(_tidy(number), line[len(number):].strip(), False)
    return None


def _bare_list_style(number: str) -> str | None:
    """ "3." and "3)" may be list items; their style keeps the two kinds of list apart."""
    match = re.fullmatch(r"\d{1,3}([.)])", number)
    if match is None:
        return None
    return "dot-digit" if match.group(1) == "." else "close-digit"


def _is_tabbed_number(head: str) -> bool:
    """Whether the text before a tab is a whole clause number, not a line with a tab in it."""
    if _TABBED_NUMBER.match(head):
        return True
    # Guidance blocks may be labelled with their topic: "8.3.6.Guidance on CDD.1.".
    return _BASE_START.match(head) is not None and ".Guidance" in head


def _tidy(number: str) -> str:
    number = re.sub(r"\s+", " ", number).strip()
    # Some sources write "1.1.1.Guidance(ii)"; the citation form is "1.1.1.Guidance.(ii)".
    number = re.sub(r"(?<=[A-Za-z0-9])\(", ".(", number)
    # A copy-paste slip repeats the context: "Part 6.Chapter 2.51.Part 6.Chapter 2.51.(1)".
    first = number.split(".", 1)[0]
    if _CONTAINER.match(first) and number.count(first + ".") > 1:
        number = number[number.rfind(first + "."):]
    return number


def _is_container(number: str) -> bool:
    last = number.rstrip(".").rsplit(".", 1)[-1].strip()
    return _CONTAINER.fullmatch(last) is not None


def _container_rank(number: str) -> int:
    last = number.rstrip(".").rsplit(".", 1)[-1].strip()
    word = re.match(r"[A-Za-z]+", last).group(0).lower()
    return _CONTAINER_RANK.get(word, 0)


def _key(number: str) -> str:
    return number.rstrip(".")


def _is_ancestor(parent: str, child: str) -> bool:
    return child.startswith(parent + ".") or child.startswith(parent + " ")


def _join(number: str, rest: str) -> str:
    return f"{number} {rest}" if rest else number


def _looks_like_title(rest: str) -> bool:
    """A short line without closing punctuation names a section rather than stating a rule."""
    if not rest or len(rest) > 120 or len(rest.split()) > 15:
        return False
    return rest[0].isupper() and rest[-1] not in ".;:,"


def _split_items(number: str) -> tuple[str, list[tuple[str, str]]]:
    """ "1.2.1.(1)" -> ("1.2.1", [("paren-digit", "(1)")]) so a later "(2)" replaces "(1)"."""
    items: list[tuple[str, str]] = []
    core = number
    while True:
        match = re.search(r"[.\s](\([A-Za-z0-9]{1,5}\))$", core)
        if match is None:
            break
        items.insert(0, (_item_style(match.group(1), items), match.group(1)))
        core = core[: match.start()]
    return core, items


def _item_style(label: str, open_items: list[tuple[str, str]]) -> str:
    """The list style of a sub-item label, telling roman "(i)" from the letter after "(h)"."""
    if label.endswith("."):
        body, family = label[:-1], "dot"
    elif label.startswith("("):
        body, family = label[1:-1], "paren"
    else:
        body, family = label[:-1], "close"
    if body.isdigit():
        return f"{family}-digit"
    if body.isupper():
        return f"{family}-upper"
    if _ROMAN.match(body):
        alpha = next((lab for style, lab in reversed(open_items) if style == f"{family}-alpha"), None)
        roman_open = any(style == f"{family}-roman" for style, _ in open_items)
        if alpha is not None and len(body) == 1 and _letter(alpha) == chr(ord(body) - 1) and not roman_open:
            return f"{family}-alpha"
        if len(body) > 1 or body == "i" or roman_open or alpha is not None:
            return f"{family}-roman"
    return f"{family}-alpha"


def _letter(label: str) -> str:
    return label.strip("().")
