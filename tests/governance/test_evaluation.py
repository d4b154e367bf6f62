"""Retrieval metrics against hand-computed values, and their invariants under Hypothesis."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governance.evaluation import (
    QueryOutcome,
    average_precision_at_k,
    distinct,
    latency_summary,
    ndcg_at_k,
    per_category,
    recall_at_k,
    reciprocal_rank,
    refusal_metrics,
    routing_metrics,
    summarize,
    threshold_failures,
)

pytestmark = pytest.mark.unit

A, B, C, D, E = (("P", "1", str(i)) for i in range(5))


def test_hand_computed_ranking_metrics():
    ranked = [C, A, D, B]
    gold = {A, B}
    assert recall_at_k(ranked, gold, 1) == 0.0
    assert recall_at_k(ranked, gold, 2) == 0.5
    assert recall_at_k(ranked, gold, 4) == 1.0
    assert reciprocal_rank(ranked, gold) == 0.5
    # relevant at ranks 2 and 4: (1/2 + 2/4) / 2
    assert average_precision_at_k(ranked, gold, 10) == pytest.approx(0.5)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    assert ndcg_at_k(ranked, gold, 10) == pytest.approx(dcg / (1 + 1 / math.log2(3)))


def test_map_divides_by_all_gold_clauses_like_trec_eval():
    # only one of three gold clauses retrieved, at rank 1
    assert average_precision_at_k([A, D], {A, B, C}, 10) == pytest.approx(1 / 3)
    # a gold clause just past the cut-off earns nothing
    assert average_precision_at_k([D] * 0 + [C, D, E, B, D, D, D, D, D, D, A], {A}, 10) == 0.0


def test_duplicates_count_once_at_their_best_rank():
    assert distinct([A, B, A, C, B]) == [A, B, C]


def test_queries_without_gold_clauses_are_not_ranked():
    with pytest.raises(ValueError):
        recall_at_k([A], set(), 5)
    outcomes = [QueryOutcome("q1", "lookup", (A, B), frozenset({A}), 10.0),
                QueryOutcome("q2", "not_in_policy", (C,), frozenset(), 12.0, expected_refusal=True, refused=True)]
    metrics = summarize(outcomes)
    assert metrics["queries"] == 1
    assert metrics["recall_at_5"] == 1.0
    assert metrics["per_category"]["not_in_policy"]["ranking"]["queries"] == 0
    assert metrics["per_category"]["not_in_policy"]["refusal"]["refusal_recall"] == 1.0


def test_refusal_and_routing_accuracy():
    outcomes = [
        QueryOutcome("a", "not_in_policy", (), frozenset(), 1, expected_refusal=True, refused=True),
        QueryOutcome("b", "not_in_policy", (), frozenset(), 1, expected_refusal=True, refused=False),
        QueryOutcome("c", "lookup", (A,), frozenset({A}), 1, expected_refusal=False, refused=True,
                     expected_tier=0, tier=0),
        QueryOutcome("d", "lookup", (A,), frozenset({A}), 1, expected_refusal=False, refused=False,
                     expected_tier=1, tier=0),
    ]
    refusal = refusal_metrics(outcomes)
    assert refusal["refusal_recall"] == 0.5
    assert refusal["false_refusal_rate"] == 0.5
    assert refusal["accuracy"] == 0.5
    routing = routing_metrics(outcomes)
    assert routing["accuracy"] == 0.5
    assert routing["confusion"] == {"0->0": 1, "1->0": 1}
    assert set(per_category(outcomes)) == {"lookup", "not_in_policy"}


def test_latency_percentiles():
    summary = latency_summary([float(i) for i in range(1, 101)])
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p95"] == pytest.approx(95.05)
    assert summary["n"] == 100
    assert latency_summary([])["p95"] == 0.0


def test_threshold_failures_name_the_metric_and_the_minimum():
    thresholds = {"recall_at_5": 0.9, "mrr": 0.7, "recall_at_10": 0.95}
    failures = threshold_failures({"recall_at_5": 0.95, "mrr": 0.61}, thresholds)
    assert failures == ["mrr 0.6100 is below the required 0.7", "recall_at_10 was not measured (needs ≥ 0.95)"]
    assert threshold_failures({"recall_at_5": 0.9, "mrr": 0.7, "recall_at_10": 0.95}, thresholds) == []


keys = st.tuples(st.just("P"), st.just("1"), st.integers(0, 30).map(str))


@given(ranked=st.lists(keys, max_size=25).map(distinct), gold=st.sets(keys, min_size=1, max_size=6),
       k=st.integers(1, 20))
def test_metric_invariants(ranked, gold, k):
    r = recall_at_k(ranked, gold, k)
    assert 0.0 <= r <= 1.0
    assert recall_at_k(ranked, gold, k + 1) >= r  # recall never falls as k grows
    assert 0.0 <= average_precision_at_k(ranked, gold, 10) <= recall_at_k(ranked, gold, 10) + 1e-12
    assert 0.0 <= ndcg_at_k(ranked, gold, 10) <= 1.0 + 1e-12
    rr = reciprocal_rank(ranked, gold)
    assert (rr > 0) == any(key in gold for key in ranked)
    # a perfect ranking scores 1 everywhere
    perfect = sorted(gold)
    assert recall_at_k(perfect, gold, len(gold)) == 1.0
    assert average_precision_at_k(perfect, gold, max(10, len(gold))) == pytest.approx(1.0)
    assert ndcg_at_k(perfect, gold, 10) == pytest.approx(1.0)
