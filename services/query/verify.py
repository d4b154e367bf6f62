"""Answer verification: an answer is served only if every fact in it comes from a clause it cites.

Pure functions. The check is deliberately literal: a model may reword a clause, but every
number, percentage, amount and date it writes must appear in the text of a clause it cites.
Numbers are compared in a normalised form so "80 %" == "80 per cent" == "80%",
"1,00,000" == "100,000" == "1 lakh", "$5m" == "5 million" and "1 April 2024" == "01/04/2024"
== "2024-04-01" (slashed dates are read day first, as Indian banking documents write them).
Currencies are not compared: "INR 5 lakh" and "$5 lakh" both normalise to 500000.

References are not facts: "[C1]", "[1]", "clause 4.2", "section 3", "version 2" and identifiers such as
"HR-001" are removed before numbers are extracted. Numbers the model takes from a cited clause's
own citation (its title, clause number, version, effective date) are accepted too, since a
model that says "the policy effective 1 April 2024 says …" is describing its source.
Number words ("thirty") are not extracted: they are rare in the corpus and matching "one" would
flag pronouns; the gap is accepted.

An answer caught in a loop ("Policy: Policy: Policy: ...", one sentence twice in a row) fails
whatever it cites: numbers copied from a clause do not make a repetition an answer.

For a model the policy file holds to the clause's wording (`max_new_word_share`, the small
Tier-1 model), an answer fails when too many of its content words appear in neither the
clauses it was shown nor the question: "at least 725 to qualify for a home loan with a
mortgage-backed securities loan" has no wrong number, but its clause never mentions securities.
A larger model paraphrases, so no share is set for it by default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from services.generation.base import loop_words, repeated_run
from services.query.schemas import NOT_AVAILABLE


@dataclass(frozen=True)
class RetrievedClause:
    """A retrieved clause as the model is shown it and as a citation can point at it."""

    ref: str  # prompt reference: "C1", "C2", ...
    policy_id: str
    policy_title: str
    clause: str
    version: str
    effective_date: str
    classification: str
    text: str
    score: float


@dataclass(frozen=True)
class Verification:
    passed: bool
    problems: tuple[str, ...]
    cited_refs: tuple[str, ...]


_MONTHS = {name: i for i, names in enumerate(
    (("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"), ("may",), ("jun", "june"),
     ("jul", "july"), ("aug", "august"), ("sep", "sept", "september"), ("oct", "october"),
     ("nov", "november"), ("dec", "december")), start=1) for name in names}
_MONTH = r"(?P<{g}>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_ORD = r"(?:st|nd|rd|th)?"

# Citation markers and clause/section/version references: pointers, not facts.
# A list after a singular keyword continues only with dotted numbers ("clause 4.2 and 4.3"), so
# "clause 4 and 30 days" keeps its 30: stripping a fact by mistake would let it go unchecked.
_REF_ITEM = r"\d+(?:\.\d+)*[a-z]?(?:\([a-z0-9]+\))*"
_REF_JOIN = r"\s*(?:,|and|or|to|-|–)\s*"
_CITATION_MARKER = re.compile(  # "[2]", "[C1, C3]": as services.generation.prompts.parse_citations reads them
    r"\[\s*(?:C\s*\d+|\d{1,2})(?:\s*[,;]\s*(?:C\s*\d+|\d{1,2}))*\s*\]", re.IGNORECASE)
_REFERENCE = re.compile(
    _CITATION_MARKER.pattern +
    r"|\bC\d+\b"
    r"|\b(?:clauses|sections|paras|paragraphs|articles|annexures|schedules|rules|versions)\s*"
    + _REF_ITEM + r"(?:" + _REF_JOIN + _REF_ITEM + r")*"
    r"|(?:\b(?:clause|section|sec\.|para\.?|paragraph|article|annex(?:ure)?|appendix|schedule|rule|version|ver\.|v)"
    r"|§)\s*" + _REF_ITEM + r"(?:" + _REF_JOIN + r"\d+(?:\.\d+)+[a-z]?(?:\([a-z0-9]+\))*)*",
    re.IGNORECASE)
# Document identifiers such as HR-001, AML/2023/07, KYC-POL-3.
_IDENTIFIER = re.compile(r"\b[A-Za-z]{1,12}(?:[-/][A-Za-z]+)*[-/]\d[\w/-]*")
_CURRENCY = re.compile(r"₹|\$|€|£|\b(?:Rs|INR|USD|EUR|GBP)\b\.?", re.IGNORECASE)

_DATE_PATTERNS = (
    re.compile(r"(?<!\d)(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})(?!\d)"),
    re.compile(r"(?<![\d/.-])(?P<d>\d{1,2})[/.-](?P<m>\d{1,2})[/.-](?P<y>\d{4})(?!\d)"),
    re.compile(r"\b(?P<d>\d{1,2})" + _ORD + r"\s+(?:of\s+)?" + _MONTH.format(g="mon") + r",?\s+(?P<y>\d{4})\b",
               re.IGNORECASE),
    re.compile(r"\b" + _MONTH.format(g="mon") + r"\s+(?P<d>\d{1,2})" + _ORD + r",?\s+(?P<y>\d{4})\b", re.IGNORECASE),
    re.compile(r"\b" + _MONTH.format(g="mon") + r",?\s+(?P<y>\d{4})\b", re.IGNORECASE),
    re.compile(r"\b(?P<d>\d{1,2})" + _ORD + r"\s+(?:of\s+)?" + _MONTH.format(g="mon") + r"\b", re.IGNORECASE),
    re.compile(r"\b" + _MONTH.format(g="mon") + r"\s+(?P<d>\d{1,2})" + _ORD + r"\b", re.IGNORECASE),
)
_TIME = re.compile(r"(?<![\w.:])(?P<h>\d{1,2}):(?P<min>\d{2})(?![\d:])")

_SCALE_WORDS = {"thousand": 10**3, "lakh": 10**5, "lakhs": 10**5, "lac": 10**5, "lacs": 10**5,
                "crore": 10**7, "crores": 10**7, "million": 10**6, "billion": 10**9, "trillion": 10**12}
# Abbreviations count only when glued to the number ("5m", "10k", "2cr"): "5 m" may be metres.
_SCALE_ABBREVIATIONS = {"k": 10**3, "m": 10**6, "mn": 10**6, "bn": 10**9, "b": 10**9, "cr": 10**7}
_NUMBER = re.compile(
    r"(?<![\w.,])(?P<num>\d{1,3}(?:,\d{2,3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:(?P<pct>\s*(?:%|per\s*cent\b|percent\b))"
    r"|\s*(?P<word>" + "|".join(_SCALE_WORDS) + r")\b"
    r"|(?P<abbr>" + "|".join(sorted(_SCALE_ABBREVIATIONS, key=len, reverse=True)) + r")\b"
    r"|(?:st|nd|rd|th)\b)?",
    re.IGNORECASE)

_NOT_AVAILABLE_NORMALISED = NOT_AVAILABLE.lower()
_CONTENT_WORD = re.compile(r"[a-z]+")
_STOPWORDS = frozenset("""a about above after again all also an and any are as at be been before being below between
both but by can could did do does done during each either else for from had has have having he her here his how
however i if in into is it its itself may me might more most must my no nor not of off on once only or other our out
over own per same shall she should so some such than that the their them then there these they this those through
to too under until up upon very was we were what when where whether which while who whom whose why will with within
without would you your""".split())


def _canonical_number(text: str, scale: int = 1) -> str | None:
    try:
        value = Decimal(text.replace(",", "")) * scale
    except InvalidOperation:
        return None
    return format(value.normalize(), "f")


def _date(match: re.Match[str]) -> str | None:
    groups = match.groupdict()
    month = _MONTHS[groups["mon"].lower().rstrip(".")] if groups.get("mon") else int(groups["m"])
    day = int(groups["d"]) if groups.get("d") else None
    year = int(groups["y"]) if groups.get("y") else None
    if not 1 <= month <= 12 or (day is not None and not 1 <= day <= 31):
        return None
    if year is None:
        return f"--{month:02d}-{day:02d}"  # a day of a year the text leaves out
    if day is None:
        return f"{year:04d}-{month:02d}"
    return f"{year:04d}-{month:02d}-{day:02d}"


def _strip_references(text: str) -> str:
    return _IDENTIFIER.sub(" ", _REFERENCE.sub(" ", text))


def extract_numbers(text: str) -> set[str]:
    """Facts that are numbers in `text`, normalised: "80%", "3000000", "2024-04-01", "9:30".

    Dates become ISO ("2024-04", or "--04-01" when the year is left out); percentages keep
    a "%" suffix; amounts are multiplied out (lakh, crore, thousand, million, "5m").
    Citation markers and clause or version references are not facts and are skipped.
    """
    found: set[str] = set()
    remaining = _strip_references(text)
    for pattern in _DATE_PATTERNS:
        def take_date(match: re.Match[str]) -> str:
            date = _date(match)
            if date is None:
                return match.group(0)
            found.add(date)
            return " "
        remaining = pattern.sub(take_date, remaining)

    def take_time(match: re.Match[str]) -> str:
        found.add(f"{int(match['h'])}:{match['min']}")
        return " "
    remaining = _TIME.sub(take_time, remaining)
    remaining = _CURRENCY.sub(" ", remaining)
    for match in _NUMBER.finditer(remaining):
        scale = 1
        if match["word"]:
            scale = _SCALE_WORDS[match["word"].lower()]
        elif match["abbr"]:
            scale = _SCALE_ABBREVIATIONS[match["abbr"].lower()]
        value = _canonical_number(match["num"], scale)
        if value is None:
            continue
        found.add(value + "%" if match["pct"] else value)
    return found


def _supported(fact: str, allowed: set[str]) -> bool:
    if fact in allowed:
        return True
    if fact.startswith("--"):  # "1 April" is supported by "1 April 2024"
        return any(len(a) == 10 and a.endswith(fact[1:]) for a in allowed)
    if re.fullmatch(r"\d{4}-\d{2}", fact):  # "April 2024" is supported by "1 April 2024"
        return any(a.startswith(fact + "-") for a in allowed)
    return False


def is_not_available(answer: str) -> bool:
    """The model's (or the service's) refusal to answer from the clauses.

    A citation marker around it ("[1] Not available in policy.") does not make it an answer:
    citing a clause to say the clauses do not answer is still the refusal. Nor does anything
    said after it ("Not available in policy: the answer is not in the clauses.").
    """
    text = " ".join(_CITATION_MARKER.sub(" ", answer).split()).strip().lower()
    if not text.startswith(_NOT_AVAILABLE_NORMALISED):
        return False
    rest = text[len(_NOT_AVAILABLE_NORMALISED):]
    return not rest or not (rest[0].isalnum() or rest[0] == "_")


def repetition(answer: str) -> str | None:
    """The phrase an answer repeats back to back (a model caught in a loop), or None."""
    words = loop_words(answer)
    found = repeated_run(words)
    if found is None:
        return None
    start, period, _ = found
    return " ".join(words[start:start + period])


def _citation_facts(clause: RetrievedClause) -> set[str]:
    # Title and effective date are the citation's own facts. Clause and version numbers are
    # not added: written as "clause 4.2" / "version 3" they are stripped as references anyway,
    # and a bare "3" must not be excused because the cited policy happens to be version 3.
    return extract_numbers(f"{clause.policy_title}. {clause.effective_date}.")


def _unique(refs: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r.strip().upper() for r in refs if r and r.strip()))


def new_words(answer: str, shown: Sequence[RetrievedClause], question: str = "") -> tuple[list[str], int]:
    """(content words of `answer` found in neither the `shown` clauses nor the question, all its content words).

    Content words are lower-cased runs of letters that are not stopwords; numbers are the
    number check's business, and citation markers and references are not words of the answer.
    """
    known = set(_CONTENT_WORD.findall(" ".join([question, *(f"{c.policy_title} {c.text}" for c in shown)]).lower()))
    words = [w for w in _CONTENT_WORD.findall(_REFERENCE.sub(" ", answer).lower()) if w not in _STOPWORDS]
    return [w for w in words if w not in known], len(words)


def verify_answer(answer: str, cited_refs: Sequence[str], retrieved: Sequence[RetrievedClause], *,
                  question: str = "", max_new_word_share: float | None = None) -> Verification:
    """Pass only a grounded answer: non-empty, citing retrieved clauses, every number from a cited clause.

    The exact answer "Not available in policy" passes with no citations. With
    `max_new_word_share`, at most that share of the answer's content words may be missing from
    `retrieved` (the clauses the model was shown) and `question`.
    """
    refs = _unique(cited_refs)
    if not answer or not answer.strip():
        return Verification(False, ("the answer is empty",), refs)
    if is_not_available(answer):
        return Verification(True, (), ())
    problems: list[str] = []
    if not re.sub(r"[\W_]+", "", _REFERENCE.sub(" ", answer)):
        problems.append("the answer is only a citation")
    if not refs:
        problems.append("the answer cites no clause")
    loop = repetition(answer)
    if loop is not None:
        problems.append(f"the answer repeats itself ({loop!r} back to back)")
    by_ref = {c.ref.upper(): c for c in retrieved}
    unknown = [r for r in refs if r not in by_ref]
    problems += [f"the answer cites {r}, which is not a retrieved clause" for r in unknown]
    cited = [by_ref[r] for r in refs if r in by_ref]
    allowed: set[str] = set()
    for clause in cited:
        allowed |= extract_numbers(clause.text) | _citation_facts(clause)
    unsupported = sorted(f for f in extract_numbers(answer) if not _supported(f, allowed))
    problems += [f"{fact!r} does not appear in the cited clauses" for fact in unsupported]
    if max_new_word_share is not None:
        new, total = new_words(answer, retrieved, question)
        if total and len(new) / total > max_new_word_share:
            shown = ", ".join(repr(w) for w in list(dict.fromkeys(new))[:6])
            problems.append(f"{len(new)} of its {total} content words appear in neither the clauses shown nor the "
                            f"question ({shown}), more than {max_new_word_share:.0%}")
    return Verification(not problems, tuple(problems), refs)
