"""`policyhub bench tiering`: what tiered routing costs and how well it answers, against the top tier for all.

The labelled gold queries (a stratified subset with `limit`) go through the real request path
(`QueryService.ask`) on a throw-away database and index holding the gold policies, with every
model of the policy file approved there. A policy-file model that needs an OpenAI-compatible
endpoint and has none configured gets a local `python -m llama_cpp.server` on the bundled GGUF,
started here and stopped at the end; when it cannot start, the report says that tier is
unavailable and why, and routing runs without it.

Cost is the policy file's prices x token counts (on-prem models carry their amortised price).
The counterfactual sends every request that was answered (by a model or a tier-0 quote) to the
top approved tier instead; refusals cost nothing either way and are left out of it. "Top" is
the top approved model the request's effective classification may reach
(`top_permitted_model`): the counterfactual is what a compliant system could have done, so a
confidential request is never sent to a cloud model even in the comparison, and a request no
model may see is served by the quote there too.

* measured (default): the same prompt the request path builds is sent once to that top
  model's generator (`run_escalation` with that tier, then the quote as fallback, the way a router
  that always chose the top tier would serve it). Its real token counts price the request,
  and its citations give the baseline's citation correctness, so "no loss of citation
  correctness" is a comparison of two measured numbers.
* estimated (always reported): where the top tier served the request, its real tokens; else
  input tokens = characters of the prompt the request path builds for the top tier / CHARS_PER_TOKEN (4, the
  same rule the OpenAI-compatible generator uses when an endpoint omits `usage`), output
  tokens = the median output of the top tier's real calls in this run (the answer cap when
  there were none). `estimate_check` compares the estimate with real top-tier prompt tokens.

Correctness: an answer's citations are right when one of them is a gold clause (exact
`(policy_id, version, clause)`, or the parent clause of a gold sub-item, "6.1" for "6.1.(a)",
because sub-items are embedded with their parent); verification is counted per model call (a
tier-0 quote is the clause text itself and is not verified); a must-refuse query is right
when refused for the expected reason, an answerable one when not refused.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sqlalchemy import select

from governance.approvals import Actor, register_generation_model, set_status
from governance.policy import GovernancePolicy, ModelSpec, load_policy
from governance.records.audit import AuditRecord
from governance.residency import zone_permitted
from services.bench.query import GOLD_DIR, percentiles
from services.benchmark.runner import GoldQuery, gold_dataset_version, load_gold_queries
from services.config import Settings
from services.db.session import make_engine, make_session_factory, transaction, upgrade
from services.errors import PolicyHubError
from services.generation.base import generation_cost, resolve_model_path
from services.generation.openai_compat import CHARS_PER_TOKEN
from services.generation.prompts import build_messages
from services.query.escalation import MAX_ANSWER_TOKENS
from services.query.schemas import AskCreate
from services.users.service import Principal

COST_REDUCTION_GOAL = 0.70  # issue 4: at least 70% below sending everything to the top approved tier
BENCH_ACTOR = Actor("bench-tiering", "model_risk", channel="bench")
WARM_UP_PROMPT = "Say OK."  # the one token each model is asked for before timing: no policy or request data
Progress = Callable[[int, int], None]  # (done, total)


# -- the workload ----------------------------------------------------------------------------


def stratified_subset(queries: Sequence[GoldQuery], limit: int | None) -> list[GoldQuery]:
    """`limit` queries, every category represented, each in proportion to its size (largest remainder).

    Within a category the picks are spread evenly over the file, so a subset is not all one
    policy; the subset keeps the file's order. No limit, or one past the total: all queries.
    """
    if limit is None or limit >= len(queries):
        return list(queries)
    by_category: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        by_category.setdefault(q.category, []).append(i)
    if limit < len(by_category):
        raise ValueError(f"limit {limit} is below the number of categories ({len(by_category)}); "
                         f"a stratified subset needs at least one query of each")
    spare = limit - len(by_category)
    exact = {c: spare * (len(ids) - 1) / (len(queries) - len(by_category)) for c, ids in by_category.items()}
    quota = {c: 1 + int(share) for c, share in exact.items()}
    for c in sorted(exact, key=lambda c: exact[c] - int(exact[c]), reverse=True)[:limit - sum(quota.values())]:
        quota[c] += 1
    picked = [ids[round(k * len(ids) / quota[c])] for c, ids in by_category.items() for k in range(quota[c])]
    return [queries[i] for i in sorted(picked)]


def top_permitted_model(routable: dict[str, ModelSpec], classification: str,
                        policy: GovernancePolicy) -> ModelSpec | None:
    """The top approved model (highest tier, then dearest) whose zone this classification may reach, if any."""
    permitted = [s for s in routable.values() if zone_permitted(s.zone, classification, policy)]
    return max(permitted, key=lambda s: (s.tier, s.price_in_per_1k + s.price_out_per_1k, s.key), default=None)


def citation_matches_gold(citation: tuple[str, str, str], gold: frozenset[tuple[str, str, str]]) -> bool:
    """Exact gold clause, or the parent clause of a gold sub-item ("6.1" cited for gold "6.1.(a)")."""
    policy_id, version, clause = citation
    return any((policy_id, version) == (g[0], g[1]) and (clause == g[2] or g[2].startswith(f"{clause}.("))
               for g in gold)


# -- the temporary world ---------------------------------------------------------------------


@contextmanager
def _tier_endpoints(policy: GovernancePolicy, configured: dict[str, str]) -> Iterator[tuple[dict, dict]]:
    """Endpoints for OpenAI-compatible models that have none: a local llama.cpp server each.

    Yields (endpoints by model key, availability by model key); servers stop on exit.
    """
    from services.generation.llama_server import LlamaServerError, running_llama_server

    local = next((m for m in policy.models if m.kind == "llama_cpp" and m.path), None)
    endpoints, availability = {}, {}
    with ExitStack() as stack:
        for spec in policy.models:
            if spec.kind != "openai":
                continue
            if configured.get(spec.key) or spec.base_url:
                availability[spec.key] = "configured endpoint"
                continue
            try:
                if local is None:
                    raise FileNotFoundError("the policy file lists no llama_cpp model whose GGUF could serve it")
                gguf = resolve_model_path(local.path)
                started = time.perf_counter()
                endpoints[spec.key] = stack.enter_context(running_llama_server(
                    gguf, model_alias=spec.api_model or spec.name, n_ctx=spec.context_tokens))
                availability[spec.key] = (
                    f"local `python -m llama_cpp.server` on {gguf.name} (the {local.key} weights: a stand-in "
                    f"for the real model, so its quality is tier 1's), ready in "
                    f"{time.perf_counter() - started:.1f} s")
            except (LlamaServerError, FileNotFoundError, OSError) as exc:
                availability[spec.key] = f"unavailable: {str(exc).strip()[-500:]}"
        yield endpoints, availability


def approve_generation_models(settings: Settings, policy: GovernancePolicy, only: set[str] | None = None) -> None:
    """Register and approve every generation model of the policy file (or those in `only`) in the throw-away database.

    The bench measures routing over the policy's full line-up; whether a model may be approved
    is the registry's question, answered in the real database, not here.
    """
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            for spec in policy.models:
                if only is not None and spec.key not in only:
                    continue
                path = resolve_model_path(spec.path) if spec.kind == "llama_cpp" else None
                model = register_generation_model(session, spec, path)
                note = {"note": "bench tiering: throw-away database, every policy-file model approved"}
                set_status(session, model, "benchmarked", BENCH_ACTOR, "model.benchmarked", note)
                set_status(session, model, "approved", BENCH_ACTOR, "model.approved", note)
    finally:
        engine.dispose()


# -- running one query -----------------------------------------------------------------------


def _attempts(session_factory, request_id: str) -> list[dict]:  # noqa: ANN001
    with session_factory() as session:
        record = session.scalars(select(AuditRecord).where(AuditRecord.request_id == request_id)).first()
    return json.loads(record.payload)["trace"].get("attempts", []) if record else []


def generation_clauses(query, principal: Principal, q: GoldQuery,  # noqa: ANN001
                       threshold: bool = True) -> tuple[str, list]:
    """The clauses the request path hands to generation: the same guard, embedder, versions, retriever, threshold.

    `threshold=False` keeps the clauses below the similarity threshold too (what a model would be
    shown if the threshold let the question through: a benchmark's not-in-policy probe).
    """
    from services.query.guards import check_input
    from services.query.retrieval import version_scope, visible_versions
    from services.query.service import to_retrieved

    question, _ = check_input(q.question, q.classification, query.policy)
    with query.session_factory() as session:
        versions = visible_versions(session, principal.clearance, query.policy, *version_scope(question, q.as_of))
    result = query.retriever.retrieve(question, query.embedder.embed([question])[0], versions)
    return question, to_retrieved([h for h in result.clauses if not threshold or h.dense_score >= query.threshold])


def _prompt_chars(messages: list[dict]) -> int:
    return sum(len(str(m.get("content", ""))) for m in messages)


def _run_top_tier(query, top: ModelSpec | None, question: str, clauses: list) -> dict:  # noqa: ANN001
    """Serve one request the way a router that always chose the top permitted model would: it, else the quote."""
    from services.query.escalation import run_escalation
    from services.query.router import single_model_decision

    decision = single_model_decision(top, "bench tiering: every request to the top approved tier it may reach")
    started = time.perf_counter()
    outcome = run_escalation(decision, question, clauses, query.generators, retry_budget=0)
    call = next((a for a in outcome.attempts if a.model_key is not None), None)
    return {"model": top.key if top else None, "cost": outcome.cost,
            "input_tokens": call.input_tokens if call else 0, "output_tokens": call.output_tokens if call else 0,
            "served_tier": outcome.tier, "outcome": call.outcome if call else "quote",
            "latency_ms": (time.perf_counter() - started) * 1000,
            "citations": [(c.policy_id, c.version, c.clause) for c in outcome.cited]}


# -- the benchmark ---------------------------------------------------------------------------


def bench_tiering(limit: int | None = None, *, measure_baseline: bool = True,
                  progress: Progress | None = None) -> dict:
    """Run the gold workload through tiered routing; report traffic, cost, correctness and latency per tier."""
    from services.runtime import build_runtime

    everything = load_gold_queries(GOLD_DIR)
    queries = stratified_subset(everything, limit)
    ambient = Settings(env="test")  # policy file and any deployed endpoints (POLICYHUB_OPENAI_ENDPOINTS)
    policy = load_policy(ambient.policy_file)
    with tempfile.TemporaryDirectory(prefix="policyhub-bench-") as tmp, \
            _tier_endpoints(policy, ambient.openai_endpoints) as (endpoints, availability):
        settings = Settings(env="test", data_dir=Path(tmp), openai_endpoints={**ambient.openai_endpoints, **endpoints})
        upgrade(settings.sqlalchemy_url)
        approve_generation_models(settings, policy)
        runtime = build_runtime(settings)
        try:
            runtime.ingestion.ingest_paths([GOLD_DIR / "policies"])
            query = runtime.query
            routable = {key: generator.spec for key, generator in query.generators.items()}
            if not routable:
                raise ValueError("no generation model is routable: nothing to compare tier 0 with")
            top = max(routable.values(), key=lambda s: (s.tier, s.price_in_per_1k + s.price_out_per_1k))
            principal = Principal(id=0, name="bench-tiering", role="staff",
                                  clearance=runtime.policy.classifications[-1])
            _warm_up(query, principal)
            rows = []
            for n, q in enumerate(queries, start=1):
                rows.append(_run_one(query, principal, q, routable, measure_baseline))
                if progress:
                    progress(n, len(queries))
        finally:
            runtime.close()
    return _report(queries, rows, policy, top, routable, availability, measure_baseline,
                   subset=len(queries) < len(everything))


def _warm_up(query, principal: Principal) -> None:  # noqa: ANN001
    """One request through the path and one token from each model, so no tier's first call is timed cold."""
    query.ask(principal, AskCreate(question="What is the maximum LTV for a home loan?"), channel="bench")
    for generator in query.generators.values():
        try:
            generator.generate([{"role": "user", "content": WARM_UP_PROMPT}], max_tokens=1)
        except Exception:  # noqa: BLE001 - a failing model shows up, counted, in the run itself
            pass


def _run_one(query, principal: Principal, q: GoldQuery, routable: dict[str, ModelSpec],  # noqa: ANN001
             measure_baseline: bool) -> dict:
    request_id = f"tiering-{uuid.uuid4().hex[:12]}-{q.id}"
    row = {"query": q, "error": None}
    started = time.perf_counter()
    try:
        answer = query.ask(principal, AskCreate(question=q.question, classification=q.classification, as_of=q.as_of),
                           channel="bench", request_id=request_id)
    except PolicyHubError as exc:  # counted as its own bucket: neither an answer nor a refusal
        row |= {"error": f"{exc.error}: {exc.detail}", "latency_ms": (time.perf_counter() - started) * 1000,
                "tier": None, "cost": 0.0, "attempts": []}
        return row
    row |= {"latency_ms": (time.perf_counter() - started) * 1000, "tier": answer.tier, "cost": answer.cost,
            "classification": answer.effective_classification, "refused": answer.refused, "refusal_reason": answer.refusal_reason,
            "citations": [(c.policy_id, c.version, c.clause) for c in answer.citations],
            "attempts": _attempts(query.session_factory, request_id)}
    if answer.refused:
        return row
    question, clauses = generation_clauses(query, principal, q)
    sent = [(a["tier"], a["prompt"]) for a in row["attempts"] if a.get("prompt")]
    top = top_permitted_model(routable, answer.effective_classification, query.policy)
    row["baseline_model"] = top.key if top else None
    row["prompt_chars"] = _prompt_chars(build_messages(question, clauses, top.tier if top else None))
    row["prompt_rebuilt_exactly"] = (all(p == build_messages(question, clauses, tier) for tier, p in sent)
                                     if sent else None)
    if measure_baseline:
        row["baseline"] = _run_top_tier(query, top, question, clauses)
    return row


def _report(queries: list[GoldQuery], rows: list[dict], policy: GovernancePolicy, top: ModelSpec,
            routable: dict[str, ModelSpec], availability: dict[str, str], measured: bool, subset: bool) -> dict:
    total = len(rows)
    answered = [r for r in rows if r["error"] is None and not r["refused"]]
    tiers = sorted({r["tier"] for r in rows if r["error"] is None})
    buckets = {str(t): [r for r in rows if r["error"] is None and r["tier"] == t] for t in tiers}
    if any(r["error"] for r in rows):
        buckets["error"] = [r for r in rows if r["error"]]

    baseline_keys = {r["baseline_model"] for r in answered} - {None}
    top_calls = [a for r in rows for a in r["attempts"]
                 if a["model_key"] in baseline_keys and a["outcome"] not in ("skipped", "error", "timeout")]
    typical_output = statistics.median(a["output_tokens"] for a in top_calls) if top_calls else MAX_ANSWER_TOKENS
    estimated = 0.0
    for r in answered:
        if r["baseline_model"] is None:  # no model may see it: the quote, free
            continue
        call = next((a for a in r["attempts"] if a["model_key"] == r["baseline_model"] and a["input_tokens"]), None)
        tokens = ((call["input_tokens"], call["output_tokens"]) if call
                  else (r["prompt_chars"] // CHARS_PER_TOKEN + 1, typical_output))
        estimated += generation_cost(routable[r["baseline_model"]], *tokens)
    actual = sum(r["cost"] for r in rows)
    counterfactual = sum(r["baseline"]["cost"] for r in answered) if measured else estimated

    return {
        "dataset": {"gold_version": gold_dataset_version(GOLD_DIR), "requests": total,
                    "subset": "stratified by category" if subset else "all",
                    "by_category": dict(Counter(q.category for q in queries))},
        "models": {spec.key: {"tier": spec.tier, "zone": spec.zone, "kind": spec.kind,
                              "price_in_per_1k": spec.price_in_per_1k, "price_out_per_1k": spec.price_out_per_1k,
                              "routable": spec.key in routable,
                              "endpoint": availability.get(spec.key, "in-process llama-cpp-python")}
                   for spec in policy.models},
        "top_approved_tier": {"tier": top.tier, "model": top.key,
                              "baseline_requests_by_model": dict(Counter(
                                  r["baseline_model"] or "none permitted: quote" for r in answered))},
        "traffic": {name: {"requests": len(rs), "share": round(len(rs) / total, 4),
                           "refused": sum(bool(r.get("refused")) for r in rs)} for name, rs in buckets.items()},
        "cost": {
            "total": round(actual, 8), "per_request": round(actual / total, 8),
            "by_tier": {name: round(sum(r["cost"] for r in rs), 8) for name, rs in buckets.items()},
            "counterfactual_all_top_tier": {
                "basis": ("measured: each answered request sent to the top approved model its classification "
                          "may reach" if measured else "estimated"),
                "requests": len(answered), "total": round(counterfactual, 8),
                "per_request": round(counterfactual / total, 8),
                "estimated_total": round(estimated, 8)},
            "reduction": round(1 - actual / counterfactual, 4) if counterfactual else None,
            "goal": COST_REDUCTION_GOAL,
            "goal_met": bool(counterfactual) and 1 - actual / counterfactual >= COST_REDUCTION_GOAL,
        },
        "label_routing": label_routing_ceiling(answered, routable, counterfactual, policy) if measured else None,
        "estimate_check": _estimate_check(answered, typical_output),
        "correctness": _correctness(rows, buckets, answered, measured),
        "latency_ms": {name: percentiles([r["latency_ms"] for r in rs]) for name, rs in buckets.items()},
        "model_calls": _model_calls(rows),
        "routing_confusion": dict(sorted(Counter(
            f"{r['query'].expected_tier}->{r['tier']}" for r in answered if r["query"].expected_tier is not None
        ).items())),
        "errors": [{"query": r["query"].id, "error": r["error"]} for r in rows if r["error"]],
    }


def label_routing_ceiling(answered: list[dict], routable: dict[str, ModelSpec], counterfactual: float,
                          policy: GovernancePolicy) -> dict:
    """The cost reduction a router that knew each question's gold expected tier would reach.

    It bounds what better complexity classification can buy with this workload and model line-up:
    a request the gold set expects at tier 0 costs nothing, and so does one that must be refused;
    one expected at tier n >= 1 pays the cheapest routable model of tier n (or of the next tier
    up that has one) among those its effective classification may reach, on the tokens the
    baseline's measured call used; a request no model may see is quoted, free. The small model's
    prompt is shorter than the top tier's, so tier-1 requests are priced high and the ceiling is,
    if anything, low.
    """
    total, by_tier = 0.0, Counter()
    for r in answered:
        expected = r["query"].expected_tier
        if r["query"].expected_refusal or not expected:
            by_tier["refused" if r["query"].expected_refusal else "0"] += 1
            continue
        cheapest: dict[int, ModelSpec] = {}
        for spec in sorted(routable.values(), key=lambda s: (s.price_in_per_1k + s.price_out_per_1k, s.key)):
            if zone_permitted(spec.zone, r["classification"], policy):
                cheapest.setdefault(spec.tier, spec)
        if not cheapest:
            by_tier["0"] += 1
            continue
        tier = min((t for t in cheapest if t >= expected), default=None)
        if tier is None:  # nothing at or above the expected tier: the baseline's own measured cost
            tier, cost = max(cheapest), r["baseline"]["cost"]
        else:
            cost = generation_cost(cheapest[tier], r["baseline"]["input_tokens"], r["baseline"]["output_tokens"])
        by_tier[str(tier)] += 1
        total += cost
    return {"requests_by_expected_tier": dict(sorted(by_tier.items())), "total": round(total, 8),
            "reduction": round(1 - total / counterfactual, 4) if counterfactual else None,
            "basis": "each answered request at its gold expected tier, priced on the baseline's measured tokens"}


def _estimate_check(answered: list[dict], typical_output: float) -> dict:
    """How the chars/4 prompt estimate compares with the top permitted model's real prompt token counts."""
    pairs = [(r["prompt_chars"] // CHARS_PER_TOKEN + 1, a["input_tokens"]) for r in answered for a in r["attempts"]
             if a["model_key"] == r["baseline_model"] and a["input_tokens"]]
    pairs += [(r["prompt_chars"] // CHARS_PER_TOKEN + 1, r["baseline"]["input_tokens"]) for r in answered
              if "baseline" in r and r["baseline"]["input_tokens"]]
    return {"chars_per_token": CHARS_PER_TOKEN, "typical_output_tokens": typical_output,
            "real_prompt_tokens_over_estimate": round(sum(real for _, real in pairs) / sum(e for e, _ in pairs), 3)
            if pairs else None, "calls_compared": len(pairs),
            "prompts_rebuilt_exactly": sum(r["prompt_rebuilt_exactly"] is True for r in answered),
            "prompts_rebuilt_differently": sum(r["prompt_rebuilt_exactly"] is False for r in answered)}


def _citation_accuracy(rows: list[dict], key: str = "citations") -> dict:
    graded = [r for r in rows if r["query"].gold]
    right = sum(any(citation_matches_gold(c, r["query"].gold) for c in r[key]) for r in graded)
    return {"graded": len(graded), "right": right, "accuracy": round(right / len(graded), 4) if graded else None}


def _correctness(rows: list[dict], buckets: dict[str, list[dict]], answered: list[dict], measured: bool) -> dict:
    per_tier = {}
    for name, rs in buckets.items():
        if name == "error":
            continue
        served = [r for r in rs if not r["refused"]]
        calls = [a for r in rows for a in r["attempts"] if str(a["tier"]) == name and a.get("verification")]
        per_tier[name] = {
            "answered": len(served), "citations": _citation_accuracy(served),
            "verification": ({"model_calls": len(calls), "passed": sum(a["verification"]["passed"] for a in calls)}
                             if name != "0" else "not applicable: a quote is the clause text itself"),
        }
    must = [r for r in rows if r["error"] is None and r["query"].expected_refusal]
    may_not = [r for r in rows if r["error"] is None and not r["query"].expected_refusal]
    result = {
        "per_tier": per_tier,
        "all_answered": _citation_accuracy(answered),
        "refusals": {
            "must_refuse": len(must),
            "refused_for_expected_reason": sum(r["refused"] and (r["refusal_reason"] or "").startswith(
                r["query"].expected_refusal) for r in must),
            "answerable": len(may_not),
            "false_refusals": sum(bool(r["refused"]) for r in may_not)},
    }
    if measured:
        baseline = _citation_accuracy([{**r, "baseline_citations": r["baseline"]["citations"]} for r in answered],
                                      key="baseline_citations")
        result["all_top_tier_baseline"] = baseline | {
            "served_by_top_tier": sum(r["baseline"]["served_tier"] != 0 for r in answered),
            "fell_back_to_quote": sum(r["baseline"]["served_tier"] == 0 for r in answered)}
        result["citation_loss_vs_baseline"] = (
            round(baseline["accuracy"] - result["all_answered"]["accuracy"], 4)
            if baseline["accuracy"] is not None and result["all_answered"]["accuracy"] is not None else None)
    return result


def _model_calls(rows: list[dict]) -> dict:
    """Every model call the routed requests made, by tier and outcome (escalations included)."""
    calls: dict[str, Counter] = {}
    for r in rows:
        for a in r["attempts"]:
            if a["model_key"] is not None:
                calls.setdefault(str(a["tier"]), Counter())[a["outcome"]] += 1
    return {tier: dict(c) for tier, c in sorted(calls.items())}
