"""Drift: the gold-recall rule, the live-signal significance tests, and alerts landing in the audit chain."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select

from governance.drift import (
    LiveSample,
    compare_windows,
    gold_recall_shift,
    live_recall_at_5,
    rate_shift,
    sample_from_record,
    score_shift,
    tier_mix_shift,
    two_proportion_z_test,
)

NOW = datetime(2026, 5, 1, tzinfo=UTC)


def samples(n, *, score_mean=0.6, refusal=0.1, tier_weights=(0.7, 0.3), escalation=0.05, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        refused = bool(rng.random() < refusal)
        out.append(LiveSample(created_at=NOW - timedelta(minutes=i), top1_score=float(rng.normal(score_mean, 0.08)),
                              refused=refused, refusal_reason="not_in_policy" if refused else None,
                              tier=0 if refused else int(rng.choice(len(tier_weights), p=tier_weights)),
                              escalated=bool(rng.random() < escalation), human_review=False))
    return out


@pytest.mark.unit
def test_gold_drop_over_the_policy_limit_is_an_alert():
    base = {"recall_at_5": 0.92, "queries": 170}
    assert not gold_recall_shift(base, {"recall_at_5": 0.90, "queries": 170}, 0.05).significant  # -2.2%
    shift = gold_recall_shift(base, {"recall_at_5": 0.86, "queries": 170}, 0.05)  # -6.5%
    assert shift.significant
    assert shift.relative_change == pytest.approx((0.86 - 0.92) / 0.92)
    assert "exceeds" in shift.note
    assert not gold_recall_shift(base, {"recall_at_5": 0.99}, 0.05).significant  # improvements never alert


@pytest.mark.unit
def test_two_proportion_z_test_matches_the_textbook_value():
    # 45/500 vs 75/500: pooled p = 0.12, se = sqrt(.12*.88*(2/500)) = 0.020553
    z, p = two_proportion_z_test(45, 500, 75, 500)
    assert z == pytest.approx(0.06 / 0.0205524, rel=1e-4)
    assert p == pytest.approx(0.003484, rel=1e-2)
    assert two_proportion_z_test(0, 50, 0, 50) == (0.0, 1.0)


@pytest.mark.unit
def test_same_distribution_is_not_flagged_and_a_real_shift_is():
    baseline, same = samples(400, seed=10), samples(400, seed=11)
    assert not any(s.significant for s in compare_windows(baseline, same, alpha=0.01, min_samples=30))
    shifted = samples(400, score_mean=0.45, refusal=0.3, tier_weights=(0.3, 0.7), escalation=0.2, seed=3)
    flagged = {s.signal for s in compare_windows(baseline, shifted, alpha=0.01, min_samples=30) if s.significant}
    assert flagged == {"top1_score", "refusal_rate", "tier_mix", "escalation_rate"}


@pytest.mark.unit
def test_small_windows_are_reported_but_never_flagged():
    shift = score_shift([0.9] * 10, [0.1] * 10, alpha=0.01, min_samples=30)
    assert not shift.significant and shift.p_value is None and "fewer than 30" in shift.note
    assert not rate_shift("refusal_rate", [False] * 5, [True] * 5, 0.01, 30).significant
    assert tier_mix_shift([0] * 50, [0] * 50, 0.01, 30).note == "a single tier served both windows"


@pytest.mark.unit
def test_sample_from_an_ask_audit_payload():
    payload = {"trace": {"best_score": 0.71, "retrieved": [{"dense_score": 0.69}],
                         "attempts": [{"outcome": "failed_verification"}, {"outcome": "served"}],
                         "error": None},
               "response": {"refusal_reason": None, "human_review_required": True},
               "embedding_fingerprint": "ab" * 32}
    sample = sample_from_record(NOW, payload, refused=False, tier=1)
    assert sample.top1_score == 0.71 and sample.escalated and sample.human_review and sample.tier == 1
    no_best = {"trace": {"retrieved": [{"dense_score": 0.5}], "attempts": [{"outcome": "skipped"}, {"outcome": "served"}]},
               "response": None}
    quoted = sample_from_record(NOW, no_best, refused=True, tier=0)
    assert quoted.top1_score == 0.5 and not quoted.escalated  # an untried candidate is not an escalation
    assert sample_from_record(NOW, {"trace": {"error": {"error": "x"}}}, refused=False, tier=None) is None


@pytest.mark.unit
def test_live_recall_uses_only_labelled_questions_with_gold():
    a, b, c = ("P", "1", "1"), ("P", "1", "2"), ("Q", "1", "1")
    result = live_recall_at_5([([a, b], {a}), ([c], {b}), ([a], set())])
    assert result == {"queries": 2, "recall_at_5": 0.5}


@pytest.mark.integration
def test_alerts_and_live_samples_round_trip_through_the_database(tmp_path):
    from governance.audit import AuditEntry, append, verify_chain
    from governance.drift import load_live_samples, record_alert
    from governance.records.models import DriftAlert
    from services.db.session import make_engine, make_session_factory, transaction, upgrade

    url = f"sqlite:///{tmp_path / 'd.db'}"
    upgrade(url)
    factory = make_session_factory(make_engine(url))
    with transaction(factory) as session:
        for i in range(3):
            append(session, AuditEntry(
                request_id=f"r{i}", event="ask", actor="staff", actor_role="staff", channel="api",
                question="q", tier=0, refused=i == 2,
                payload={"trace": {"best_score": 0.5 + i / 10, "attempts": [], "error": None},
                         "response": {"refusal_reason": "not_in_policy" if i == 2 else None}}))
        shift = gold_recall_shift({"recall_at_5": 0.9}, {"recall_at_5": 0.8}, 0.05)
        record_alert(session, "m@1", shift, actor="cli:test")
    with transaction(factory) as session:
        live = load_live_samples(session, datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1))
        assert [s.top1_score for s in live] == pytest.approx([0.5, 0.6, 0.7])
        assert [s.refused for s in live] == [False, False, True]
        alert = session.scalars(select(DriftAlert)).one()
        assert alert.signal == "gold_recall_at_5" and alert.relative_change == pytest.approx(-1 / 9)
        assert verify_chain(session).ok
        from governance.records.audit import AuditRecord

        events = [r.event for r in session.scalars(select(AuditRecord).order_by(AuditRecord.seq))]
        assert events[-1] == "drift.alert"
        assert json.loads(session.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc())).first().payload)[
            "alert_id"] == alert.id
