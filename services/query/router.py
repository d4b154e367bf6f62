"""Which tiers and models may serve a request, in the order to try them. A pure function.

`decide` takes plain values (question features, effective classification, risk, SLA, budget,
the policy file's models with their approval flags) and returns a `RouteDecision`: no I/O, no
clock, no globals, so it is property-tested and past decisions can be replayed from the audit
trail.

The rules, in the order they apply:

* Risk: `critical` refuses the request; `high` requires human review of the answer.
* Complexity sets the lowest adequate tier: lookup -> 0, single_clause and summarisation -> 1,
  multi_clause and comparison -> 2. A lookup is answered by quoting the clause (tier 0) and
  never spends on a model. A multi_clause or comparison label that the classifier gave with a
  confidence below `routing.unsure_below` (no rule matched) starts at `routing.unsure_start_tier`
  instead: with 1, escalation still reaches tier 2 when tier 1's answer fails verification; with
  0 the clauses are quoted. Either way a question the classifier merely guessed to be complex
  does not pay for tier 2 first. (Gold subset of 40: 6 of the 13 questions sent to tier 2 first
  had such a guess, 0.31-0.42; five were single-clause questions.)
* SLA caps the highest tier: below `routing.sla_tier1_max_ms` only tiers 0-1; below
  `routing.sla_tier2_max_ms` up to tier 2; no SLA (interactive default) up to tier 2; tier 3
  (frontier, asynchronous) only when the caller's SLA is at least `routing.async_sla_min_ms`, i.e.
  the caller said it can wait. When the SLA caps below the complexity's tier, the SLA wins and
  the highest tier it allows is tried.
* Approval: unapproved models are never candidates.
* Residency: a model whose zone is not permitted for the effective classification is never a
  candidate (`governance.residency.zone_permitted`).
* Order: most restricted zone first (onprem, then vpc, then cloud), then tier, then cost. So
  escalation never moves data to a less restricted zone while a more restricted candidate is
  left: a stronger on-prem model is tried before a VPC one.
* Cost: a candidate's estimated cost is tokens x price per 1k. Candidates are kept while the
  running total of kept candidates stays within both the per-request cap and the user's daily
  remaining budget (escalation may try them all).
* Budget rule: when the complexity needs a model (tier >= 1), at least one approved, permitted
  model in the SLA's tier range exists, and every one of them was dropped for cost, then
  `budget_exceeded` names the budget ("per_request_cost_cap" when even the cheapest exceeds the
  cap on its own, else "daily_budget_per_user") and the caller answers 429. Lookups never hit
  it: they are served by tier 0 without a model. When no model exists at all for other reasons
  (none approved, residency), the request falls back to tier 0 silently, with the reason.
* The tier-0 quote is always the last candidate, refusals included, so the list is never empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from governance.policy import ZONE_ORDER, GovernancePolicy, ModelSpec
from governance.residency import zone_permitted
from services.generation.base import generation_cost
from services.query.complexity import QuestionFeatures

MIN_TIER_FOR_COMPLEXITY = {"lookup": 0, "single_clause": 1, "summarisation": 1, "multi_clause": 2,
                           "comparison": 2}
RISK_LEVELS = ("normal", "high", "critical")
PER_REQUEST_CAP = "per_request_cost_cap"
DAILY_BUDGET = "daily_budget_per_user"
_ZONE_RANK = {zone: rank for rank, zone in enumerate(ZONE_ORDER)}


@dataclass(frozen=True)
class Candidate:
    tier: int
    model_key: str | None  # None for the tier-0 quote
    zone: str | None
    est_cost: float
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class RouteDecision:
    candidates: tuple[Candidate, ...]  # try first to last; the last is always the tier-0 quote
    risk: str  # normal | high | critical
    human_review_required: bool
    refused: bool
    refusal_reason: str | None
    budget_exceeded: str | None  # the budget's name when a needed model is unaffordable (answer 429)
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Budget:
    per_request_cap: float
    daily_remaining: float


QUOTE_CANDIDATE = Candidate(tier=0, model_key=None, zone=None, est_cost=0.0,
                            reasons=("tier 0: quote the best clauses verbatim with their citations",))


def single_model_decision(spec: ModelSpec | None, reason: str) -> RouteDecision:
    """One named model, then the quote: how a benchmark puts one model to a request (None: the quote alone)."""
    first = () if spec is None else (
        Candidate(tier=spec.tier, model_key=spec.key, zone=spec.zone, est_cost=0.0, reasons=(reason,)),)
    return RouteDecision(candidates=(*first, QUOTE_CANDIDATE), risk="normal", human_review_required=False,
                         refused=False, refusal_reason=None, budget_exceeded=None, reasons=())


def max_tier_for_sla(sla_ms: int | None, policy: GovernancePolicy) -> tuple[int, str]:
    routing = policy.routing
    async_min = routing.async_sla_min_ms
    if sla_ms is None:
        return 2, "no SLA given: interactive, up to tier 2"
    if sla_ms < routing.sla_tier1_max_ms:
        return 1, f"SLA {sla_ms} ms < {routing.sla_tier1_max_ms} ms: tiers 0-1 only"
    if sla_ms >= async_min:
        return 3, f"SLA {sla_ms} ms >= {async_min} ms: asynchronous, up to tier 3"
    return 2, f"SLA {sla_ms} ms: up to tier 2"


def decide(features: QuestionFeatures, effective_classification: str, risk: str, sla_ms: int | None,
           budget: Budget, models: Sequence[tuple[ModelSpec, bool]], policy: GovernancePolicy,
           est_input_tokens: int = 800, est_output_tokens: int = 200) -> RouteDecision:
    """Order the tiers and models that may serve this request (see the module docstring for the rules)."""
    if risk not in RISK_LEVELS:
        raise ValueError(f"unknown risk level {risk!r}; expected one of {RISK_LEVELS}")
    if features.complexity not in MIN_TIER_FOR_COMPLEXITY:
        raise ValueError(f"unknown complexity {features.complexity!r}")
    reasons: list[str] = []
    if risk == "critical":
        return RouteDecision(candidates=(QUOTE_CANDIDATE,), risk=risk, human_review_required=True, refused=True,
                             refusal_reason="the question touches a critical-risk topic and is not answered",
                             budget_exceeded=None, reasons=("risk critical: refused",))
    human_review = risk == "high"
    if human_review:
        reasons.append("risk high: the answer needs human review")

    min_tier = MIN_TIER_FOR_COMPLEXITY[features.complexity]
    reasons.append(f"complexity {features.complexity} ({features.confidence:.2f}): lowest adequate tier {min_tier}")
    unsure_below, unsure_tier = policy.routing.unsure_below, policy.routing.unsure_start_tier
    if min_tier > 1 and features.confidence < unsure_below and unsure_tier < min_tier:
        min_tier = unsure_tier
        reasons.append(f"confidence below {unsure_below}: a guessed label starts at tier {unsure_tier}"
                       + (", escalating on a failed verification" if unsure_tier else ""))
    if min_tier == 0:
        reasons.append("tier 0: the clauses are quoted; no model is used")
        return RouteDecision(candidates=(QUOTE_CANDIDATE,), risk=risk, human_review_required=human_review,
                             refused=False, refusal_reason=None, budget_exceeded=None, reasons=tuple(reasons))
    max_tier, sla_reason = max_tier_for_sla(sla_ms, policy)
    reasons.append(sla_reason)
    low_tier = min(min_tier, max_tier)
    if low_tier < min_tier:
        reasons.append(f"the SLA caps the tier below the complexity's tier {min_tier}: trying tier {max_tier}")

    eligible: list[tuple[ModelSpec, float]] = []
    for spec, approved in models:
        if not approved:
            continue  # unapproved models are never candidates, nor named as such
        if not low_tier <= spec.tier <= max_tier:
            continue
        if not zone_permitted(spec.zone, effective_classification, policy):
            reasons.append(f"{spec.key}: zone {spec.zone} not permitted for {effective_classification} data")
            continue
        eligible.append((spec, generation_cost(spec, est_input_tokens, est_output_tokens)))
    eligible.sort(key=lambda item: (_ZONE_RANK[item[0].zone], item[0].tier, item[1], item[0].key))

    kept: list[Candidate] = []
    spent = 0.0
    for spec, cost in eligible:
        if spent + cost > budget.per_request_cap:
            reasons.append(f"{spec.key}: estimated cost {cost:.6f} (running {spent + cost:.6f}) exceeds the "
                           f"per-request cap {budget.per_request_cap:.6f}")
            continue
        if spent + cost > budget.daily_remaining:
            reasons.append(f"{spec.key}: estimated cost {cost:.6f} (running {spent + cost:.6f}) exceeds the "
                           f"daily budget left {budget.daily_remaining:.6f}")
            continue
        spent += cost
        kept.append(Candidate(tier=spec.tier, model_key=spec.key, zone=spec.zone, est_cost=cost, reasons=(
            f"tier {spec.tier} in range {low_tier}-{max_tier}",
            f"zone {spec.zone} permitted for {effective_classification}",
            f"estimated cost {cost:.6f} for {est_input_tokens}+{est_output_tokens} tokens")))

    budget_exceeded = None
    if not kept:
        if eligible:  # models exist for this request; cost alone ruled them all out
            cheapest = min(cost for _, cost in eligible)
            budget_exceeded = PER_REQUEST_CAP if cheapest > budget.per_request_cap else DAILY_BUDGET
            reasons.append(f"no affordable model for a {features.complexity} question: {budget_exceeded} exceeded")
        else:
            reasons.append(f"no approved, permitted model in tiers {low_tier}-{max_tier}: quoting (tier 0)")
    return RouteDecision(candidates=(*kept, QUOTE_CANDIDATE), risk=risk, human_review_required=human_review,
                         refused=False, refusal_reason=None, budget_exceeded=budget_exceeded,
                         reasons=tuple(reasons))
