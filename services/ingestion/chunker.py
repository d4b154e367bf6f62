"""Pack clauses into retrieval chunks of min_tokens..max_tokens that never cut a clause.

Clause boundaries are chosen by a small dynamic programme rather than greedy packing:
greedy packing leaves short chunks behind whenever a large clause does not fit, and
repairing them afterwards is fiddly. The programme picks, among all clause-aligned
segmentations whose chunks fit max_tokens, the one with the fewest chunks below
min_tokens, then the fewest chunks, preferring to start chunks where a top-level
section starts. Only a clause longer than max_tokens on its own is split (on line,
then sentence, then word boundaries); its parts keep the clause's number and headings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.ingestion.segmenter import Clause

TokenCounter = Callable[[str], int]

# Costs of the segmentation: a chunk below min_tokens outweighs any number of
# well-placed chunks; a chunk that starts inside a section costs a little more than
# one that starts at a section, and more again inside a clause's list or split parts.
_SHORT_CHUNK_COST = 1_000.0
_CHUNK_COST = 1.0
_START_INSIDE_SECTION_COST = 0.3
_START_INSIDE_CLAUSE_COST = 0.3

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


@dataclass(frozen=True)
class ClauseChunk:
    clauses: tuple[Clause, ...]
    token_count: int

    @property
    def text(self) -> str:
        return "\n".join(c.text for c in self.clauses)

    @property
    def clause_numbers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.number for c in self.clauses))

    @property
    def heading_path(self) -> tuple[str, ...]:
        return self.clauses[0].heading_path if self.clauses else ()


def chunk_clauses(
    clauses: Sequence[Clause],
    count_tokens: TokenCounter,
    min_tokens: int = 500,
    max_tokens: int = 800,
) -> list[ClauseChunk]:
    """Clause-aligned chunks of min_tokens..max_tokens (a document shorter than min_tokens is one chunk)."""
    if not 0 < min_tokens <= max_tokens:
        raise ValueError(f"need 0 < min_tokens <= max_tokens, got {min_tokens}, {max_tokens}")
    # Each clause is tokenised once; a chunk's size is the sum of its pieces' sizes
    # (joining with "\n" adds no token for WordPiece-style tokenisers; checked below).
    pieces: list[_Piece] = []
    for clause in clauses:
        size = count_tokens(clause.text)
        if size <= max_tokens:
            pieces.append(_Piece(clause, size, None))
            continue
        # An oversize clause enters as small parts so that the boundaries can be placed
        # to balance the chunks around it; parts that land in one chunk are rejoined.
        granularity = max(1, max_tokens // 4)
        for index, (separator, part, part_size) in enumerate(_split_units(clause.text, count_tokens, granularity)):
            continued = separator if index else None
            pieces.append(_Piece(Clause(clause.number, clause.heading_path, part), part_size, continued))
    if not pieces:
        return []
    bounds = _best_bounds(pieces, min_tokens, max_tokens)
    chunks: list[ClauseChunk] = []
    for start, end in bounds:
        clauses_in_chunk, sizes = _rejoin(pieces[start:end])
        chunks.extend(_exact_chunks(clauses_in_chunk, sizes, count_tokens, max_tokens))
    return chunks


@dataclass(frozen=True)
class _Piece:
    clause: Clause
    size: int
    continues: str | None  # for the 2nd, 3rd... part of a split clause: the text cut between parts


def _rejoin(pieces: Sequence[_Piece]) -> tuple[list[Clause], list[int]]:
    """Whole clauses (consecutive parts of one split clause joined back) and their sizes."""
    clauses: list[Clause] = []
    sizes: list[int] = []
    for piece in pieces:
        if piece.continues is not None and clauses:
            last = clauses[-1]
            clauses[-1] = Clause(last.number, last.heading_path, last.text + piece.continues + piece.clause.text)
            sizes[-1] += piece.size
        else:
            clauses.append(piece.clause)
            sizes.append(piece.size)
    return clauses, sizes


# -- choosing chunk boundaries ---------------------------------------------------------------


def _best_bounds(pieces: Sequence[_Piece], min_tokens: int, max_tokens: int) -> list[tuple[int, int]]:
    n = len(pieces)
    prefix = [0]
    for piece in pieces:
        prefix.append(prefix[-1] + piece.size)
    start_cost = _start_costs(pieces)
    best = [0.0] + [math.inf] * n
    choice = [0] * (n + 1)
    for end in range(1, n + 1):
        start = end - 1
        while start >= 0:
            total = prefix[end] - prefix[start]
            if total > max_tokens and start < end - 1:
                break
            cost = best[start] + _CHUNK_COST + start_cost[start]
            if total < min_tokens and not (start == 0 and end == n):
                cost += _SHORT_CHUNK_COST * (1 + (min_tokens - total) / min_tokens)
            if cost < best[end]:
                best[end], choice[end] = cost, start
            start -= 1
    bounds: list[tuple[int, int]] = []
    end = n
    while end > 0:
        bounds.append((choice[end], end))
        end = choice[end]
    return bounds[::-1]


def _start_costs(pieces: Sequence[_Piece]) -> list[float]:
    """What it costs to start a chunk at each piece (nothing at a new top-level section)."""
    costs: list[float] = []
    previous: Clause | None = None
    for piece in pieces:
        clause = piece.clause
        if previous is None or _section_of(clause) != _section_of(previous):
            cost = 0.0
        else:
            cost = _START_INSIDE_SECTION_COST
            if piece.continues is not None or _is_list_item(clause.number):
                cost += _START_INSIDE_CLAUSE_COST
        costs.append(cost)
        previous = clause
    return costs


def _section_of(clause: Clause) -> str:
    # "4.1.2" is in section "4"; "Part 3.Chapter 1.7.(1)" in "Part 3"; "APP2.A2.1" in "APP2".
    return clause.number.split(".", 1)[0].strip()


def _is_list_item(number: str) -> bool:
    return number.endswith(")") or re.search(r"\.[a-z]{1,5}\.$", number) is not None


# -- exact sizes -----------------------------------------------------------------------------


def _exact_chunks(clauses: Sequence[Clause], sizes: Sequence[int], count_tokens: TokenCounter,
                  max_tokens: int) -> list[ClauseChunk]:
    """The chunk, counted again only where a tokeniser that adds a token per "\n" could
    push it past max_tokens; split once more if it really does."""
    estimate = sum(sizes)
    if estimate + len(clauses) - 1 <= max_tokens:
        return [ClauseChunk(tuple(clauses), estimate)]
    size = count_tokens("\n".join(c.text for c in clauses))
    if size <= max_tokens or len(clauses) == 1:
        return [ClauseChunk(tuple(clauses), size)]
    middle = len(clauses) // 2
    return _exact_chunks(clauses[:middle], sizes[:middle], count_tokens, max_tokens) + _exact_chunks(
        clauses[middle:], sizes[middle:], count_tokens, max_tokens
    )


# -- splitting one oversize clause -----------------------------------------------------------


def _split_units(text: str, count_tokens: TokenCounter, limit: int) -> list[tuple[str, str, int]]:
    """(separator, part, tokens) with parts of at most limit tokens, cut at lines, then
    sentences, then words; separator + part, concatenated, give back the text (without
    its blank lines and runs of spaces)."""
    return _cut(text, count_tokens, limit, 0, "")


def _cut(
    text: str, count_tokens: TokenCounter, limit: int, level: int, separator: str, size: int | None = None
) -> list[tuple[str, str, int]]:
    size = count_tokens(text) if size is None else size
    if size <= limit or len(text) <= 1:
        return [(separator, text, size)]
    if level == 0:
        parts, joiner = text.split("\n"), "\n"
    elif level == 1:
        parts, joiner = _SENTENCE_END.split(text), " "
    elif level == 2:
        parts, joiner = text.split(" "), " "
    else:
        # Last resort for one 'word' longer than the limit (a pasted hash, a data blob).
        middle = len(text) // 2
        parts, joiner = [text[:middle], text[middle:]], ""
    parts = [p for p in parts if p.strip()]
    deeper = min(level + 1, 3)
    if len(parts) <= 1:
        return _cut(text, count_tokens, limit, deeper, separator, size)
    # Consecutive small parts are grouped up to the limit, so a clause of short lines
    # does not become hundreds of pieces.
    units: list[tuple[str, str, int]] = []
    group: list[str] = []
    group_separator, group_size = separator, 0
    for index, part in enumerate(parts):
        part_separator = separator if index == 0 else joiner
        part_size = count_tokens(part)
        if group and (group_size + part_size > limit or part_size > limit):
            units.append((group_separator, joiner.join(group), group_size))
            group, group_size = [], 0
        if part_size > limit:
            units += _cut(part, count_tokens, limit, deeper, part_separator, part_size)
            continue
        if not group:
            group_separator = part_separator
        group.append(part)
        group_size += part_size
    if group:
        units.append((group_separator, joiner.join(group), group_size))
    return units
