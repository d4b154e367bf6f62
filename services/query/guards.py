"""The query guards that run before retrieval, in this order on every question:

1. `check_input`: shape of the request (type, length, declared classification);
2. prohibited uses (`classify_prohibited` / `ProhibitedUseDetector`);
3. PII detection (`services.query.pii`);
4. residency (`governance.residency`), and `assess_risk` for the router.

Each decision is a pure function of the question and the governance policy; the
only heavy state is the embedding of the prohibited-use exemplars, built once in
`ProhibitedUseDetector.warm_up()`. Thresholds, patterns and topics all come from
`governance/policy.yaml`.
"""

from __future__ import annotations

import functools
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from governance.policy import GovernancePolicy, ProhibitedUses, RiskRules
from governance.residency import allowed_zones, effective_classification
from services.errors import InvalidRequest

if TYPE_CHECKING:
    from services.query.pii import PiiDetector

# -- 1. input checks --------------------------------------------------------------------------


def check_input(question: object, classification: object, policy: GovernancePolicy) -> tuple[str, str | None]:
    """The stripped question and the declared classification, or InvalidRequest saying what is wrong."""
    if not isinstance(question, str):
        raise InvalidRequest(f"question must be a string, not {type(question).__name__}")
    stripped = question.strip()
    if not stripped:
        raise InvalidRequest("question is empty")
    limit = policy.input.max_question_chars
    if len(stripped) > limit:
        raise InvalidRequest(f"question is {len(stripped)} characters long; the limit is {limit}")
    if classification is None:
        return stripped, None
    if not isinstance(classification, str) or classification not in policy.classifications:
        shown = classification if isinstance(classification, str) else type(classification).__name__
        raise InvalidRequest(f"unknown classification {shown!r}; expected one of {', '.join(policy.classifications)}")
    return stripped, classification


# -- 2. prohibited uses -----------------------------------------------------------------------


@dataclass(frozen=True)
class ProhibitedVerdict:
    prohibited: bool
    category: str | None
    reason: str | None
    matched_by: str | None  # "keyword" | "similarity"
    score: float  # best exemplar cosine similarity (0.0 if not computed)


@functools.lru_cache(maxsize=256)
def _keyword(pattern: str) -> re.Pattern[str]:
    # Policy authors write lower-case patterns; a pattern that needs case (a
    # capitalised name) scopes it with (?-i:...).
    return re.compile(pattern, re.IGNORECASE)


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def classify_prohibited(question: str, question_vector: np.ndarray | None, exemplar_vectors: dict[str, np.ndarray],
                        rules: ProhibitedUses) -> ProhibitedVerdict:
    """Refuse on a keyword pattern, else on cosine >= `similarity_threshold` to any exemplar intent.

    Keywords are checked first and in policy order, so the category named is the
    first whose pattern matches. Similarity is computed whenever a vector is
    given (it is recorded in the audit trail even when a keyword decided).
    """
    best_score, best_category = 0.0, None
    if question_vector is not None:
        q = _unit(question_vector)
        for category_id, vectors in exemplar_vectors.items():
            if len(vectors) == 0:
                continue
            if vectors.shape[1] != q.shape[0]:
                raise ValueError(f"question vector has {q.shape[0]} dimensions but the exemplars of "
                                 f"{category_id!r} have {vectors.shape[1]}: embedded by different models?")
            score = float(np.max(vectors @ q))
            if best_category is None or score > best_score:
                best_score, best_category = score, category_id
    score = round(best_score, 6)
    reasons = {c.id: c.reason for c in rules.categories}

    for category in rules.categories:
        if any(_keyword(p).search(question) for p in category.keywords):
            return ProhibitedVerdict(True, category.id, category.reason, "keyword", score)
    if best_category is not None and best_score >= rules.similarity_threshold:
        return ProhibitedVerdict(True, best_category, reasons.get(best_category), "similarity", score)
    return ProhibitedVerdict(False, None, None, None, score)


class ProhibitedUseDetector:
    """`classify_prohibited` with the policy's exemplars embedded once, in warm_up()."""

    def __init__(self, rules: ProhibitedUses, embed: Callable[[list[str]], np.ndarray]) -> None:
        self.rules = rules
        self.embed = embed
        self._exemplars: dict[str, np.ndarray] | None = None

    def warm_up(self) -> None:
        if self._exemplars is not None:
            return
        texts = [e for c in self.rules.categories for e in c.exemplars]
        matrix = np.asarray(self.embed(texts), dtype=np.float32) if texts else np.zeros((0, 0), np.float32)
        if texts:
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix = matrix / np.where(norms > 0, norms, 1.0)
        exemplars, row = {}, 0
        for category in self.rules.categories:
            exemplars[category.id] = matrix[row: row + len(category.exemplars)]
            row += len(category.exemplars)
        self._exemplars = exemplars

    @property
    def exemplar_vectors(self) -> dict[str, np.ndarray]:
        if self._exemplars is None:
            raise RuntimeError("ProhibitedUseDetector used before warm_up()")
        return self._exemplars

    def check(self, question: str, question_vector: np.ndarray | None = None) -> ProhibitedVerdict:
        """Pass the retrieval embedding of the question when there is one: the guard then costs no model call."""
        exemplars = self.exemplar_vectors
        if question_vector is None and any(len(v) for v in exemplars.values()):
            question_vector = np.asarray(self.embed([question]))[0]
        return classify_prohibited(question, question_vector, exemplars, self.rules)


# -- risk -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _topics_pattern(topics: tuple[str, ...]) -> re.Pattern[str] | None:
    """Whole-word, case-insensitive match of any topic phrase; any run of whitespace between its words."""
    phrases = [r"\s+".join(re.escape(word) for word in topic.split()) for topic in topics if topic.strip()]
    if not phrases:
        return None
    return re.compile(r"\b(?:" + "|".join(phrases) + r")\b", re.IGNORECASE)


def assess_risk(question: str, rules: RiskRules) -> str:
    """The risk level of a question: critical, high or normal, from the policy's topic phrases."""
    for level, topics in (("critical", rules.critical_topics), ("high", rules.high_risk_topics)):
        pattern = _topics_pattern(tuple(topics))
        if pattern is not None and pattern.search(question):
            return level
    return "normal"


# -- latency ----------------------------------------------------------------------------------


def bench_guards(questions: Sequence[str], question_vectors: np.ndarray, policy: GovernancePolicy,
                 prohibited: ProhibitedUseDetector, pii: PiiDetector) -> dict[str, float]:
    """Latency of the guard chain per question, in ms (p50, p95, max).

    The chain is what runs before retrieval: input checks, the prohibited-use
    check on the precomputed retrieval vector, PII detection, risk, and the
    residency decision. The embedding itself is retrieval's cost, not the guards'.
    """
    wall, cpu = [], []
    for question, vector in zip(questions, question_vectors, strict=True):
        started, started_cpu = time.perf_counter(), time.thread_time()
        text, declared = check_input(question, None, policy)
        prohibited.check(text, vector)
        findings = pii.detect(text)
        assess_risk(text, policy.risk)
        allowed_zones(effective_classification(declared, bool(findings), [], policy), policy)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - started_cpu) * 1000)
    # CPU time is reported too: on a busy machine wall-clock percentiles measure
    # the scheduler as much as the guards.
    return {"n": float(len(wall)), **_percentiles("", wall), **_percentiles("cpu_", cpu)}


def _percentiles(prefix: str, timings_ms: list[float]) -> dict[str, float]:
    ordered = sorted(timings_ms)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {f"{prefix}p50_ms": round(statistics.median(ordered), 3), f"{prefix}p95_ms": round(p95, 3),
            f"{prefix}max_ms": round(ordered[-1], 3)}
