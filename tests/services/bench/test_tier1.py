"""`policyhub bench tier1` and `bench router` run the real path and report what the README quotes."""

from __future__ import annotations

import pytest

from governance.policy import load_policy
from services.bench.tier1 import bench_router, bench_tier1
from services.query.escalation import MAX_ANSWER_TOKENS


@pytest.mark.unit
def test_router_bench_times_every_decision_over_the_policy_models() -> None:
    policy = load_policy()
    report = bench_router(n=300, policy=policy)
    assert report["decisions"] == 300 and report["models"] == len(policy.models)
    assert 0 < report["p50_us"] <= report["p99_us"] <= report["max_us"]
    assert report["goal_met"] == (report["p99_us"] <= report["goal_p99_us"])


@pytest.mark.integration
@pytest.mark.slow
def test_tier1_bench_answers_with_the_bundled_model_on_the_gold_corpus() -> None:
    report = bench_tier1(limit=8, min_clauses=0)  # gold policies only; 1,000 clauses is the CLI default
    assert report["model"] == "smollm2-135m-instruct@q4_1"
    assert report["corpus"]["sources"] == ["gold policies"] and report["corpus"]["clauses"] > 500
    asked = report["questions"]
    assert asked["asked"] == 8 and asked["answered"] + asked["below_threshold"] == 8 and asked["answered"] > 0
    assert sum(report["outcomes"].values()) == asked["answered"]
    assert set(report["outcomes"]) <= {"served", "failed_verification", "declined", "error", "timeout"}
    assert report["outcomes"].get("served", 0) >= 1 and "error" not in report["outcomes"]
    assert 0 <= report["served_with_gold_citation"] <= report["outcomes"]["served"]
    assert report["generation_ms"]["p50_ms"] <= report["answer_ms"]["p95_ms"] + 1e-6
    assert report["tokens"]["prompt_min"] > 50 and report["tokens"]["answer_max"] <= MAX_ANSWER_TOKENS
