"""`policyhub bench faq`: what the FAQ check adds to every request, with no FAQs and with many.

Per request the query service reads one row by primary key (has the set of approved FAQs
changed?) inside the read transaction it opens anyway, then one matrix-vector product over
every phrasing's embedding. Both are timed here on a fresh SQLite database holding N approved
FAQs of `phrasings` phrasings each, with unit vectors of the embedding model's dimension.
Reloading after a change is timed too, without the embedding model: a real reload embeds
only the entries it has not seen (the model's cost per phrasing is that of a question).
"""

from __future__ import annotations

import tempfile
import time
from datetime import date

import numpy as np

from services.bench.query import percentiles
from services.db.session import make_engine, make_session_factory, transaction, upgrade


def _seed(factory, size: int, phrasings: int) -> None:  # noqa: ANN001
    from governance.records.base import utcnow
    from services.db.models import Clause, Document, DocumentVersion, FaqEntry

    with transaction(factory) as session:
        if session.get(Document, "BENCH") is None:
            session.add(Document(policy_id="BENCH"))
            session.flush()
            version = DocumentVersion(policy_id="BENCH", version="1", title="Bench Policy", owner="bench",
                                      classification="internal", effective_date=date(2025, 1, 1),
                                      content_sha256="0" * 64, source_name="bench.md", index_name="bench",
                                      status="active")
            session.add(version)
            session.flush()
            session.add(Clause(version_id=version.id, ordinal=1, number="1.1", heading_path=[],
                               text="Claims are paid within 30 days.", chunk_id="bench"))
        have = session.query(FaqEntry).count()
        session.add_all(FaqEntry(questions=[f"question {i} phrasing {j}" for j in range(phrasings)],
                                 answer="Claims are paid within 30 days.",
                                 clauses=[{"policy_id": "BENCH", "version": "1", "clause": "1.1"}],
                                 status="approved", author="bench-admin", approver="bench-compliance",
                                 created_at=utcnow(), approved_at=utcnow()) for i in range(have, size))


def bench_faq(sizes: tuple[int, ...] = (0, 1000), phrasings: int = 3, n: int = 2000, dimension: int = 384) -> dict:
    from governance.policy import load_policy
    from services.faq.matching import rank_faqs, unservable_reason, verify_faq_answer
    from services.faq.service import FaqCatalog

    min_similarity = load_policy().faq.min_similarity

    rng = np.random.default_rng(7)

    def random_embed(texts: list[str]) -> np.ndarray:
        rows = rng.standard_normal((len(texts), dimension)).astype(np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    results = []
    with tempfile.TemporaryDirectory(prefix="policyhub-bench-faq-") as tmp:
        url = f"sqlite:///{tmp}/faq.db"
        upgrade(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        for size in sorted(sizes):
            _seed(factory, size, phrasings)
            catalog = FaqCatalog(random_embed)
            started = time.perf_counter()
            with factory() as session:
                index = catalog.current(session)
            reload_ms = (time.perf_counter() - started) * 1000
            assert len(index.entries) == size
            queries = random_embed([""] * 64)  # unrelated questions: no FAQ reaches the threshold
            check, rank, hit = [], [], []
            for i in range(n):
                with factory() as session:
                    session.connection()  # the request's read transaction is already open
                    t0 = time.perf_counter()
                    index = catalog.current(session)
                    t1 = time.perf_counter()
                    rank_faqs(index, queries[i % len(queries)], min_similarity)
                    t2 = time.perf_counter()
                check.append((t1 - t0) * 1000)
                rank.append((t2 - t1) * 1000)
                if size:  # a question that is one of the phrasings: ranked, checked and verified
                    row = i % len(index.matrix)
                    question = index.entries[int(np.searchsorted(index.starts, row, "right") - 1)].questions[0]
                    t3 = time.perf_counter()
                    _, similar = rank_faqs(index, index.matrix[row], min_similarity)
                    match = similar[0]
                    unservable_reason(match, question, {match.entry.bound[0].version_id}, {"internal"}, False)
                    verify_faq_answer(match.entry.answer, [b.clause for b in match.entry.bound])
                    hit.append((time.perf_counter() - t3) * 1000)
            results.append({"faqs": size, "phrasings": size * phrasings,
                            "signature_check": percentiles(check), "match_miss": percentiles(rank),
                            "match_hit_with_checks": percentiles(hit) if hit else None,
                            "total_miss": percentiles([a + b for a, b in zip(check, rank)]),
                            "reload_without_embedding_ms": round(reload_ms, 1)})
        engine.dispose()
    return {"database": "sqlite (fresh file)", "dimension": dimension, "requests": n, "results": results}
