"""Builds the heavy things once — database, embedder, vector index, guards, generators —
for the API's lifespan or a CLI command's start, and hands them out."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from governance.audit import AuditEntry, append
from governance.policy import GovernancePolicy, load_policy
from governance.records.models import RegisteredModel
from governance.registry import (
    active_embedding_model,
    hash_model_files,
    index_name_for,
    model_fingerprint,
    register_embedding_model,
    require_version_lock,
)
from services.config import Settings
from services.db.models import DocumentVersion
from services.db.session import (
    make_engine,
    make_session_factory,
    require_current_schema,
    transaction,
)
from services.embedding.sentence import SentenceTransformerEmbedder, default_model_path
from services.vectors import open_vector_index
from services.vectors.base import VectorIndex

log = structlog.get_logger()


@dataclass(frozen=True)
class EmbeddingIdentity:
    key: str
    fingerprint: str
    index_name: str


@dataclass
class Runtime:
    settings: Settings
    policy: GovernancePolicy
    engine: Engine
    session_factory: sessionmaker[Session]
    embedder: SentenceTransformerEmbedder | None = None
    identity: EmbeddingIdentity | None = None
    index: VectorIndex | None = None
    _services: dict = field(default_factory=dict)

    # Services are built on first use so a command pays only for what it needs.
    @property
    def ingestion(self):  # noqa: ANN201
        if "ingestion" not in self._services:
            from services.ingestion.service import IngestionService

            self._services["ingestion"] = IngestionService(
                self.session_factory, self.index, self.embedder, self.policy, self.identity.index_name,
                self.settings.max_upload_bytes)
        return self._services["ingestion"]

    @property
    def query(self):  # noqa: ANN201
        if "query" not in self._services:
            self._services["query"] = build_query_service(self)
        return self._services["query"]

    def close(self) -> None:
        if self.index is not None:
            self.index.close()
        self.engine.dispose()


def open_database(settings: Settings, check_schema: bool = True) -> tuple[Engine, sessionmaker[Session]]:
    engine = make_engine(settings.sqlalchemy_url)
    if check_schema:
        require_current_schema(engine)
    return engine, make_session_factory(engine)


def build_runtime(settings: Settings, *, with_models: bool = True) -> Runtime:
    """Policy + database always; embedder and index when `with_models` (ingest, ask, serve)."""
    policy = load_policy(settings.policy_file)
    engine, factory = open_database(settings)
    runtime = Runtime(settings=settings, policy=policy, engine=engine, session_factory=factory)
    if with_models:
        runtime.embedder, runtime.identity = load_locked_embedder(settings, factory)
        runtime.index = open_vector_index(
            settings.shard_dir, settings.qdrant_url,
            settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None)
        runtime.index.ensure_collection(runtime.identity.index_name, runtime.embedder.dimension)
    return runtime


@functools.lru_cache(maxsize=4)
def shared_embedder(path: Path, name: str, version: str, batch_size: int) -> SentenceTransformerEmbedder:
    """One loaded copy of a model per process, however many runtimes (CLI, app, tests) ask for it."""
    embedder = SentenceTransformerEmbedder(path, name, version, batch_size)
    embedder.warm_up()
    return embedder


def load_locked_embedder(settings: Settings, factory: sessionmaker[Session]) -> tuple[SentenceTransformerEmbedder, EmbeddingIdentity]:
    """Load the configured embedding model and prove it is the one the active index was built with.

    On the very first run (no active model yet) the configured model is registered — after its
    determinism check — and activated, so a newcomer's server starts without a manual step.
    """
    path = settings.embedding_model_path or default_model_path()
    embedder = shared_embedder(path, settings.embedding_model_name, settings.embedding_model_version,
                               settings.embedding_batch_size)
    weights = hash_model_files(path)
    fingerprint = model_fingerprint(embedder.name, embedder.version, weights, embedder.dimension,
                                    embedder.max_seq_length)
    with transaction(factory) as session:
        session.connection(execution_options={"immediate": True})
        if active_embedding_model(session) is None:
            model = register_embedding_model(
                session, name=embedder.name, version=embedder.version, path=path, dimension=embedder.dimension,
                max_seq_length=embedder.max_seq_length, embed=embedder.embed, weights_sha256=weights)
            model.status = "active"
            append(session, AuditEntry(
                request_id=f"bootstrap-{fingerprint[:12]}", event="model.activated", actor="system",
                actor_role="admin", channel="startup",
                payload={"kind": "embedding", "model": model.key, "fingerprint": fingerprint,
                         "reason": "first run: the configured default embedding model was registered and activated"}))
            log.info("models.bootstrap_activated", model=model.key, fingerprint=fingerprint[:12])
        require_version_lock(session, fingerprint, embedder.key)
    return embedder, EmbeddingIdentity(embedder.key, fingerprint, index_name_for(fingerprint))


def approved_generation_fingerprints(session: Session) -> dict[str, str]:
    """key -> fingerprint of every approved (or active) generation model."""
    rows = session.scalars(select(RegisteredModel).where(
        RegisteredModel.kind == "generation", RegisteredModel.status.in_(("approved", "active")))).all()
    return {r.key: r.fingerprint for r in rows}


def environment_changes(measured: dict, now: dict) -> dict[str, dict]:
    """The fields of a generator's environment that differ from those its benchmark report recorded."""
    return {name: {"measured": measured.get(name), "now": now.get(name)}
            for name in sorted(set(measured) | set(now)) if measured.get(name) != now.get(name)}


def _check_environment(session: Session, model_key: str, fingerprint: str, environment: dict) -> None:
    """Warn at start-up when an approved model runs elsewhere than its latest gold report was measured.

    The same weights answer differently on other kernels (near-ties flip), so the approval's
    evidence describes the environment it names; model risk should benchmark it again here.
    A warning, not a refusal: the approval stands until they withdraw it.
    """
    from governance.approvals import latest_report

    report = latest_report(session, fingerprint)
    if report is None:  # approved without a stored report (a throw-away bench database)
        return
    measured = json.loads(report.report_json).get("environment")
    if measured is None:
        log.warning("model.environment_unrecorded", model=model_key, report_id=report.id,
                    hint="the report predates environment recording; benchmark it again here")
        return
    changes = environment_changes(measured, environment)
    if changes:
        log.warning("model.environment_differs", model=model_key, report_id=report.id, changes=changes,
                    hint="its approval was measured elsewhere; benchmark it again here before relying on it")


def build_query_service(runtime: Runtime):  # noqa: ANN201
    from services.faq.service import FaqCatalog
    from services.generation.base import build_generator
    from services.query.guards import ProhibitedUseDetector
    from services.query.pii import PiiDetector
    from services.query.retrieval import Retriever
    from services.query.service import QueryService

    policy, settings = runtime.policy, runtime.settings
    prohibited = ProhibitedUseDetector(policy.prohibited_uses, runtime.embedder.embed)
    prohibited.warm_up()
    pii = PiiDetector(policy.pii)
    pii.warm_up()
    with transaction(runtime.session_factory) as session:
        fingerprints = approved_generation_fingerprints(session)
    approved = set(fingerprints)
    generators = {}
    for spec in policy.models:
        if spec.key not in approved:
            continue
        base_url = settings.openai_endpoints.get(spec.key) or spec.base_url
        if spec.kind == "openai" and not base_url:
            # Approved but not deployed here: never routable, and says so at start-up.
            log.warning("query.model_without_endpoint", model=spec.key,
                        hint="set POLICYHUB_OPENAI_ENDPOINTS to route to it")
            continue
        api_key = settings.openai_api_keys.get(spec.key)
        generator = build_generator(spec, settings.openai_endpoints.get(spec.key),
                                    api_key.get_secret_value() if api_key else None)
        generator.warm_up()
        with runtime.session_factory() as session:
            _check_environment(session, spec.key, fingerprints[spec.key], generator.environment())
        generators[spec.key] = generator
    retriever = Retriever(runtime.index, policy, runtime.identity.index_name, runtime.session_factory,
                          embed=runtime.embedder.embed)
    with runtime.session_factory() as session:
        # every published version's clauses tokenised now, not on the first question
        retriever.lexicon.ensure_loaded(session.scalars(select(DocumentVersion.id).where(
            DocumentVersion.status.in_(("active", "superseded")))))
    faqs = FaqCatalog(runtime.embedder.embed)
    with runtime.session_factory() as session:
        faq_index = faqs.current(session)  # approved FAQs embedded now, not on the first question
    log.info("query.ready", approved_models=sorted(generators), clauses=len(retriever.lexicon),
             faqs=len(faq_index.entries))
    return QueryService(policy=policy, session_factory=runtime.session_factory, embedder=runtime.embedder,
                        retriever=retriever,
                        prohibited=prohibited, pii=pii, generators=generators, approved_models=approved,
                        embedding_key=runtime.identity.key, embedding_fingerprint=runtime.identity.fingerprint,
                        faqs=faqs)
