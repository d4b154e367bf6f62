"""`policyhub bench ingest`: pipeline throughput on the 40 ObliQA documents against raw encode."""

from __future__ import annotations

import resource
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

        started = time.perf_counter()
        clauses = chunks = 0
        for doc in docs:
            result = service.ingest_bytes(doc.path.name, doc.path.read_bytes(), ingest_overrides(doc))
            clauses += result.clauses
            chunks += result.chunks
        pipeline_s = time.perf_counter() - started

        # The same texts the pipeline embedded, encoded raw in the same process.
        from services.ingestion.service import _embedding_text

        texts: list[str] = []
        for doc in docs:
            prepared = service.prepare(doc.path.name, doc.path.read_bytes(), ingest_overrides(doc))
            by_number = {c.number: c.text for chunk in prepared.chunks for c in chunk.clauses}
            for chunk in prepared.chunks:
                for clause in chunk.clauses:
                    texts += embedder.windows(_embedding_text(clause, by_number))
        started = time.perf_counter()
        embedder.model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                              show_progress_bar=False)
        raw_s = time.perf_counter() - started
        runtime.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "documents": len(docs), "clauses": clauses, "chunks": chunks, "embedded_texts": len(texts),
        "pipeline_seconds": round(pipeline_s, 2), "raw_encode_seconds": round(raw_s, 2),
        "clauses_per_s": round(clauses / pipeline_s, 1), "chunks_per_s": round(chunks / pipeline_s, 2),
        "throughput_ratio_vs_raw_encode": round(raw_s / pipeline_s, 3), "peak_rss_mb": round(peak_mb),
    }
