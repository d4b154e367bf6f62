"""Operations figures from the audit trail: traffic per tier, cost against the all-top-tier
counterfactual, p95 latency per tier, refusal and escalation rates.

Pure functions over plain values: `request_facts` reads one audit record's columns and
payload, `summarize` aggregates. The page handler only fetches the records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from governance.evaluation import percentile
from governance.policy import GovernancePolicy, ModelSpec
from services.generation.base import generation_cost

# The router's own estimate when a request carries no measured token counts (router.decide defaults).
EST_INPUT_TOKENS = 800
EST_OUTPUT_TOKENS = 200
REFUSED = "refused"
FAILED = "error"


@dataclass(frozen=True)
class RequestFacts:
    """What operations needs from one `ask` audit record."""

    day: date
    tier: int | None
    refused: bool
    failed: bool
    latency_ms: float | None
    cost: float
    counterfactual_cost: float
    escalated: bool
    human_review: bool


def top_tier_model(policy: GovernancePolicy) -> ModelSpec | None:
    """The model an "always use the best" deployment would send everything to."""
    if not policy.models:
        return None
    return max(policy.models, key=lambda m: (m.tier, m.price_out_per_1k, m.price_in_per_1k))


def measured_tokens(attempts: Sequence[Mapping]) -> tuple[int, int] | None:
    """Input and output tokens of the first attempt that reported them."""
    for attempt in attempts:
        tokens_in, tokens_out = attempt.get("input_tokens"), attempt.get("output_tokens")
        if isinstance(tokens_in, int) and isinstance(tokens_out, int) and (tokens_in or tokens_out):
            return tokens_in, tokens_out
    return None


def request_facts(created_at: datetime, tier: int | None, refused: bool, cost: float, payload: Mapping,
                  top: ModelSpec | None) -> RequestFacts:
    trace = payload.get("trace") or {}
    response = payload.get("response") or {}
    attempts = [a for a in (trace.get("attempts") or []) if isinstance(a, Mapping)]
    failed = bool(trace.get("error")) or not response
    answered = not failed and not refused
    counterfactual = 0.0
    if answered and top is not None:
        # Every answered request, quotes included, would have been a top-tier model call.
        tokens_in, tokens_out = measured_tokens(attempts) or (EST_INPUT_TOKENS, EST_OUTPUT_TOKENS)
        counterfactual = generation_cost(top, tokens_in, tokens_out)
    latency = (response.get("latency_ms") or {}).get("total") if response else None
    tried_tiers = [a.get("tier") for a in attempts if isinstance(a.get("tier"), int)]
    escalated = len(attempts) > 1 or (bool(tried_tiers) and tier is not None and tier != tried_tiers[0])
    return RequestFacts(day=created_at.date(), tier=None if failed else tier, refused=bool(refused), failed=failed,
                        latency_ms=float(latency) if isinstance(latency, (int, float)) else None,
                        cost=float(cost or 0.0), counterfactual_cost=counterfactual, escalated=escalated,
                        human_review=bool(response.get("human_review_required")))


@dataclass
class OperationsSummary:
    requests: int = 0
    answered: int = 0
    refused: int = 0
    failed: int = 0
    escalated: int = 0
    human_review: int = 0
    traffic: dict[str, int] = field(default_factory=dict)  # tier label, "refused" or "error" -> count
    p95_latency_by_tier: dict[int, float] = field(default_factory=dict)
    total_cost: float = 0.0
    total_counterfactual: float = 0.0
    days: list[str] = field(default_factory=list)
    daily_requests: list[int] = field(default_factory=list)
    daily_refusal_rate: list[float | None] = field(default_factory=list)
    daily_escalation_rate: list[float | None] = field(default_factory=list)
    daily_cost: list[float | None] = field(default_factory=list)
    daily_counterfactual: list[float | None] = field(default_factory=list)

    @property
    def mean_cost(self) -> float:
        return self.total_cost / self.requests if self.requests else 0.0

    @property
    def mean_counterfactual(self) -> float:
        return self.total_counterfactual / self.requests if self.requests else 0.0

    @property
    def savings_pct(self) -> float | None:
        if self.total_counterfactual <= 0:
            return None
        return 100.0 * (1 - self.total_cost / self.total_counterfactual)

    @property
    def refusal_rate(self) -> float:
        return 100.0 * self.refused / self.requests if self.requests else 0.0

    @property
    def escalation_rate(self) -> float:
        return 100.0 * self.escalated / self.requests if self.requests else 0.0

    @property
    def human_review_rate(self) -> float:
        return 100.0 * self.human_review / self.requests if self.requests else 0.0


def tier_label(tier: int, names: Mapping[int, str]) -> str:
    return f"Tier {tier} · {names[tier]}" if tier in names else f"Tier {tier}"


def summarize(facts: Iterable[RequestFacts], tier_names: Mapping[int, str], start: date,
              end: date) -> OperationsSummary:
    """Aggregate request facts over [start, end] (days inclusive)."""
    out = OperationsSummary()
    latencies: dict[int, list[float]] = {}
    by_day: dict[date, list[RequestFacts]] = {}
    for tier in sorted(tier_names):
        out.traffic[tier_label(tier, tier_names)] = 0
    out.traffic[REFUSED] = 0
    out.traffic[FAILED] = 0
    for f in facts:
        out.requests += 1
        out.total_cost += f.cost
        out.total_counterfactual += f.counterfactual_cost
        out.escalated += f.escalated
        out.human_review += f.human_review
        by_day.setdefault(f.day, []).append(f)
        if f.failed:
            out.failed += 1
            out.traffic[FAILED] += 1
            continue
        if f.refused:
            out.refused += 1
            out.traffic[REFUSED] += 1
            continue
        out.answered += 1
        label = tier_label(f.tier, tier_names) if f.tier is not None else FAILED
        out.traffic[label] = out.traffic.get(label, 0) + 1
        if f.latency_ms is not None and f.tier is not None:
            latencies.setdefault(f.tier, []).append(f.latency_ms)
    out.p95_latency_by_tier = {tier: percentile(values, 95) for tier, values in sorted(latencies.items())}
    day = start
    while day <= end:
        items = by_day.get(day, [])
        n = len(items)
        out.days.append(day.isoformat())
        out.daily_requests.append(n)
        out.daily_refusal_rate.append(100.0 * sum(f.refused for f in items) / n if n else None)
        out.daily_escalation_rate.append(100.0 * sum(f.escalated for f in items) / n if n else None)
        out.daily_cost.append(sum(f.cost for f in items) / n if n else None)
        out.daily_counterfactual.append(sum(f.counterfactual_cost for f in items) / n if n else None)
        day += timedelta(days=1)
    return out
