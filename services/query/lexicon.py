"""Clause-level BM25 over every clause a caller may see.

The index stores 500-800-token chunks, and its BM25 vectors score chunks: a short
clause that holds all the question's words scores below a long chunk that mentions
them in passing, and only the clauses of the best few chunks are ever ranked. Staff
cite clauses, so lexical evidence is scored per clause here, over the whole visible
corpus, with IDF and average length taken from the versions the caller may see
(measured on ObliQA: clause-level BM25 ranks the gold passage in the top 10 for
0.75 of questions, chunk-level candidates then clause BM25 for 0.57).

Versions are immutable, so a version's clauses are read from the database and
tokenised once, the first time a query may see it; nothing here can go stale. A
version that stops being visible (superseded, retired clearance) simply stops
being counted: visibility is a mask applied per query, not a rebuild.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.db.models import Clause
from services.vectors.sparse import K1, B, tokenize

ClauseRecord = tuple[int, str, str, list, str]  # version id, chunk id, number, heading path, text
ClauseLoader = Callable[[Sequence[int]], Iterable[ClauseRecord]]


def clause_terms(heading_path: Sequence[str], text: str) -> list[str]:
    """The terms a clause is matched on: its own text and its innermost heading (its topic)."""
    return tokenize(" ".join(list(heading_path)[-1:]) + " " + text)


# "politically exposed person (PEP)": a definition whose capitals are the initials of the words before it.
_ACRONYM = re.compile(r"((?:[A-Za-z][\w-]*[\s,]+){1,8}?)\([\"'“‘]?([A-Z][A-Za-z]{1,7})[\"'”’]?\)")
_MINOR_WORDS = {"of", "and", "the", "for", "to", "in", "on", "a", "an", "at", "by"}


def _spells(words: Sequence[str], capitals: str) -> bool:
    """Whether the words' initials spell `capitals`; a hyphenated word may give one initial or one per part
    ("Anti-Money" -> A or AM), a minor word ("of", "to") one or none."""
    def options(word: str) -> set[str]:
        parts = [p for p in word.split("-") if p]
        found = {word[0].upper(), "".join(p[0].upper() for p in parts)}
        return found | {""} if word.lower() in _MINOR_WORDS else found

    reachable = {0}
    for word in words:
        reachable = {i + len(o) for i in reachable for o in options(word) if capitals.startswith(o, i)}
        if not reachable:
            return False
    return len(capitals) in reachable


def acronym_definitions(text: str) -> list[tuple[str, str]]:
    """(acronym, long form) pairs a text defines, e.g. ("PEP", "politically exposed person")."""
    found = []
    for match in _ACRONYM.finditer(text):
        acronym = match.group(2)
        capitals = "".join(c for c in acronym if c.isupper())
        if len(capitals) < 2:
            continue
        words = re.findall(r"[A-Za-z][\w-]*", match.group(1))
        # the shortest run of trailing words whose initials spell the capitals
        for start in range(len(words) - 1, max(-1, len(words) - 2 * len(capitals) - 2), -1):
            if _spells(words[start:], capitals) and words[start].lower() not in _MINOR_WORDS:
                found.append((acronym, " ".join(words[start:])))
                break
    return found


def database_loader(session_factory: sessionmaker[Session]) -> ClauseLoader:
    def load(version_ids: Sequence[int]) -> list[ClauseRecord]:
        with session_factory() as session:
            rows = session.execute(
                select(Clause.version_id, Clause.chunk_id, Clause.number, Clause.heading_path, Clause.text)
                .where(Clause.version_id.in_(list(version_ids))).order_by(Clause.version_id, Clause.ordinal)).all()
        return [tuple(r) for r in rows]

    return load


@dataclass(frozen=True)
class LexicalScores:
    """BM25 of one question: the scored clauses as (chunk id, clause number) -> score, and the best first."""

    scores: dict[tuple[str, str], float]
    top: list[tuple[str, str]]


class ClauseLexicon:
    def __init__(self, load: ClauseLoader, k1: float = K1, b: float = B) -> None:
        self._load = load
        self.k1, self.b = k1, b
        self._lock = threading.Lock()
        self._loaded: set[int] = set()
        self._keys: list[tuple[str, str]] = []  # clause position -> (chunk id, number)
        self._version_of: list[int] = []  # clause position -> version id
        self._lengths: list[int] = []
        self._postings: dict[str, tuple[list[int], list[int]]] = {}  # term -> (positions, term frequencies)
        # Arrays derived from the lists above; rebuilt after a load adds clauses.
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None  # (version per clause, length per clause)
        self._term_arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # Acronyms the corpus defines: the acronym's term <-> the terms of its long form.
        self._long_forms: dict[str, tuple[str, ...]] = {}
        self._by_first_term: dict[str, list[tuple[str, tuple[str, ...]]]] = {}  # long form's first term -> pairs
        self._definitions: dict[str, tuple[str, str]] = {}  # acronym term -> (acronym, long form) as written

    @classmethod
    def from_database(cls, session_factory: sessionmaker[Session]) -> ClauseLexicon:
        return cls(database_loader(session_factory))

    def __len__(self) -> int:
        return len(self._keys)

    def ensure_loaded(self, version_ids: Iterable[int]) -> None:
        missing = sorted(set(version_ids) - self._loaded)
        if not missing:
            return
        with self._lock:
            missing = sorted(set(missing) - self._loaded)
            if not missing:
                return
            for version_id, chunk_id, number, heading_path, text in self._load(missing):
                position = len(self._keys)
                terms = clause_terms(heading_path or [], text)
                self._keys.append((chunk_id, number))
                self._version_of.append(version_id)
                self._lengths.append(len(terms))
                counts: dict[str, int] = {}
                for term in terms:
                    counts[term] = counts.get(term, 0) + 1
                for term, tf in counts.items():
                    positions, freqs = self._postings.setdefault(term, ([], []))
                    positions.append(position)
                    freqs.append(tf)
                for acronym, long_form in acronym_definitions(text):
                    short, expansion = tokenize(acronym), tuple(tokenize(long_form))
                    if len(short) == 1 and len(expansion) >= 2 and short[0] not in self._long_forms:
                        self._long_forms[short[0]] = expansion
                        self._definitions[short[0]] = (acronym, long_form)
                        self._by_first_term.setdefault(expansion[0], []).append((short[0], expansion))
            self._loaded.update(missing)
            self._arrays = None
            self._term_arrays = {}

    def _acronyms_used(self, terms: Sequence[str]) -> dict[str, bool]:
        """Defined acronyms a query uses, by term, each with whether it was written as the acronym."""
        used: dict[str, bool] = {}
        for i, term in enumerate(terms):
            if term in self._long_forms:
                used.setdefault(term, True)
            for acronym, long_form in self._by_first_term.get(term, ()):
                if tuple(terms[i:i + len(long_form)]) == long_form:
                    used.setdefault(acronym, False)
        return used

    def expand(self, query_terms: Sequence[str]) -> list[str]:
        """The query's terms plus, for each defined acronym, the other form: "PEP" <-> "politically exposed person"."""
        terms = list(query_terms)
        for acronym, as_acronym in self._acronyms_used(query_terms).items():
            terms += self._long_forms[acronym] if as_acronym else [acronym]
        return terms

    def expansions(self, query_terms: Sequence[str], max_share: float = 0.01, min_limit: int = 10) -> list[str]:
        """The other forms of the acronyms a query uses, as text: ["politically exposed person"] for "PEP".

        Only for acronyms used in at most `max_share` of the clauses (or `min_limit` clauses, in a
        small corpus): one the whole corpus is about ("ADGM" in ADGM's rulebooks) tells a search
        nothing, and spelling it out only dilutes the question's embedding.
        """
        limit = max(max_share * len(self._keys), min_limit)
        return [self._definitions[a][1] if as_acronym else self._definitions[a][0]
                for a, as_acronym in self._acronyms_used(query_terms).items()
                if len(self._postings.get(a, ((),))[0]) <= limit]

    def _term(self, term: str) -> tuple[np.ndarray, np.ndarray] | None:
        arrays = self._term_arrays.get(term)
        if arrays is None:
            posting = self._postings.get(term)
            if posting is None:
                return None
            arrays = (np.asarray(posting[0], dtype=np.int64), np.asarray(posting[1], dtype=np.float32))
            self._term_arrays[term] = arrays
        return arrays

    def search(self, query_terms: Sequence[str], version_ids: Sequence[int], limit: int,
               keep: int = 2_000) -> LexicalScores:
        """BM25 of every visible clause; `top` holds the best `limit`, `scores` the best `keep` (others score 0)."""
        self.ensure_loaded(version_ids)
        with self._lock:
            if self._arrays is None:
                self._arrays = (np.asarray(self._version_of, dtype=np.int64),
                                np.asarray(self._lengths, dtype=np.float32))
            versions, lengths = self._arrays
            terms = [t for t in dict.fromkeys(self.expand(query_terms)) if t in self._postings]
            postings = [self._term(t) for t in terms]
            keys = self._keys
        if not postings or not len(versions):
            return LexicalScores({}, [])
        visible = np.isin(versions, np.asarray(list(version_ids), dtype=np.int64))
        n = int(visible.sum())
        if n == 0:
            return LexicalScores({}, [])
        avgdl = float(lengths[visible].mean()) or 1.0
        scores = np.zeros(len(versions), dtype=np.float32)
        k1, b = self.k1, self.b
        for positions, freqs in postings:
            mask = visible[positions]
            df = int(mask.sum())
            if df == 0:
                continue
            idx, tf = positions[mask], freqs[mask]
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            scores[idx] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[idx] / avgdl))
        scored = np.flatnonzero(scores)
        if len(scored) > keep:
            scored = scored[np.argpartition(-scores[scored], keep - 1)[:keep]]
        order = scored[np.argsort(-scores[scored], kind="stable")]
        result = {keys[i]: float(scores[i]) for i in order}
        return LexicalScores(result, [keys[i] for i in order[:limit]])

