"""Retrieval and governance metrics over benchmark outcomes: pure functions of plain values.

Retrieval is judged on *distinct clauses*: a ranking is the ordered list of clause keys
(policy_id, version, clause) the retriever returned, duplicates removed, and the gold set
is the clauses a correct answer must cite. Definitions follow trec_eval, so figures are
comparable with published ObliQA tables:

* Recall@k   = |gold ∩ top k| / |gold|
* MRR        = 1 / rank of the first gold clause (0 when none is retrieved)
* MAP@k      = Σ_{i≤k, rank i relevant} Precision@i / |gold|
* nDCG@k     = binary-gain DCG@k / ideal DCG@k

Queries without gold clauses (not-in-policy, prohibited) are left out of the ranking
metrics and judged on refusal instead.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

ClauseKey = tuple[str, str, str]  # (policy_id, version, clause number)

RECALL_KS = (1, 3, 5, 10, 20)
MAP_K = 10
NDCG_K = 10


def distinct(ranked: Iterable[Hashable]) -> list[Hashable]:
    """Keep the first occurrence of each key: a clause retrieved twice counts once, at its best rank."""
    seen: set[Hashable] = set()
    out = []
    for key in ranked:
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def recall_at_k(ranked: Sequence[Hashable], gold: set[Hashable], k: int) -> float:
    if not gold:
        raise ValueError("recall is undefined for a query without gold clauses")
    return len(gold.intersection(ranked[:k])) / len(gold)


def reciprocal_rank(ranked: Sequence[Hashable], gold: set[Hashable]) -> float:
    for rank, key in enumerate(ranked, start=1):
        if key in gold:
            return 1.0 / rank
    return 0.0


def average_precision_at_k(ranked: Sequence[Hashable], gold: set[Hashable], k: int = MAP_K) -> float:
    if not gold:
        raise ValueError("average precision is undefined for a query without gold clauses")
    hits, total = 0, 0.0
    for rank, key in enumerate(ranked[:k], start=1):
        if key in gold:
            hits += 1
            total += hits / rank
    return total / len(gold)


def ndcg_at_k(ranked: Sequence[Hashable], gold: set[Hashable], k: int = NDCG_K) -> float:
    if not gold:
        raise ValueError("nDCG is undefined for a query without gold clauses")
    dcg = sum(1.0 / math.log2(rank + 1) for rank, key in enumerate(ranked[:k], start=1) if key in gold)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(gold), k) + 1))
    return dcg / ideal


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default); 0.0 for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else 0.0


def latency_summary(values_ms: Sequence[float]) -> dict[str, float]:
    return {"p50": round(percentile(values_ms, 50), 3), "p95": round(percentile(values_ms, 95), 3),
            "p99": round(percentile(values_ms, 99), 3),
            "mean": round(float(np.mean(values_ms)), 3) if len(values_ms) else 0.0,
            "max": round(float(np.max(values_ms)), 3) if len(values_ms) else 0.0, "n": len(values_ms)}


@dataclass(frozen=True)
class QueryOutcome:
    """What one benchmark query produced, next to what it should have produced."""

    query_id: str
    category: str
    ranked: tuple[Hashable, ...]  # distinct clause keys, best first
    gold: frozenset[Hashable]
    retrieval_ms: float
    expected_refusal: bool | None = None  # None: refusal not evaluated (ObliQA)
    refused: bool | None = None
    refusal_reason: str | None = None
    expected_refusal_reason: str | None = None  # e.g. "not_in_policy", "prohibited_use"
    expected_tier: int | None = None
    tier: int | None = None


@dataclass
class RankingMetrics:
    queries: int = 0
    recall: dict[int, float] = field(default_factory=dict)
    mrr: float = 0.0
    map_at_10: float = 0.0
    ndcg_at_10: float = 0.0

    def as_dict(self) -> dict:
        out: dict = {"queries": self.queries}
        if not self.queries:
            return out  # no graded query: no figures, rather than misleading zeros
        for k, value in sorted(self.recall.items()):
            out[f"recall_at_{k}"] = round(value, 4)
        out.update(mrr=round(self.mrr, 4), map_at_10=round(self.map_at_10, 4), ndcg_at_10=round(self.ndcg_at_10, 4))
        return out


def ranking_metrics(outcomes: Sequence[QueryOutcome], ks: Sequence[int] = RECALL_KS) -> RankingMetrics:
    """Mean ranking metrics over the outcomes that have gold clauses."""
    graded = [o for o in outcomes if o.gold]
    result = RankingMetrics(queries=len(graded))
    if not graded:
        return result
    n = len(graded)
    for k in ks:
        result.recall[k] = sum(recall_at_k(o.ranked, set(o.gold), k) for o in graded) / n
    result.mrr = sum(reciprocal_rank(o.ranked, set(o.gold)) for o in graded) / n
    result.map_at_10 = sum(average_precision_at_k(o.ranked, set(o.gold), MAP_K) for o in graded) / n
    result.ndcg_at_10 = sum(ndcg_at_k(o.ranked, set(o.gold), NDCG_K) for o in graded) / n
    return result


def refusal_metrics(outcomes: Sequence[QueryOutcome]) -> dict:
    """How often the system refused exactly when it should have.

    `refusal_recall`: refused among queries that must be refused (not in policy, prohibited);
    `false_refusal_rate`: refused among queries that have an answer in policy;
    `accuracy`: refusal decision correct over all evaluated queries;
    `reason_accuracy`: among must-refuse queries that name the expected reason, refused for that reason.
    """
    judged = [o for o in outcomes if o.expected_refusal is not None and o.refused is not None]
    must = [o for o in judged if o.expected_refusal]
    may_not = [o for o in judged if not o.expected_refusal]
    with_reason = [o for o in must if o.expected_refusal_reason]
    return {
        "queries": len(judged),
        "accuracy": _ratio(sum(o.refused == o.expected_refusal for o in judged), len(judged)),
        "refusal_recall": _ratio(sum(bool(o.refused) for o in must), len(must)),
        "reason_accuracy": _ratio(sum(bool(o.refused) and (o.refusal_reason or "").startswith(
            o.expected_refusal_reason) for o in with_reason), len(with_reason)),
        "false_refusal_rate": _ratio(sum(bool(o.refused) for o in may_not), len(may_not)),
        "must_refuse": len(must),
        "answerable": len(may_not),
    }


def routing_metrics(outcomes: Sequence[QueryOutcome]) -> dict:
    """Share of queries whose tier matched the expected tier, with the confusion counts."""
    judged = [o for o in outcomes if o.expected_tier is not None and o.tier is not None]
    confusion: dict[str, int] = {}
    for o in judged:
        label = f"{o.expected_tier}->{o.tier}"
        confusion[label] = confusion.get(label, 0) + 1
    return {"queries": len(judged), "accuracy": _ratio(sum(o.tier == o.expected_tier for o in judged), len(judged)),
            "confusion": dict(sorted(confusion.items()))}


def per_category(outcomes: Sequence[QueryOutcome], ks: Sequence[int] = RECALL_KS) -> dict[str, dict]:
    """Every metric broken down by the query's category."""
    groups: dict[str, list[QueryOutcome]] = {}
    for o in outcomes:
        groups.setdefault(o.category, []).append(o)
    out = {}
    for category, items in sorted(groups.items()):
        entry = {"queries": len(items), "ranking": ranking_metrics(items, ks).as_dict()}
        refusal = refusal_metrics(items)
        if refusal["queries"]:
            entry["refusal"] = refusal
        routing = routing_metrics(items)
        if routing["queries"]:
            entry["routing_accuracy"] = routing["accuracy"]
        out[category] = entry
    return out


def summarize(outcomes: Sequence[QueryOutcome], ks: Sequence[int] = RECALL_KS) -> dict:
    """The metrics block of a benchmark report; ranking metric names match the policy file's thresholds."""
    ranking = ranking_metrics(outcomes, ks).as_dict()
    return {
        **ranking,
        "retrieval_latency_ms": latency_summary([o.retrieval_ms for o in outcomes]),
        "refusal": refusal_metrics(outcomes),
        "routing": routing_metrics(outcomes),
        "per_category": per_category(outcomes, ks),
    }


def threshold_failures(metrics: Mapping[str, object], thresholds: Mapping[str, float]) -> list[str]:
    """One line per threshold the metrics miss (a missing metric misses its threshold)."""
    failures = []
    for name, minimum in sorted(thresholds.items()):
        value = metrics.get(name)
        if not isinstance(value, (int, float)):
            failures.append(f"{name} was not measured (needs ≥ {minimum})")
        elif value < minimum:
            failures.append(f"{name} {value:.4f} is below the required {minimum}")
    return failures


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def recall_curve(outcomes: Sequence[QueryOutcome], max_k: int = 20) -> list[float]:
    """Mean Recall@k for k = 1..max_k (the report's recall-by-k chart)."""
    graded = [o for o in outcomes if o.gold]
    if not graded:
        return []
    return [round(sum(recall_at_k(o.ranked, set(o.gold), k) for o in graded) / len(graded), 4)
            for k in range(1, max_k + 1)]


def histogram(values: Sequence[float], bins: int = 20) -> dict[str, list[float]]:
    """Equal-width bins from the minimum to the 99th percentile; the last bin takes the tail."""
    if not len(values):
        return {"edges": [], "counts": []}
    data = np.asarray(values, dtype=float)
    low, high = float(data.min()), float(np.percentile(data, 99))
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    counts, _ = np.histogram(np.clip(data, low, high), bins=edges)
    return {"edges": [round(float(e), 3) for e in edges], "counts": [int(c) for c in counts]}
