"""`policyhub bench tier1` and `policyhub bench router`: the two speed goals of model tiering.

Tier 1 (issue 4: answer p95 <= 2 s on a 1,000-clause corpus): a throw-away world holds the gold
policies plus as many ObliQA documents as it takes to reach `min_clauses`, and the policy
file's tier-1 model is approved there. Each answerable gold question (a stratified subset with
`limit`) goes through the request path's own retrieval (guard, embedder, visible versions,
retriever, threshold) and then the escalation with the tier-1 model as the only model
candidate, so the prompt, grammar, answer budget and verification are exactly the ones a routed
request gets. Every question gets a tier-1 answer here, not only those the router would send to
tier 1: a conservative workload, since lookups would never reach a model.

Reported: generation wall time (the model call), answer time (retrieval + generation +
verification), CPU seconds of the process per answer (on a shared host wall time partly
measures the neighbours), prompt and answer tokens, outcomes, and how many served answers cite
a gold clause. The load average is reported beside them.

Router (decision p99 <= 1 ms): `decide` on the policy file's models, all approved, over every
complexity, three classifications and SLA / no SLA.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from governance.policy import GovernancePolicy, load_policy
from services.bench.obliqa import find_obliqa_dir, ingest_overrides, load_documents
from services.bench.query import GOLD_DIR, percentiles
from services.bench.tiering import (approve_generation_models, citation_matches_gold, generation_clauses,
                                    stratified_subset)
from services.benchmark.runner import load_gold_queries
from services.config import Settings
from services.db.session import upgrade
from services.users.service import Principal

TIER1_P95_GOAL_MS = 2000.0
ROUTER_P99_GOAL_MS = 1.0
Progress = Callable[[str, int, int], None]  # (stage, done, total)


def bench_router(n: int = 20_000, policy: GovernancePolicy | None = None) -> dict:
    """p50/p99 of one routing decision over the policy file's models (all approved)."""
    from services.query.complexity import COMPLEXITY_LABELS, QuestionFeatures
    from services.query.router import Budget, decide

    policy = policy or load_policy(Settings(env="test").policy_file)
    models = [(spec, True) for spec in policy.models]
    budget = Budget(per_request_cap=policy.routing.per_request_cost_cap,
                    daily_remaining=policy.routing.daily_budget_per_user)
    features = [QuestionFeatures(complexity=c, confidence=confidence, n_policies_mentioned=1,
                                 mentions_versions=False, length_words=9, top_score_gap=0.05)
                for c in COMPLEXITY_LABELS for confidence in (0.9, 0.35)]
    classes = policy.classifications
    slas = (None, 500, policy.routing.async_sla_min_ms)
    timings = []
    for i in range(n):
        started = time.perf_counter()
        decide(features[i % len(features)], classes[i % len(classes)], "normal", slas[i % len(slas)], budget,
               models, policy)
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    p99 = timings[min(n - 1, round(0.99 * n) - 1)]
    return {"decisions": n, "models": len(models), "p50_us": round(statistics.median(timings) * 1000, 1),
            "p99_us": round(p99 * 1000, 1), "max_us": round(timings[-1] * 1000, 1),
            "goal_p99_us": ROUTER_P99_GOAL_MS * 1000, "goal_met": p99 <= ROUTER_P99_GOAL_MS}


def _ingest_corpus(runtime, min_clauses: int, progress: Progress | None) -> dict:  # noqa: ANN001
    """The gold policies, then ObliQA documents in order until the corpus holds `min_clauses`."""
    summary = runtime.ingestion.ingest_paths([GOLD_DIR / "policies"])
    clauses, documents, sources = summary.clauses, len(summary.published), ["gold policies"]
    if clauses < min_clauses:
        root = find_obliqa_dir()
        if not (root / "documents.json").exists():
            raise FileNotFoundError(f"the gold policies hold {clauses} clauses and the ObliQA documents needed "
                                    f"to reach {min_clauses} are not at {root} (set POLICYHUB_OBLIQA_DIR)")
        for doc in load_documents(root):
            if clauses >= min_clauses:
                break
            result = runtime.ingestion.ingest_bytes(doc.path.name, doc.path.read_bytes(), ingest_overrides(doc))
            clauses += result.clauses
            documents += 1
            sources.append(f"ObliQA {doc.path.name}")
            if progress:
                progress("corpus", min(clauses, min_clauses), min_clauses)
    return {"documents": documents, "clauses": clauses, "sources": sources}


def bench_tier1(limit: int | None = 40, min_clauses: int = 1000, progress: Progress | None = None) -> dict:
    """Tier-1 answers on a corpus of at least `min_clauses` clauses (see the module docstring)."""
    from services.query.escalation import SERVED, run_escalation
    from services.query.router import QUOTE_CANDIDATE, Candidate, RouteDecision
    from services.runtime import build_runtime

    ambient = Settings(env="test")
    policy = load_policy(ambient.policy_file)
    tier1 = next((s for s in policy.models if s.tier == 1 and s.kind == "llama_cpp"), None)
    if tier1 is None:
        raise ValueError("the policy file has no tier-1 llama_cpp model to benchmark")
    queries = stratified_subset([q for q in load_gold_queries(GOLD_DIR) if not q.expected_refusal], limit)
    candidate = Candidate(tier=1, model_key=tier1.key, zone=tier1.zone, est_cost=0.0,
                          reasons=("bench tier1: the tier-1 model for every question",))
    decision = RouteDecision(candidates=(candidate, QUOTE_CANDIDATE), risk="normal", human_review_required=False,
                             refused=False, refusal_reason=None, budget_exceeded=None, reasons=())
    with tempfile.TemporaryDirectory(prefix="policyhub-bench-") as tmp:
        settings = Settings(env="test", data_dir=Path(tmp))
        upgrade(settings.sqlalchemy_url)
        approve_generation_models(settings, policy, only={tier1.key})
        runtime = build_runtime(settings)
        try:
            corpus = _ingest_corpus(runtime, min_clauses, progress)
            query = runtime.query
            principal = Principal(id=0, name="bench-tier1", role="staff", clearance=policy.classifications[-1])
            warm_question, warm_clauses = generation_clauses(query, principal, queries[0])
            run_escalation(decision, warm_question, warm_clauses, query.generators, retry_budget=0)
            load_before = os.getloadavg()[0]
            rows = []
            for n, q in enumerate(queries, start=1):
                started, cpu_started = time.perf_counter(), time.process_time()
                question, clauses = generation_clauses(query, principal, q)
                if not clauses:
                    rows.append({"query": q, "below_threshold": True})
                    continue
                outcome = run_escalation(decision, question, clauses, query.generators, retry_budget=0)
                call = outcome.attempts[0]
                rows.append({"query": q, "below_threshold": False, "generation_ms": call.latency_ms,
                             "answer_ms": (time.perf_counter() - started) * 1000,
                             "cpu_s": time.process_time() - cpu_started, "outcome": call.outcome,
                             "input_tokens": call.input_tokens, "output_tokens": call.output_tokens,
                             "gold_cited": call.outcome == SERVED and any(
                                 citation_matches_gold((c.policy_id, c.version, c.clause), q.gold)
                                 for c in outcome.cited)})
                if progress:
                    progress("questions", n, len(queries))
            load_after = os.getloadavg()[0]
            environment = query.generators[tier1.key].environment()
        finally:
            runtime.close()
    return {**_report(tier1.key, corpus, rows, load_before, load_after), "environment": environment}


def _report(model_key: str, corpus: dict, rows: list[dict], load_before: float, load_after: float) -> dict:
    answered = [r for r in rows if not r["below_threshold"]]
    if not answered:
        raise ValueError("no question retrieved a clause above the threshold: nothing reached tier 1")
    generation = percentiles([r["generation_ms"] for r in answered])
    answer = percentiles([r["answer_ms"] for r in answered])
    cpu = sorted(r["cpu_s"] for r in answered)
    outcomes = Counter(r["outcome"] for r in answered)
    return {
        "model": model_key,
        "corpus": corpus,
        "questions": {"asked": len(rows), "below_threshold": len(rows) - len(answered), "answered": len(answered)},
        "generation_ms": generation,
        "answer_ms": answer,
        "cpu_seconds_per_answer": {"p50": round(statistics.median(cpu), 3),
                                   "p95": round(cpu[min(len(cpu) - 1, max(0, round(0.95 * len(cpu)) - 1))], 3)},
        "tokens": {"prompt_min": min(r["input_tokens"] for r in answered),
                   "prompt_median": statistics.median(r["input_tokens"] for r in answered),
                   "prompt_max": max(r["input_tokens"] for r in answered),
                   "answer_median": statistics.median(r["output_tokens"] for r in answered),
                   "answer_max": max(r["output_tokens"] for r in answered)},
        "outcomes": dict(outcomes),
        "served_with_gold_citation": sum(r["gold_cited"] for r in answered),
        "load_average": {"before": round(load_before, 2), "after": round(load_after, 2), "cores": os.cpu_count()},
        "goal_p95_ms": TIER1_P95_GOAL_MS,
        "goal_met": answer["p95_ms"] <= TIER1_P95_GOAL_MS,
    }
