"""Blue/green activation of an embedding model, and retirement.

Activation re-embeds every published version (active and superseded, so `as_of` questions
keep working) into the new model's own index — named by its fingerprint — while the old
index keeps serving. Only when the new index is complete does one transaction make the new
model active (the old one stands by as `approved`, its index intact) and append the audit
event. A query is always answered from one index with that index's model: the runtime's
version lock refuses to pair a loaded model with another model's index.

Retiring a model drops its index once the status change has committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from governance.approvals import Actor, activate, check_transition, retire
from governance.policy import GovernancePolicy
from governance.records.models import RegisteredModel
from governance.registry import get_model_or_raise, hash_model_files, index_name_for, model_fingerprint
from services.db.models import Chunk, Clause, DocumentVersion
from services.db.session import transaction
from services.embedding.sentence import Embedder
from services.errors import ModelRejected
from services.ingestion.service import UPSERT_BATCH, PointSource, build_points
from services.vectors.base import IndexPoint, VectorIndex

log = structlog.get_logger()

SERVED_STATUSES = ("active", "superseded")


@dataclass(frozen=True)
class ActivationResult:
    model_key: str
    kind: str
    previous_key: str | None
    index_name: str | None
    versions: int
    points: int
    seconds: float


def load_embedder_for(model: RegisteredModel, batch_size: int = 64) -> Embedder:
    """The registered model's files, loaded once per process, proven to be the registered ones."""
    from services.runtime import shared_embedder

    embedder = shared_embedder(Path(model.path), model.name, model.version, batch_size)
    fingerprint = model_fingerprint(model.name, model.version, hash_model_files(Path(model.path)),
                                    embedder.dimension, embedder.max_seq_length)
    if fingerprint != model.fingerprint:
        raise ModelRejected(f"{model.key}: the files at {model.path} no longer match the registered fingerprint "
                            f"{model.fingerprint[:12]} (now {fingerprint[:12]})")
    return embedder


def version_points(session: Session, version: DocumentVersion, embedder: Embedder) -> list[IndexPoint]:
    """The points of one published version, rebuilt from its stored chunks and clauses with `embedder`.

    Point ids, payload and sparse vectors are those ingestion wrote; only the dense rows
    (and which clause each row belongs to, as window counts depend on the model) change.
    """
    chunks = list(session.scalars(select(Chunk).where(Chunk.version_id == version.id).order_by(Chunk.ordinal)))
    clauses: dict[str, list[Clause]] = {}
    for clause in session.scalars(select(Clause).where(Clause.version_id == version.id).order_by(Clause.ordinal)):
        clauses.setdefault(clause.chunk_id, []).append(clause)
    base = {"version_id": version.id, "policy_id": version.policy_id, "version": version.version,
            "classification": version.classification, "effective_date": version.effective_date.isoformat(),
            "title": version.title}
    return build_points(embedder, base, [PointSource(c.id, c.text, c.heading_path, clauses.get(c.id, []))
                                         for c in chunks])


def _reembed(session: Session, version_ids: list[int], embedder: Embedder, index: VectorIndex, target: str,
             progress: Callable[[int, int], None] | None, done_before: int, total: int) -> int:
    points_written = 0
    for n, version_id in enumerate(version_ids, start=1):
        version = session.get(DocumentVersion, version_id)
        points = version_points(session, version, embedder)
        for start in range(0, len(points), UPSERT_BATCH):
            index.upsert(target, points[start: start + UPSERT_BATCH])
        points_written += len(points)
        if progress:
            progress(done_before + n, total)
    return points_written


def _served_version_ids(session: Session) -> list[int]:
    return list(session.scalars(select(DocumentVersion.id).where(DocumentVersion.status.in_(SERVED_STATUSES))
                                .order_by(DocumentVersion.id)))


def activate_model(session_factory: sessionmaker[Session], index: VectorIndex, policy: GovernancePolicy,
                   model_key: str, actor: Actor, *, batch_size: int = 64,
                   progress: Callable[[int, int], None] | None = None) -> ActivationResult:
    """Make an approved model active; for an embedding model, re-embed into its own index first."""
    started = time.perf_counter()
    with session_factory() as session:
        model = get_model_or_raise(session, model_key)
        check_transition(model.status, "active", model.key)  # fail before any heavy work
        kind, model_id = model.kind, model.id
    if kind != "embedding":
        with transaction(session_factory) as session:
            model = session.get(RegisteredModel, model_id)
            previous = activate(session, model, actor)
        return ActivationResult(model_key, kind, previous.key if previous else None, None, 0, 0,
                                round(time.perf_counter() - started, 2))

    with session_factory() as session:
        embedder = load_embedder_for(session.get(RegisteredModel, model_id), batch_size)
    target = index_name_for(model.fingerprint)
    index.ensure_collection(target, embedder.dimension)
    done: set[int] = set()
    points = 0
    # Re-embed outside any write lock while the old index keeps serving; repeat for versions
    # published meanwhile, so the final switch has little or nothing left to do.
    while True:
        with session_factory() as session:
            todo = [v for v in _served_version_ids(session) if v not in done]
            if not todo:
                break
            points += _reembed(session, todo, embedder, index, target, progress, len(done), len(done) + len(todo))
        done.update(todo)

    index.optimize(target)  # build the new index's HNSW before it serves (a no-op on a Qdrant server)

    with transaction(session_factory) as session:
        # BEGIN IMMEDIATE on SQLite: no version can be published between the last check and the switch.
        session.connection(execution_options={"immediate": True})
        late = [v for v in _served_version_ids(session) if v not in done]
        if late:
            points += _reembed(session, late, embedder, index, target, progress, len(done), len(done) + len(late))
            done.update(late)
        model = session.get(RegisteredModel, model_id)
        for version in session.scalars(select(DocumentVersion).where(DocumentVersion.id.in_(done))):
            version.index_name = target
        previous = activate(session, model, actor, {"index": target, "versions": len(done), "points": points})
        previous_key = previous.key if previous else None
    log.info("models.activated", model=model_key, index=target, versions=len(done), points=points,
             previous=previous_key)
    return ActivationResult(model_key, kind, previous_key, target, len(done), points,
                            round(time.perf_counter() - started, 2))


def retire_model(session_factory: sessionmaker[Session], index: VectorIndex | None, model_key: str, actor: Actor,
                 reason: str = "") -> dict:
    """Retire a model; an embedding model's index is dropped after the retirement commits."""
    with transaction(session_factory) as session:
        model = get_model_or_raise(session, model_key)
        retire(session, model, actor, reason)
        kind, fingerprint = model.kind, model.fingerprint
    dropped = None
    if kind == "embedding" and index is not None:
        name = index_name_for(fingerprint)
        if index.collection_exists(name):
            index.drop_collection(name)
            dropped = name
    log.info("models.retired", model=model_key, dropped_index=dropped)
    return {"model": model_key, "status": "retired", "dropped_index": dropped}
