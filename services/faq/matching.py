"""When an approved FAQ answer may be served for a question: pure functions over plain values.

An FAQ is served at Tier-0, with no model call, only when all of these hold:

* the question's embedding has cosine similarity at least the policy's `faq.min_similarity`
  to one of the FAQ's phrasings;
* every content word and every number of the question appears in that phrasing. The
  embedding model scores minimal pairs almost alike ("high-risk" / "low-risk" 0.99,
  "domestic" / "international" 0.95), and an FAQ served for the wrong one of such a pair
  would state the wrong figure with an authoritative citation. A question the check turns
  away goes to the normal route; authors add the phrasings staff really use;
* the request is not about how a policy changed (an FAQ answers from one version);
* every bound clause's version is among the versions visible to THIS request: within the
  caller's clearance, and in effect (active, or in effect on the request's as_of date), so
  an FAQ bound to a superseded version is stale and never served in its place;
* the answer passes the same verification as a model's answer, against the bound clauses'
  texts (`verify_faq_answer`: every number in it appears in a bound clause).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from services.query.verify import RetrievedClause, Verification, extract_numbers, new_words, verify_answer


@dataclass(frozen=True)
class BoundClause:
    """A bound clause as the request path cites it, with the id of its version row."""

    version_id: int
    clause: RetrievedClause


@dataclass(frozen=True)
class ServableFaq:
    """An approved FAQ entry with its bound clauses' text (immutable once published)."""

    id: int
    questions: tuple[str, ...]
    answer: str
    bound: tuple[BoundClause, ...]

    def bound_refs(self) -> list[dict]:
        return [{"policy_id": b.clause.policy_id, "version": b.clause.version, "clause": b.clause.clause,
                 "classification": b.clause.classification} for b in self.bound]


@dataclass(frozen=True)
class FaqIndex:
    """Every approved FAQ and one unit-length embedding row per phrasing, rows grouped by entry."""

    signature: tuple
    entries: tuple[ServableFaq, ...]
    matrix: np.ndarray  # (phrasings, dimension)
    starts: np.ndarray  # first row of each entry

    @classmethod
    def empty(cls, signature: tuple = ()) -> FaqIndex:
        return cls(signature, (), np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.intp))


@dataclass(frozen=True)
class FaqMatch:
    entry: ServableFaq
    similarity: float
    phrasing: str  # the entry's phrasing most similar to the question


def build_index(signature: tuple, entries: Sequence[ServableFaq], vectors: Sequence[np.ndarray]) -> FaqIndex:
    """`vectors[i]`: the embeddings of `entries[i].questions`, one row each."""
    if not entries:
        return FaqIndex.empty(signature)
    rows = np.vstack([np.asarray(v, dtype=np.float32) for v in vectors])
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    matrix = rows / np.where(norms > 0, norms, 1.0)
    starts = np.cumsum([0] + [len(e.questions) for e in entries[:-1]]).astype(np.intp)
    return FaqIndex(signature, tuple(entries), np.ascontiguousarray(matrix), starts)


def rank_faqs(index: FaqIndex, question_vector: np.ndarray,
              min_similarity: float) -> tuple[FaqMatch | None, list[FaqMatch]]:
    """(the most similar entry, every entry at or above `min_similarity` most similar first).

    An entry's similarity is its best phrasing's cosine similarity to the question. One
    matrix-vector product; only the entries returned become Python objects.
    """
    if not index.entries:
        return None, []
    q = np.asarray(question_vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(q))
    scores = index.matrix @ (q / norm if norm > 0 else q)
    best = np.maximum.reduceat(scores, index.starts)
    above = np.flatnonzero(best >= min_similarity)
    above = above[np.argsort(-best[above], kind="stable")]

    def match(i: int) -> FaqMatch:
        entry, start = index.entries[i], int(index.starts[i])
        row = int(np.argmax(scores[start:start + len(entry.questions)]))
        return FaqMatch(entry, float(best[i]), entry.questions[row])

    return match(int(np.argmax(best))), [match(int(i)) for i in above]


def uncovered_terms(question: str, phrasing: str) -> list[str]:
    """Content words and numbers of `question` that `phrasing` does not hold (empty: covered)."""
    words, _ = new_words(question, (), phrasing)
    numbers = sorted(extract_numbers(question) - extract_numbers(phrasing))
    return list(dict.fromkeys(words)) + numbers


def unservable_reason(match: FaqMatch, question: str, visible_version_ids: Collection[int],
                      visible_classifications: Collection[str], history: bool) -> str | None:
    """Why a similar-enough FAQ may not answer this request, or None when it may (before verification)."""
    uncovered = uncovered_terms(question, match.phrasing)
    if uncovered:
        return f"words: the question's {', '.join(repr(t) for t in uncovered[:6])} not in the FAQ's phrasing"
    if history:
        return "history: the question asks how a policy changed; an FAQ answers from one version"
    for bound in match.entry.bound:
        if bound.version_id in visible_version_ids:
            continue
        c = bound.clause
        if c.classification not in visible_classifications:
            return f"clearance: {c.policy_id} version {c.version} is {c.classification}, above the caller's clearance"
        return (f"stale: {c.policy_id} version {c.version} is not in effect for this request "
                f"(superseded, or not in effect on its as_of date)")
    return None


def verify_faq_answer(answer: str, clauses: Sequence[RetrievedClause]) -> Verification:
    """The model answers' verification, with every bound clause cited: each number must appear in one."""
    return verify_answer(answer, [c.ref for c in clauses], clauses)
