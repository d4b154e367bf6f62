"""Retrieval latency micro-benchmark for any VectorIndex (wired to `policyhub bench`).

Synthetic but shaped like policyhub's data: every point is a chunk with 2-6
dense rows near one of many topic centroids (real embeddings cluster; uniform
random vectors would be an unrealistically hard case for HNSW), Zipf-distributed
BM25 terms, and a version id out of ``n_versions``. Queries restrict to
``filter_versions`` of them, as retrieval does with the versions in force.

Besides latency it reports dense recall@10 against an exact MaxSim computed
with numpy, so a fast-but-wrong index configuration shows up.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import numpy as np

from services.vectors.base import IndexPoint, VectorIndex
from services.vectors.sparse import encode_document, encode_query

_VOCABULARY = 30_000
_ZIPF_EXPONENT = 1.1


def bench_search(
    index: VectorIndex,
    n_points: int,
    dim: int = 384,
    queries: int = 200,
    *,
    collection: str = "bench",
    n_versions: int = 50,
    filter_versions: int = 40,
    batch_size: int = 1_000,
    limit: int = 10,
    seed: int = 0,
    keep: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Fill ``collection`` with ``n_points`` synthetic chunks, then time filtered dense and sparse searches.

    Returns timings in milliseconds (p50/p95/max per search kind), fill time
    and dense recall@``limit``. The collection is dropped afterwards unless ``keep``.
    """
    rng = np.random.default_rng(seed)
    index.drop_collection(collection)
    index.ensure_collection(collection, dim)

    n_topics = max(8, n_points // 50)
    centroids = _unit_rows(rng.standard_normal((n_topics, dim), dtype=np.float32))
    rows_per_point = rng.integers(2, 7, size=n_points)
    owner = np.repeat(np.arange(n_points), rows_per_point)
    topic_of_point = rng.integers(0, n_topics, size=n_points)
    # rows of one chunk share a topic, with their own noise (different clauses)
    noise = rng.standard_normal((len(owner), dim), dtype=np.float32) / np.sqrt(dim)  # norm ~1
    all_rows = _unit_rows(centroids[topic_of_point[owner]] + noise)  # cos ~0.7 to the topic
    row_start = np.concatenate([[0], np.cumsum(rows_per_point)[:-1]])
    version_of_point = rng.integers(1, n_versions + 1, size=n_points)
    texts = [_synthetic_text(rng) for _ in range(n_points)]
    ids = [str(uuid.uuid4()) for _ in range(n_points)]

    started = time.perf_counter()
    for begin in range(0, n_points, batch_size):
        end = min(begin + batch_size, n_points)
        batch = [
            IndexPoint(
                id=ids[i],
                dense=all_rows[row_start[i] : row_start[i] + rows_per_point[i]].tolist(),
                sparse=encode_document(texts[i]),
                payload={"version_id": int(version_of_point[i]), "classification": "internal", "n": i},
            )
            for i in range(begin, end)
        ]
        index.upsert(collection, batch)
        if progress is not None:
            progress(end)
    fill_seconds = time.perf_counter() - started
    started = time.perf_counter()
    index.optimize(collection)
    optimize_seconds = time.perf_counter() - started

    in_force = sorted(int(v) for v in rng.choice(np.arange(1, n_versions + 1), size=filter_versions, replace=False))
    allowed = np.isin(version_of_point, in_force)

    dense_queries = []
    for _ in range(queries):
        row = all_rows[rng.integers(0, len(all_rows))]
        # a paraphrase of one clause: cos ~0.9 to it
        jitter = 0.5 * rng.standard_normal(dim, dtype=np.float32) / np.sqrt(dim)
        dense_queries.append(_unit_rows((row + jitter)[None])[0])
    # four terms of one chunk, as a keyword question would name them
    sparse_queries = [
        encode_query(" ".join(rng.choice(texts[int(i)].split(), size=4))) for i in rng.integers(0, n_points, queries)
    ]

    # warm caches (first queries page in mmapped data) before timing
    for q in dense_queries[:5]:
        index.search_dense(collection, q.tolist(), limit, version_ids=in_force)
    for sq in sparse_queries[:5]:
        index.search_sparse(collection, sq, limit, version_ids=in_force)

    dense_ms, hits_per_query = [], []
    for q in dense_queries:
        t0 = time.perf_counter()
        hits = index.search_dense(collection, q.tolist(), limit, version_ids=in_force)
        dense_ms.append((time.perf_counter() - t0) * 1000)
        hits_per_query.append([h.payload["n"] for h in hits])
    sparse_ms = []
    for sq in sparse_queries:
        t0 = time.perf_counter()
        index.search_sparse(collection, sq, limit, version_ids=in_force)
        sparse_ms.append((time.perf_counter() - t0) * 1000)

    recall = _dense_recall(all_rows, row_start, allowed, dense_queries, hits_per_query, limit)
    if not keep:
        index.drop_collection(collection)
    return {
        "backend": type(index).__name__,
        "n_points": n_points,
        "dense_rows": int(len(all_rows)),
        "dim": dim,
        "queries": queries,
        "filter_versions": f"{filter_versions} of {n_versions}",
        "fill_seconds": round(fill_seconds, 2),
        "optimize_seconds": round(optimize_seconds, 2),
        "dense_ms": _percentiles(dense_ms),
        "sparse_ms": _percentiles(sparse_ms),
        f"dense_recall_at_{limit}": round(recall, 4),
    }


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _synthetic_text(rng: np.random.Generator) -> str:
    length = int(rng.integers(40, 200))
    terms = np.minimum(rng.zipf(_ZIPF_EXPONENT, size=length), _VOCABULARY)
    return " ".join(f"t{t}" for t in terms)


def _percentiles(samples_ms: list[float]) -> dict:
    values = np.asarray(samples_ms)
    return {
        "p50": round(float(np.percentile(values, 50)), 3),
        "p95": round(float(np.percentile(values, 95)), 3),
        "max": round(float(values.max()), 3),
    }


def _dense_recall(
    all_rows: np.ndarray,
    row_start: np.ndarray,
    allowed: np.ndarray,
    queries: list[np.ndarray],
    returned: list[list[int]],
    limit: int,
) -> float:
    """Share of the exact filtered MaxSim top-k that the index returned."""
    found = total = 0
    for q, got in zip(queries, returned, strict=True):
        point_scores = np.maximum.reduceat(all_rows @ q, row_start)
        point_scores[~allowed] = -np.inf
        k = min(limit, int(allowed.sum()))
        exact = np.argpartition(-point_scores, k - 1)[:k]
        found += len(set(exact.tolist()) & set(got))
        total += k
    return found / total if total else 1.0
