"""Drift: has retrieval quality, or the traffic it serves, moved since the model was approved?

Two kinds of evidence:

* **gold drift** — the gold set re-run today against the approved baseline report; a
  relative Recall@5 drop over the policy file's `drift.recall_at_5_relative_drop` is an alert;
* **live drift** — signals read back from the audit log (every answered question is
  there) in two time windows: the top-1 retrieval score distribution (two-sample
  Kolmogorov–Smirnov), the refusal and escalation rates (two-proportion z-test) and the
  tier mix (chi-square test of homogeneity). A shift is significant below `alpha`.

The comparisons are pure functions; loading audit rows and recording alerts are the edges.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

import numpy as np
from scipy import stats
from sqlalchemy import select
from sqlalchemy.orm import Session

from governance.audit import AuditEntry, append
from governance.evaluation import recall_at_k
from governance.policy import DriftRules
from governance.records.audit import AuditRecord
from governance.records.models import DriftAlert

# Used only while the policy file does not name them (drift.significance / drift.min_samples).
DEFAULT_ALPHA = 0.01
DEFAULT_MIN_SAMPLES = 30


@dataclass(frozen=True)
class LiveSample:
    """One answered question as the drift signals see it."""

    created_at: datetime
    top1_score: float | None
    refused: bool
    refusal_reason: str | None
    tier: int | None
    escalated: bool
    human_review: bool
    embedding_fingerprint: str | None = None


@dataclass(frozen=True)
class SignalShift:
    signal: str
    test: str
    baseline: float | None
    current: float | None
    relative_change: float | None
    statistic: float | None
    p_value: float | None
    significant: bool
    n_baseline: int
    n_current: int
    note: str = ""
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def drift_settings(rules: DriftRules) -> tuple[float, int]:
    """Significance level and minimum window size, from the policy file when it names them."""
    return (float(getattr(rules, "significance", DEFAULT_ALPHA)),
            int(getattr(rules, "min_samples", DEFAULT_MIN_SAMPLES)))


# -- pure comparisons -----------------------------------------------------------------------


def relative_change(baseline: float | None, current: float | None) -> float | None:
    if baseline is None or current is None or baseline == 0:
        return None
    return (current - baseline) / abs(baseline)


def gold_recall_shift(baseline_metrics: dict, current_metrics: dict, max_relative_drop: float,
                      metric: str = "recall_at_5") -> SignalShift:
    """The gold re-run against the approved baseline: significant when the drop exceeds the policy's limit."""
    base, cur = baseline_metrics.get(metric), current_metrics.get(metric)
    change = relative_change(base, cur)
    dropped = change is not None and -change > max_relative_drop
    return SignalShift(
        signal=f"gold_{metric}", test="relative_drop", baseline=base, current=cur, relative_change=change,
        statistic=None if change is None else -change, p_value=None, significant=dropped,
        n_baseline=int(baseline_metrics.get("queries", 0)), n_current=int(current_metrics.get("queries", 0)),
        note=(f"relative drop {-change:.2%} exceeds the policy's {max_relative_drop:.0%}" if dropped
              else f"within the policy's {max_relative_drop:.0%} relative drop" if change is not None
              else "baseline or current value missing"))


def two_proportion_z_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """z and two-sided p for H0: the two windows share one rate (pooled standard error)."""
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0  # both windows all-or-nothing at the same rate: no evidence of a shift
    z = (x2 / n2 - x1 / n1) / se
    return z, float(2 * stats.norm.sf(abs(z)))


def score_shift(baseline: Sequence[float], current: Sequence[float], alpha: float, min_samples: int) -> SignalShift:
    base_med = float(np.median(baseline)) if len(baseline) else None
    cur_med = float(np.median(current)) if len(current) else None
    common = dict(signal="top1_score", test="ks_2samp", baseline=base_med, current=cur_med,
                  relative_change=relative_change(base_med, cur_med), n_baseline=len(baseline),
                  n_current=len(current))
    if min(len(baseline), len(current)) < min_samples:
        return SignalShift(**common, statistic=None, p_value=None, significant=False,
                           note=f"fewer than {min_samples} scored questions in a window")
    result = stats.ks_2samp(baseline, current)
    p = float(result.pvalue)
    return SignalShift(**common, statistic=float(result.statistic), p_value=p, significant=p < alpha,
                       note="median top-1 dense score", details={
                           "baseline_p10_p90": [float(np.percentile(baseline, 10)), float(np.percentile(baseline, 90))],
                           "current_p10_p90": [float(np.percentile(current, 10)), float(np.percentile(current, 90))]})


def rate_shift(signal: str, baseline: Sequence[bool], current: Sequence[bool], alpha: float,
               min_samples: int) -> SignalShift:
    x1, n1, x2, n2 = sum(baseline), len(baseline), sum(current), len(current)
    r1 = x1 / n1 if n1 else None
    r2 = x2 / n2 if n2 else None
    common = dict(signal=signal, test="two_proportion_z", baseline=r1, current=r2,
                  relative_change=relative_change(r1, r2), n_baseline=n1, n_current=n2)
    if min(n1, n2) < min_samples:
        return SignalShift(**common, statistic=None, p_value=None, significant=False,
                           note=f"fewer than {min_samples} questions in a window")
    z, p = two_proportion_z_test(x1, n1, x2, n2)
    return SignalShift(**common, statistic=z, p_value=p, significant=p < alpha)


def tier_mix_shift(baseline: Sequence[int], current: Sequence[int], alpha: float, min_samples: int) -> SignalShift:
    tiers = sorted(set(baseline) | set(current))
    base_counts = [sum(t == tier for t in baseline) for tier in tiers]
    cur_counts = [sum(t == tier for t in current) for tier in tiers]
    details = {"tiers": tiers, "baseline_counts": base_counts, "current_counts": cur_counts}
    common = dict(signal="tier_mix", test="chi2_contingency", baseline=None, current=None, relative_change=None,
                  n_baseline=len(baseline), n_current=len(current), details=details)
    if min(len(baseline), len(current)) < min_samples:
        return SignalShift(**common, statistic=None, p_value=None, significant=False,
                           note=f"fewer than {min_samples} answered questions in a window")
    if len(tiers) < 2:
        return SignalShift(**common, statistic=0.0, p_value=1.0, significant=False, note="a single tier served both windows")
    chi2, p, _, _ = stats.chi2_contingency(np.array([base_counts, cur_counts]))
    return SignalShift(**common, statistic=float(chi2), p_value=float(p), significant=float(p) < alpha)


def compare_windows(baseline: Sequence[LiveSample], current: Sequence[LiveSample], alpha: float = DEFAULT_ALPHA,
                    min_samples: int = DEFAULT_MIN_SAMPLES) -> list[SignalShift]:
    """Every live signal of the current window against the baseline window."""
    served_b = [s for s in baseline if not s.refused]
    served_c = [s for s in current if not s.refused]
    return [
        score_shift([s.top1_score for s in baseline if s.top1_score is not None],
                    [s.top1_score for s in current if s.top1_score is not None], alpha, min_samples),
        rate_shift("refusal_rate", [s.refused for s in baseline], [s.refused for s in current], alpha, min_samples),
        tier_mix_shift([s.tier for s in served_b if s.tier is not None],
                       [s.tier for s in served_c if s.tier is not None], alpha, min_samples),
        rate_shift("escalation_rate", [s.escalated for s in served_b], [s.escalated for s in served_c], alpha,
                   min_samples),
        rate_shift("human_review_rate", [s.human_review for s in served_b], [s.human_review for s in served_c],
                   alpha, min_samples),
    ]


def sample_from_record(created_at: datetime, payload: dict, refused: bool, tier: int | None) -> LiveSample | None:
    """Drift signals of one `ask` audit record; None for a request that ended in an error."""
    trace = payload.get("trace") or {}
    if trace.get("error"):
        return None
    top1 = trace.get("best_score")
    if top1 is None and trace.get("retrieved"):
        top1 = trace["retrieved"][0].get("dense_score")
    response = payload.get("response") or {}
    # Escalation: the answer needed more than one *tried* candidate (a model failed verification,
    # timed out or declined and the next tier served); candidates skipped untried do not count.
    tried = [a for a in trace.get("attempts") or [] if a.get("outcome") != "skipped"]
    reason = response.get("refusal_reason")
    return LiveSample(created_at=created_at, top1_score=None if top1 is None else float(top1), refused=bool(refused),
                      refusal_reason=reason, tier=tier, escalated=len(tried) > 1,
                      human_review=bool(response.get("human_review_required")),
                      embedding_fingerprint=payload.get("embedding_fingerprint"))


def live_recall_at_5(items: Iterable[tuple[Sequence[tuple], set[tuple]]]) -> dict:
    """Recall@5 of what was actually served, over labelled live questions that have gold clauses."""
    graded = [(ranked, gold) for ranked, gold in items if gold]
    if not graded:
        return {"queries": 0, "recall_at_5": None}
    return {"queries": len(graded),
            "recall_at_5": round(sum(recall_at_k(list(r), g, 5) for r, g in graded) / len(graded), 4)}


# -- edges: audit rows in, alerts out -------------------------------------------------------


def load_live_samples(session: Session, since: datetime, until: datetime) -> list[LiveSample]:
    rows = session.execute(select(AuditRecord.created_at, AuditRecord.payload, AuditRecord.refused, AuditRecord.tier)
                           .where(AuditRecord.event == "ask", AuditRecord.created_at >= since,
                                  AuditRecord.created_at < until).order_by(AuditRecord.seq)).all()
    samples = []
    for created_at, payload, refused, tier in rows:
        sample = sample_from_record(created_at, json.loads(payload), refused, tier)
        if sample is not None:
            samples.append(sample)
    return samples


def record_alert(session: Session, model_key: str, shift: SignalShift, actor: str, actor_role: str = "model_risk",
                 channel: str = "cli", request_id: str | None = None) -> DriftAlert:
    """Store a significant shift and append it to the audit chain (same transaction)."""
    alert = DriftAlert(model_key=model_key, signal=shift.signal, baseline=shift.baseline, current=shift.current,
                       relative_change=shift.relative_change, details=_json_safe(shift.as_dict()))
    session.add(alert)
    session.flush()
    append(session, AuditEntry(request_id=request_id or uuid.uuid4().hex, event="drift.alert", actor=actor,
                               actor_role=actor_role, channel=channel, model_key=model_key,
                               payload={"alert_id": alert.id, **_json_safe(shift.as_dict())}))
    return alert


def _json_safe(value):  # noqa: ANN001, ANN202
    """JSON columns and the audit payload take no NaN/inf."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
