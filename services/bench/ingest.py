"""`policyhub bench ingest`: pipeline throughput on the 40 ObliQA documents against raw encode."""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from pathlib import Path

from services.bench.obliqa import DEFAULT_OBLIQA_DIR, ingest_overrides, load_documents
from services.config import Settings
from services.db.session import upgrade


def bench_ingest(root: Path = DEFAULT_OBLIQA_DIR, limit: int | None = None, batch_size: int = 64) -> dict:
    from services.ingestion.service import IngestionService
    from services.runtime import build_runtime

    docs = load_documents(root)[:limit]
    with tempfile.TemporaryDirectory(prefix="policyhub-bench-") as tmp:
        settings = Settings(env="test", data_dir=Path(tmp), embedding_batch_size=batch_size)
        upgrade(settings.sqlalchemy_url)
        runtime = build_runtime(settings)
        service: IngestionService = runtime.ingestion
        embedder = runtime.embedder
        embedder.embed(["warm up the model and its thread pool"] * 8)

        from services.ingestion.service import _embedding_text

        # Each document is ingested, and its texts encoded raw, back to back, alternating which
        # goes first: on a shared machine both sides then see the same background load.
        clauses = chunks = n_texts = 0
        pipeline_s = raw_s = 0.0
        per_document: list[float] = []
        for n, doc in enumerate(docs):
            data = doc.path.read_bytes()
            prepared = service.prepare(doc.path.name, data, ingest_overrides(doc))
            by_number = {c.number: c.text for chunk in prepared.chunks for c in chunk.clauses}
            texts = [w for chunk in prepared.chunks for clause in chunk.clauses
                     for w in embedder.windows(_embedding_text(clause, by_number))]

            def ingest(doc=doc, data=data) -> float:  # noqa: ANN001
                nonlocal clauses, chunks
                t0 = time.perf_counter()
                result = service.ingest_bytes(doc.path.name, data, ingest_overrides(doc))
                clauses += result.clauses
                chunks += result.chunks
                return time.perf_counter() - t0

            def encode(texts=texts) -> float:  # noqa: ANN001
                t0 = time.perf_counter()
                embedder.model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                      show_progress_bar=False)
                return time.perf_counter() - t0

            if n % 2:
                raw, pipe = encode(), ingest()
            else:
                pipe, raw = ingest(), encode()
            pipeline_s += pipe
            raw_s += raw
            n_texts += len(texts)
            per_document.append(raw / pipe)
        runtime.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "documents": len(docs), "clauses": clauses, "chunks": chunks, "embedded_texts": n_texts,
        "pipeline_seconds": round(pipeline_s, 2), "raw_encode_seconds": round(raw_s, 2),
        "clauses_per_s": round(clauses / pipeline_s, 1), "chunks_per_s": round(chunks / pipeline_s, 2),
        "throughput_ratio_vs_raw_encode": round(raw_s / pipeline_s, 3),
        "median_document_ratio": round(statistics.median(per_document), 3) if per_document else None,
        "peak_rss_mb": round(peak_mb),
    }
