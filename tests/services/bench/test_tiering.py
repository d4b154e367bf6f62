"""`policyhub bench tiering` for real: the gold corpus, Tier-1 in process, Tier-2 as `llama_cpp.server`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from governance.policy import ModelSpec, load_policy
from services.bench.query import GOLD_DIR
from services.bench.tiering import (
    WARM_UP_PROMPT,
    bench_tiering,
    citation_matches_gold,
    label_routing_ceiling,
    stratified_subset,
    top_permitted_model,
)
from services.benchmark.runner import GoldQuery, load_gold_queries
from tests.services.conftest import policy_with_cloud_model

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


def _spec(name: str, tier: int, price_in: float, zone: str = "onprem") -> ModelSpec:
    return ModelSpec(name=name, version="1", tier=tier, zone=zone, kind="openai", api_model=name,
                     base_url="http://127.0.0.1:1/v1", price_in_per_1k=price_in, price_out_per_1k=price_in * 2,
                     context_tokens=2048, typical_latency_ms=500, timeout_s=10)


def _answered(expected_tier: int | None, refusal: str | None = None, tokens: tuple[int, int] = (1000, 100),
              classification: str = "internal") -> dict:
    query = GoldQuery(id="Q", question="q", gold=frozenset(), category="c", expected_tier=expected_tier,
                      expected_refusal=refusal, as_of=None, classification=None)
    return {"query": query, "classification": classification,
            "baseline": {"input_tokens": tokens[0], "output_tokens": tokens[1], "cost": 0.5}}


@pytest.mark.unit
def test_the_label_routing_ceiling_prices_each_request_at_its_expected_tier() -> None:
    small, large, dear = _spec("small", 1, 0.01), _spec("large", 2, 0.1), _spec("large-dear", 2, 0.3)
    routable = {s.key: s for s in (small, large, dear)}
    rows = [_answered(0), _answered(1), _answered(2), _answered(None, "not_in_policy"), _answered(3)]
    ceiling = label_routing_ceiling(rows, routable, counterfactual=2.0, policy=load_policy())
    # tier 1 at the small model's prices, tier 2 at the cheaper tier-2 model's; tier 0 and the refusal
    # free; tier 3 (no model) at the top tier's own measured cost
    expected = (1.0 * 0.01 + 0.1 * 0.02) + (1.0 * 0.1 + 0.1 * 0.2) + 0.5
    assert ceiling["total"] == pytest.approx(expected)
    assert ceiling["reduction"] == pytest.approx(1 - expected / 2.0, abs=1e-4)
    assert ceiling["requests_by_expected_tier"] == {"0": 1, "1": 1, "2": 2, "refused": 1}


@pytest.mark.unit
def test_the_ceiling_prices_a_request_only_at_models_its_classification_may_reach() -> None:
    cloud_cheap, onprem = _spec("cloud-cheap", 2, 0.001, zone="cloud"), _spec("onprem-large", 2, 0.1)
    routable = {s.key: s for s in (cloud_cheap, onprem)}
    public, confidential = _answered(2, classification="public"), _answered(2, classification="confidential")
    ceiling = label_routing_ceiling([public, confidential], routable, counterfactual=2.0, policy=load_policy())
    assert ceiling["total"] == pytest.approx((1.0 * 0.001 + 0.1 * 0.002) + (1.0 * 0.1 + 0.1 * 0.2))
    alone = label_routing_ceiling([confidential], {cloud_cheap.key: cloud_cheap}, 2.0, load_policy())
    assert alone["total"] == 0 and alone["requests_by_expected_tier"] == {"0": 1}  # no model may see it: quoted


@pytest.mark.unit
def test_the_baseline_model_is_the_top_one_the_classification_may_reach() -> None:
    policy = load_policy()
    onprem, vpc, cloud = _spec("onprem", 2, 0.1), _spec("vpc", 2, 0.2, zone="vpc"), _spec("cloud", 3, 1.0, zone="cloud")
    routable = {s.key: s for s in (onprem, vpc, cloud)}
    assert top_permitted_model(routable, "public", policy) == cloud
    assert top_permitted_model(routable, "internal", policy) == vpc  # same tier, dearer
    assert top_permitted_model(routable, "confidential", policy) == onprem
    assert top_permitted_model({cloud.key: cloud}, "confidential", policy) is None
    assert top_permitted_model(routable, "no-such-class", policy) == onprem  # unknown fails closed


@pytest.mark.integration
@pytest.mark.slow
def test_the_all_top_tier_baseline_never_sends_a_request_where_its_data_may_not_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recording_endpoint) -> None:
    """A cloud tier-3 model is the top approved tier; only public requests may reach it, in the baseline too."""
    policy_file = policy_with_cloud_model(tmp_path, recording_endpoint.base_url, "cloud-frontier", tier=3)
    monkeypatch.setenv("POLICYHUB_POLICY_FILE", str(policy_file))

    result = bench_tiering(limit=8)

    assert result["top_approved_tier"]["model"] == "cloud-frontier@1"
    by_model = result["top_approved_tier"]["baseline_requests_by_model"]
    assert by_model.get("onprem-large@1", 0) > 0  # non-public requests were compared, on-prem
    public = {q.question for q in load_gold_queries(GOLD_DIR) if q.classification == "public"}
    sent = [m["content"] for body in recording_endpoint.requests for m in body["messages"]
            if m["role"] == "user" and m["content"] != WARM_UP_PROMPT]
    assert len(sent) == by_model.get("cloud-frontier@1", 0)
    assert all(any(question in text for question in public) for text in sent), json.dumps(sent)[:2000]


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
    assert 0 <= report["label_routing"]["total"] <= counterfactual["total"]


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
