"""`policyhub bench query`: Tier-0 end to end, retrieval alone at 1k and 100k chunks, the guard chain."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from services.config import Settings
from services.db.session import upgrade

GOLD_DIR = Path(__file__).resolve().parents[2] / "gold_dataset"


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered), 2), "p95_ms": round(p95, 2),
            "max_ms": round(ordered[-1], 2)}


def gold_questions() -> list[str]:
    lines = (GOLD_DIR / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()]


def bench_query(big_chunks: int = 100_000, rounds: int = 2) -> dict:
    """All figures warm (each question asked once before timing), on this machine."""
    from services.query.guards import bench_guards
    from services.query.retrieval import visible_versions
    from services.query.schemas import AskCreate
    from services.runtime import build_runtime
    from services.users.service import Principal
    from services.vectors.bench import bench_search

    questions = gold_questions()
    with tempfile.TemporaryDirectory(prefix="policyhub-bench-") as tmp:
        settings = Settings(env="test", data_dir=Path(tmp))
        upgrade(settings.sqlalchemy_url)
        runtime = build_runtime(settings)
        summary = runtime.ingestion.ingest_paths([GOLD_DIR / "policies"])
        query = runtime.query
        principal = Principal(id=0, name="bench", role="staff", clearance=runtime.policy.classifications[-1])

        for q in questions:  # warm caches, thread pools and the allocator
            query.ask(principal, AskCreate(question=q), channel="bench")
        end_to_end, tiers = [], {}
        for _ in range(rounds):
            for q in questions:
                started = time.perf_counter()
                answer = query.ask(principal, AskCreate(question=q), channel="bench")
                end_to_end.append((time.perf_counter() - started) * 1000)
                tiers[answer.tier] = tiers.get(answer.tier, 0) + 1

        vectors = runtime.embedder.embed(questions)
        with runtime.session_factory() as session:
            versions = visible_versions(session, principal.clearance, runtime.policy)
        retrieval = []
        for _ in range(rounds):
            for q, v in zip(questions, vectors, strict=True):
                started = time.perf_counter()
                query.retriever.retrieve(q, v, versions)
                retrieval.append((time.perf_counter() - started) * 1000)
        embed_ms = []
        for q in questions[:100]:
            started = time.perf_counter()
            runtime.embedder.embed([q])
            embed_ms.append((time.perf_counter() - started) * 1000)
        guards = bench_guards(questions, np.asarray(vectors), runtime.policy, query.prohibited, query.pii)
        big = bench_search(runtime.index, big_chunks, dim=runtime.embedder.dimension, queries=200,
                           collection="bench_big") if big_chunks else None
        runtime.close()
    return {
        "corpus": {"documents": len(summary.published), "clauses": summary.clauses, "chunks": summary.chunks},
        "tier0_end_to_end": percentiles(end_to_end) | {"tiers": tiers},
        "question_embedding": percentiles(embed_ms),
        "retrieval_gold_corpus": percentiles(retrieval),
        "guard_chain": guards,
        f"index_search_{big_chunks}_chunks": big,
    }
