from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.policy import ZONE_ORDER, ModelSpec, load_policy
from governance.residency import effective_classification, zone_permitted
from services.query.complexity import COMPLEXITY_LABELS, QuestionFeatures
from services.query.router import (
    DAILY_BUDGET,
    PER_REQUEST_CAP,
    Budget,
    RouteDecision,
    decide,
)

pytestmark = pytest.mark.unit

POLICY = load_policy()
ZONE_RANK = {zone: rank for rank, zone in enumerate(ZONE_ORDER)}
OPEN_BUDGET = Budget(per_request_cap=POLICY.routing.per_request_cost_cap,
                     daily_remaining=POLICY.routing.daily_budget_per_user)


def model(name: str, tier: int, zone: str, price: float = 0.001, kind: str = "openai") -> ModelSpec:
    return ModelSpec(name=name, version="1", tier=tier, zone=zone, kind=kind,
                     path="x.gguf" if kind == "llama_cpp" else None, base_url="http://127.0.0.1:1/v1",
                     price_in_per_1k=price, price_out_per_1k=price * 2, context_tokens=4096,
                     typical_latency_ms=500, timeout_s=10)


SMALL = model("small", 1, "onprem", 0.00002, kind="llama_cpp")
ONPREM_LARGE = model("onprem-large", 2, "onprem", 0.0002)
VPC = model("vpc-large", 2, "vpc", 0.001)
CLOUD2 = model("cloud-large", 2, "cloud", 0.003)
CLOUD3 = model("cloud-frontier", 3, "cloud", 0.01)
ALL = [(SMALL, True), (ONPREM_LARGE, True), (VPC, True), (CLOUD2, True), (CLOUD3, True)]


def features(complexity: str) -> QuestionFeatures:
    return QuestionFeatures(complexity=complexity, confidence=0.9, n_policies_mentioned=1, mentions_versions=False,
                            length_words=8, top_score_gap=0.1)


def keys(decision: RouteDecision) -> list[str | None]:
    return [c.model_key for c in decision.candidates]


def test_lookup_is_quoted_without_a_model() -> None:
    decision = decide(features("lookup"), "public", "normal", None, OPEN_BUDGET, ALL, POLICY)
    assert keys(decision) == [None]
    assert decision.candidates[0].tier == 0 and decision.budget_exceeded is None


def test_single_clause_starts_at_tier_1_and_escalates_within_zones_first() -> None:
    decision = decide(features("single_clause"), "public", "normal", None, OPEN_BUDGET, ALL, POLICY)
    # on-prem tier 1, on-prem tier 2, then VPC, then cloud; tier 3 needs an async SLA; quote last
    assert keys(decision) == ["small@1", "onprem-large@1", "vpc-large@1", "cloud-large@1", None]


def test_comparison_needs_tier_2() -> None:
    decision = decide(features("comparison"), "public", "normal", None, OPEN_BUDGET, ALL, POLICY)
    assert keys(decision) == ["onprem-large@1", "vpc-large@1", "cloud-large@1", None]


def test_an_unsure_guess_of_complexity_starts_at_the_policy_tier() -> None:
    unsure_below = POLICY.routing.unsure_below
    assert POLICY.routing.unsure_start_tier == 1
    guessed = replace(features("multi_clause"), confidence=unsure_below - 0.01)
    decision = decide(guessed, "public", "normal", None, OPEN_BUDGET, ALL, POLICY)
    assert keys(decision) == ["small@1", "onprem-large@1", "vpc-large@1", "cloud-large@1", None]
    assert any("starts at tier 1" in r for r in decision.reasons)
    sure = replace(features("comparison"), confidence=unsure_below)
    assert keys(decide(sure, "public", "normal", None, OPEN_BUDGET, ALL, POLICY))[0] == "onprem-large@1"
    unsure_lookup = replace(features("lookup"), confidence=0.2)
    assert keys(decide(unsure_lookup, "public", "normal", None, OPEN_BUDGET, ALL, POLICY)) == [None]


@pytest.mark.parametrize("start_tier, expected", [
    (0, [None]),
    (2, ["onprem-large@1", "vpc-large@1", "cloud-large@1", None]),
])
def test_the_start_tier_for_a_guessed_label_is_configuration(start_tier: int, expected: list) -> None:
    policy = POLICY.model_copy(update={"routing": POLICY.routing.model_copy(update={"unsure_start_tier": start_tier})})
    guessed = replace(features("comparison"), confidence=0.3)
    decision = decide(guessed, "public", "normal", None, OPEN_BUDGET, ALL, policy)
    assert keys(decision) == expected
    assert decision.budget_exceeded is None and not decision.refused


def test_async_sla_allows_tier_3() -> None:
    decision = decide(features("comparison"), "public", "normal", POLICY.routing.async_sla_min_ms, OPEN_BUDGET, ALL, POLICY)
    assert "cloud-frontier@1" in keys(decision)
    assert keys(decision)[-2:] == ["cloud-frontier@1", None]


def test_tight_sla_caps_at_tier_1_even_for_a_comparison() -> None:
    tight = POLICY.routing.sla_tier1_max_ms - 1
    decision = decide(features("comparison"), "public", "normal", tight, OPEN_BUDGET, ALL, POLICY)
    assert keys(decision) == ["small@1", None]
    medium = POLICY.routing.sla_tier1_max_ms
    assert "cloud-frontier@1" not in keys(decide(features("comparison"), "public", "normal", medium, OPEN_BUDGET,
                                                 ALL, POLICY))


def test_residency_confidential_stays_on_prem_internal_never_reaches_cloud() -> None:
    confidential = decide(features("comparison"), "confidential", "normal", POLICY.routing.async_sla_min_ms, OPEN_BUDGET, ALL, POLICY)
    assert keys(confidential) == ["onprem-large@1", None]
    internal = decide(features("comparison"), "internal", "normal", POLICY.routing.async_sla_min_ms, OPEN_BUDGET, ALL, POLICY)
    assert keys(internal) == ["onprem-large@1", "vpc-large@1", None]
    assert any("not permitted" in r for r in internal.reasons)


def test_pii_makes_a_public_question_confidential() -> None:
    classification = effective_classification("public", True, ["public"], POLICY)
    decision = decide(features("single_clause"), classification, "normal", None, OPEN_BUDGET, ALL, POLICY)
    assert {c.zone for c in decision.candidates} <= {"onprem", None}


def test_unknown_classification_fails_closed() -> None:
    decision = decide(features("single_clause"), "top-secret-ish", "normal", None, OPEN_BUDGET, ALL, POLICY)
    assert {c.zone for c in decision.candidates} <= {"onprem", None}


def test_unapproved_models_never_appear() -> None:
    decision = decide(features("single_clause"), "public", "normal", None, OPEN_BUDGET,
                      [(SMALL, False), (ONPREM_LARGE, True), (CLOUD2, False)], POLICY)
    assert keys(decision) == ["onprem-large@1", None]
    assert not any("small@1" in r or "cloud-large@1" in r for r in decision.reasons)


def test_risk_high_needs_review_and_critical_is_refused() -> None:
    high = decide(features("single_clause"), "public", "high", None, OPEN_BUDGET, ALL, POLICY)
    assert high.human_review_required and not high.refused
    critical = decide(features("single_clause"), "public", "critical", None, OPEN_BUDGET, ALL, POLICY)
    assert critical.refused and critical.refusal_reason
    assert keys(critical) == [None]
    with pytest.raises(ValueError):
        decide(features("single_clause"), "public", "weird", None, OPEN_BUDGET, ALL, POLICY)


def test_estimated_cost_is_tokens_times_price() -> None:
    decision = decide(features("single_clause"), "public", "normal", None, OPEN_BUDGET, [(VPC, True)], POLICY,
                      est_input_tokens=1000, est_output_tokens=500)
    assert decision.candidates[0].est_cost == pytest.approx(1.0 * 0.001 + 0.5 * 0.002)


def test_per_request_cap_drops_expensive_models_and_keeps_cheap_ones() -> None:
    budget = Budget(per_request_cap=0.001, daily_remaining=10.0)
    decision = decide(features("single_clause"), "public", "normal", None, budget, ALL, POLICY)
    assert keys(decision) == ["small@1", "onprem-large@1", None]
    assert decision.budget_exceeded is None
    assert any("per-request cap" in r for r in decision.reasons)


def test_budget_exceeded_names_the_per_request_cap() -> None:
    budget = Budget(per_request_cap=0.0000001, daily_remaining=10.0)
    decision = decide(features("comparison"), "public", "normal", None, budget, ALL, POLICY)
    assert decision.budget_exceeded == PER_REQUEST_CAP
    assert keys(decision) == [None]


def test_budget_exceeded_names_the_daily_budget() -> None:
    budget = Budget(per_request_cap=1.0, daily_remaining=0.0)
    decision = decide(features("single_clause"), "public", "normal", None, budget, ALL, POLICY)
    assert decision.budget_exceeded == DAILY_BUDGET


def test_lookup_never_exceeds_a_budget() -> None:
    broke = Budget(per_request_cap=0.0, daily_remaining=0.0)
    assert decide(features("lookup"), "public", "normal", None, broke, ALL, POLICY).budget_exceeded is None


def test_no_model_at_all_falls_back_to_quote_silently() -> None:
    decision = decide(features("comparison"), "confidential", "normal", None, OPEN_BUDGET, [(CLOUD2, True)], POLICY)
    assert keys(decision) == [None] and decision.budget_exceeded is None


def test_running_cost_counts_every_candidate_escalation_may_try() -> None:
    # each of the two tier-2 candidates fits the cap alone, not both together
    cost = lambda spec: 0.8 * spec.price_in_per_1k + 0.2 * spec.price_out_per_1k  # noqa: E731
    budget = Budget(per_request_cap=cost(ONPREM_LARGE) + cost(VPC) - 1e-9, daily_remaining=10.0)
    decision = decide(features("comparison"), "public", "normal", None, budget, [(ONPREM_LARGE, True), (VPC, True)],
                      POLICY)
    assert keys(decision) == ["onprem-large@1", None]


# -- properties -----------------------------------------------------------------------------

model_specs = st.builds(
    lambda i, tier, zone, price: model(f"m{i}", tier, zone, price),
    st.integers(0, 10_000), st.integers(1, 3), st.sampled_from(ZONE_ORDER),
    st.floats(min_value=0.0, max_value=0.05, allow_nan=False))
model_lists = st.lists(st.tuples(model_specs, st.booleans()), max_size=8,
                       unique_by=lambda pair: pair[0].key)


@settings(max_examples=400, deadline=None)
@given(complexity=st.sampled_from(COMPLEXITY_LABELS),
       declared=st.one_of(st.none(), st.sampled_from(["public", "internal", "confidential", "bogus"])),
       pii=st.booleans(),
       clause_classes=st.lists(st.sampled_from(["public", "internal", "confidential"]), max_size=5),
       risk=st.sampled_from(["normal", "high", "critical"]),
       sla=st.one_of(st.none(), st.integers(1, 600_000)),
       cap=st.floats(0.0, 0.1), daily=st.floats(0.0, 2.0), models=model_lists)
def test_routing_invariants(complexity, declared, pii, clause_classes, risk, sla, cap, daily, models) -> None:
    classification = effective_classification(declared, pii, clause_classes, POLICY)
    decision = decide(features(complexity), classification, risk, sla, Budget(cap, daily), models, POLICY)
    model_candidates = [c for c in decision.candidates if c.tier > 0]
    # the tier-0 quote is always last, and only last
    assert decision.candidates[-1].tier == 0 and decision.candidates[-1].model_key is None
    assert all(c.model_key is not None for c in model_candidates) and len(model_candidates) == len(
        decision.candidates) - 1
    # residency: never a zone the classification forbids; confidential or PII: on-prem only
    assert all(zone_permitted(c.zone, classification, POLICY) for c in model_candidates)
    if classification == "confidential" or pii:
        assert all(c.zone == "onprem" for c in model_candidates)
    # escalation never moves to a less restricted zone
    ranks = [ZONE_RANK[c.zone] for c in model_candidates]
    assert ranks == sorted(ranks)
    # unapproved models never appear
    approved = {spec.key for spec, ok in models if ok}
    assert all(c.model_key in approved for c in model_candidates)
    # the budget holds for everything escalation may try
    assert sum(c.est_cost for c in model_candidates) <= min(cap, daily) + 1e-12
    # the SLA cap and the refusal rule
    if sla is not None and sla < POLICY.routing.sla_tier1_max_ms:
        assert all(c.tier <= 1 for c in model_candidates)
    if sla is None or sla < POLICY.routing.async_sla_min_ms:
        assert all(c.tier <= 2 for c in model_candidates)
    if risk == "critical":
        assert decision.refused and not model_candidates
    if complexity == "lookup":
        assert not model_candidates and decision.budget_exceeded is None
    if decision.budget_exceeded:
        assert not model_candidates
