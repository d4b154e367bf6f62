"""`policyhub bench tiering` for real: the gold corpus, Tier-1 in process, Tier-2 as `llama_cpp.server`."""

from __future__ import annotations

from collections import Counter

import pytest

from services.bench.query import GOLD_DIR
from services.bench.tiering import bench_tiering, citation_matches_gold, stratified_subset
from services.benchmark.runner import load_gold_queries

LIMIT = 12


@pytest.mark.unit
@pytest.mark.parametrize("limit", [8, 12, 40, 230])
def test_stratified_subset_has_the_size_asked_and_every_category(limit: int) -> None:
    queries = load_gold_queries(GOLD_DIR)
    subset = stratified_subset(queries, limit)
    assert len(subset) == limit
    assert len({q.id for q in subset}) == limit
    assert {q.category for q in subset} == {q.category for q in queries}
    assert [q.id for q in subset] == sorted(q.id for q in subset)  # the file's order


@pytest.mark.unit
def test_stratified_subset_refuses_fewer_queries_than_categories() -> None:
    with pytest.raises(ValueError, match="categories"):
        stratified_subset(load_gold_queries(GOLD_DIR), 3)


@pytest.mark.unit
def test_a_parent_clause_counts_for_a_gold_sub_item_but_not_a_sibling() -> None:
    gold = frozenset({("KYC-AML-001", "2.0", "6.1.(a)")})
    assert citation_matches_gold(("KYC-AML-001", "2.0", "6.1.(a)"), gold)
    assert citation_matches_gold(("KYC-AML-001", "2.0", "6.1"), gold)
    assert not citation_matches_gold(("KYC-AML-001", "2.0", "6.10"), gold)
    assert not citation_matches_gold(("KYC-AML-001", "1.0", "6.1"), gold)


@pytest.fixture(scope="module")
def report() -> dict:
    return bench_tiering(limit=LIMIT)


@pytest.mark.integration
@pytest.mark.slow
def test_every_request_is_counted_once_and_shares_sum_to_one(report: dict) -> None:
    traffic = report["traffic"]
    assert report["dataset"]["requests"] == LIMIT
    assert sum(t["requests"] for t in traffic.values()) == LIMIT
    assert sum(t["share"] for t in traffic.values()) == pytest.approx(1.0, abs=1e-3)
    assert sum(report["dataset"]["by_category"].values()) == LIMIT
    assert len(report["dataset"]["by_category"]) == len(Counter(q.category for q in load_gold_queries(GOLD_DIR)))


@pytest.mark.integration
@pytest.mark.slow
def test_the_top_tier_for_everything_costs_at_least_what_routing_costs(report: dict) -> None:
    cost = report["cost"]
    counterfactual = cost["counterfactual_all_top_tier"]
    assert counterfactual["total"] > 0
    assert counterfactual["total"] >= cost["total"]
    assert cost["total"] == pytest.approx(sum(cost["by_tier"].values()), abs=1e-7)
    assert cost["reduction"] == pytest.approx(1 - cost["total"] / counterfactual["total"], abs=1e-3)


@pytest.mark.integration
@pytest.mark.slow
def test_every_tier_that_served_traffic_has_latency_and_correctness(report: dict) -> None:
    for tier, traffic in report["traffic"].items():
        assert traffic["requests"] > 0
        latency = report["latency_ms"][tier]
        assert latency["n"] == traffic["requests"]
        assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["max_ms"]
        if tier != "error":
            assert report["correctness"]["per_tier"][tier]["answered"] == traffic["requests"] - traffic["refused"]


@pytest.mark.integration
@pytest.mark.slow
def test_tier_2_is_served_by_a_real_endpoint_or_reported_unavailable(report: dict) -> None:
    tier2 = [m for m in report["models"].values() if m["tier"] == 2]
    assert tier2
    for model in tier2:
        assert model["routable"] != model["endpoint"].startswith("unavailable")
    # the prompt the bench rebuilds for the counterfactual is the one the request path sent
    assert report["estimate_check"]["prompts_rebuilt_differently"] == 0
