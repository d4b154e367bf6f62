"""`policyhub benchmark run`: a candidate embedding model on the gold set or ObliQA, end to end.

The candidate gets a throw-away world of its own — a temporary SQLite database and Qdrant
Edge shard, whatever the production settings point at — so a benchmark can never touch the
production index. The corpus goes through the real IngestionService; every question goes
through the real Retriever (ranked distinct clauses) and, for the gold set, through the real
QueryService as well, so refusals (not in policy, prohibited use) are the ones staff would
get. Only the report leaves the temporary world: it is stored in the production database
against the model's fingerprint, where the approval gate reads it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import structlog
from sqlalchemy import select

from governance.approvals import Actor, mark_benchmarked, thresholds_for
from governance.audit import AuditEntry, append
from governance.evaluation import (
    QueryOutcome,
    distinct,
    histogram,
    recall_at_k,
    recall_curve,
    summarize,
    threshold_failures,
)
from governance.policy import GovernancePolicy, load_policy
from governance.records.audit import AuditRecord
from governance.records.models import BenchmarkReport, RegisteredModel
from governance.registry import get_model_or_raise, index_name_for
from services.bench.obliqa import (
    DEFAULT_OBLIQA_DIR,
    ingest_overrides,
    load_documents,
    obliqa_split,
    obliqa_version,
)
from services.benchmark.report import render_html
from services.config import Settings
from services.db.models import Clause, DocumentVersion
from services.db.session import transaction, upgrade
from services.errors import InvalidRequest, ModelRejected, PolicyHubError

log = structlog.get_logger()

DEFAULT_GOLD_DIR = Path(__file__).resolve().parents[2] / "gold_dataset"
DATASETS = ("gold", "obliqa")
RANK_DEPTH = 20  # clauses ranked per question: enough for Recall@20 and the recall-by-k chart
MISSES_SHOWN = 50
BENCHMARK_ACTOR = Actor("benchmark", "model_risk", channel="benchmark")

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class CandidateModel:
    name: str
    version: str
    path: Path
    registered_fingerprint: str | None  # None: the configured model, not (yet) in the registry

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class GoldQuery:
    id: str
    question: str
    gold: frozenset[tuple[str, str, str]]
    category: str
    expected_tier: int | None
    expected_refusal: str | None  # the refusal reason expected (e.g. not_in_policy), None: must be answered
    as_of: date | None
    classification: str | None


def gold_dataset_version(gold_dir: Path = DEFAULT_GOLD_DIR) -> str:
    """The gold dataset version approvals compare reports against: `VERSION+<content digest>`.

    The digest covers the questions, every policy file and the prompt-injection probes (generation
    reports use them), so a report run on an edited dataset (or on a subset) whose VERSION was not
    bumped still counts as stale.
    """
    try:
        declared = (gold_dir / "VERSION").read_text(encoding="utf-8").strip()
        digest = hashlib.sha256()
        for path in [gold_dir / "queries.jsonl", gold_dir / "injection_probes.jsonl",
                     *sorted((gold_dir / "policies").iterdir())]:
            if path.is_file():
                digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    except OSError as exc:
        raise InvalidRequest(f"{gold_dir}: cannot read the gold dataset: {exc.strerror}") from exc
    return f"{declared}+{digest.hexdigest()[:8]}"


def load_gold_queries(gold_dir: Path = DEFAULT_GOLD_DIR) -> list[GoldQuery]:
    queries = []
    for n, line in enumerate((gold_dir / "queries.jsonl").read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        refusal = row.get("expected_refusal")
        queries.append(GoldQuery(
            id=row["id"], question=row["question"], category=row["category"],
            gold=frozenset((g["policy_id"], str(g["version"]), str(g["clause"])) for g in row.get("gold") or []),
            expected_tier=row.get("expected_tier"),
            expected_refusal=(refusal if isinstance(refusal, str) else "refused" if refusal else None),
            as_of=date.fromisoformat(row["as_of"]) if row.get("as_of") else None,
            classification=row.get("classification")))
    return queries


@dataclass(frozen=True)
class RegisteredFacts:
    """What a benchmark needs of a registry row, read once."""

    key: str
    kind: str  # embedding | generation
    name: str
    version: str
    path: str
    fingerprint: str


def registered_model(settings: Settings, model_key: str) -> RegisteredFacts:
    """The registered NAME@VERSION (NotFound when it is not registered)."""
    from services.runtime import open_database

    if "@" not in model_key:
        raise InvalidRequest(f"model {model_key!r}: expected NAME@VERSION")
    engine, factory = open_database(settings)
    try:
        with factory() as session:
            model = get_model_or_raise(session, model_key)
            return RegisteredFacts(model_key, model.kind, model.name, model.version, model.path, model.fingerprint)
    finally:
        engine.dispose()


def resolve_candidate(settings: Settings, registered: RegisteredFacts | None) -> CandidateModel:
    """A registered embedding model, or the configured embedding model when none is named."""
    if registered is None:
        from services.embedding.sentence import default_model_path

        return CandidateModel(settings.embedding_model_name, settings.embedding_model_version,
                              Path(settings.embedding_model_path or default_model_path()), None)
    return CandidateModel(registered.name, registered.version, Path(registered.path), registered.fingerprint)


def run_benchmark(settings: Settings, dataset: str = "gold", split: str = "dev", model_key: str | None = None,
                  report_path: Path | None = None, *, limit: int | None = None, documents: int | None = None,
                  store: bool = True, gold_dir: Path = DEFAULT_GOLD_DIR, obliqa_dir: Path = DEFAULT_OBLIQA_DIR,
                  actor: Actor = BENCHMARK_ACTOR, progress: Progress | None = None) -> dict:
    """Benchmark one model; returns the report (also written to `report_path` and stored).

    An embedding model gets its own index (below); a registered generation model is put to the
    gold prompts and the injection probes (services.benchmark.generation).
    """
    if dataset not in DATASETS:
        raise InvalidRequest(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    registered = registered_model(settings, model_key) if model_key is not None else None
    if registered is not None and registered.kind == "generation":
        from services.benchmark.generation import run_generation_benchmark

        if dataset != "gold" or documents is not None:
            raise InvalidRequest(f"{model_key} is a generation model: it is benchmarked on the gold set only")
        return run_generation_benchmark(settings, registered, report_path, limit=limit, store=store,
                                        gold_dir=gold_dir, actor=actor, progress=progress)
    if dataset == "obliqa":
        obliqa_split(obliqa_dir, split)  # an unknown split is refused before a long ingest, not after
    policy = load_policy(settings.policy_file)
    candidate = resolve_candidate(settings, registered)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="policyhub-benchmark-") as tmp:
        world = _build_world(settings, candidate, Path(tmp))
        try:
            if dataset == "gold":
                corpus = _ingest_gold(world, gold_dir, progress)
                outcomes, misses = _run_gold(world, load_gold_queries(gold_dir)[:limit], progress)
                version, run_split = gold_dataset_version(gold_dir), "all"
            else:
                corpus = _ingest_obliqa(world, obliqa_dir, documents, progress)
                questions = _obliqa_questions(obliqa_dir, split, corpus["document_ids"], limit)
                outcomes, misses = _run_obliqa(world, questions, obliqa_passage_map(world, obliqa_dir), progress)
                version, run_split = obliqa_version(obliqa_dir, split), split
            coverage = _gold_coverage(world, outcomes)
        finally:
            world.close()
    report = _assemble(policy, world, dataset, version, run_split, corpus, outcomes, misses, coverage, settings,
                       time.perf_counter() - started, partial=limit is not None or documents is not None)
    html = render_html(report)
    if report_path is not None:
        write_report(report, html, report_path)
    if store:
        report["report_id"] = store_report(settings, report, html, actor)
    log.info("benchmark.finished", model=candidate.key, dataset=dataset, passed=report["passed"],
             recall_at_5=report["metrics"].get("recall_at_5"), seconds=report["seconds"])
    return report


# -- the candidate's own world ----------------------------------------------------------------


@dataclass
class _World:
    candidate: CandidateModel
    runtime: object  # services.runtime.Runtime of the temporary database and shard
    fingerprint: str

    @functools.cached_property
    def retriever(self):  # noqa: ANN201
        """The production Retriever over the candidate's index (without the rest of the query service)."""
        from services.query.retrieval import Retriever

        runtime = self.runtime
        return Retriever(runtime.index, runtime.policy, runtime.identity.index_name, runtime.session_factory,
                         embed=runtime.embedder.embed)

    def close(self) -> None:
        self.runtime.close()


def _build_world(settings: Settings, candidate: CandidateModel, root: Path) -> _World:
    from services.runtime import build_runtime

    temp = Settings(env="test", data_dir=root, database_url=None, qdrant_url=None, policy_file=settings.policy_file,
                    embedding_model_path=candidate.path, embedding_model_name=candidate.name,
                    embedding_model_version=candidate.version, embedding_batch_size=settings.embedding_batch_size,
                    max_upload_bytes=settings.max_upload_bytes)
    upgrade(temp.sqlalchemy_url)
    runtime = build_runtime(temp)  # registers (determinism check) and activates the candidate in the temp DB
    fingerprint = runtime.identity.fingerprint
    if candidate.registered_fingerprint and fingerprint != candidate.registered_fingerprint:
        runtime.close()
        raise ModelRejected(f"{candidate.key}: the files at {candidate.path} no longer match the registered "
                            f"fingerprint {candidate.registered_fingerprint[:12]} (now {fingerprint[:12]})")
    return _World(candidate, runtime, fingerprint)


def _ingest_gold(world: _World, gold_dir: Path, progress: Progress | None) -> dict:
    from services.ingestion.service import iter_document_paths

    files = iter_document_paths([gold_dir / "policies"])
    started = time.perf_counter()
    done = 0

    def advance(_result) -> None:  # noqa: ANN001
        nonlocal done
        done += 1
        if progress:
            progress("ingest", done, len(files))

    summary = world.runtime.ingestion.ingest_paths(files, on_progress=advance)
    if summary.rejected:
        raise InvalidRequest("gold corpus documents were rejected: "
                             + "; ".join(f"{r.source}: {r.error}" for r in summary.rejected))
    return {"documents": len({r.policy_id for r in summary.published}), "versions": len(summary.published),
            "clauses": summary.clauses, "chunks": summary.chunks,
            "ingest_seconds": round(time.perf_counter() - started, 2), "rejected": []}


def _ingest_obliqa(world: _World, root: Path, limit: int | None, progress: Progress | None) -> dict:
    docs = load_documents(root)[:limit]
    started = time.perf_counter()
    clauses = chunks = 0
    rejected, ids = [], []
    for n, doc in enumerate(docs, start=1):
        try:
            result = world.runtime.ingestion.ingest_bytes(doc.path.name, doc.path.read_bytes(), ingest_overrides(doc))
            clauses += result.clauses
            chunks += result.chunks
            ids.append(doc.document_id)
        except PolicyHubError as exc:
            rejected.append({"document": doc.path.name, "error": exc.detail})
        if progress:
            progress("ingest", n, len(docs))
    return {"documents": len(ids), "versions": len(ids), "clauses": clauses, "chunks": chunks,
            "ingest_seconds": round(time.perf_counter() - started, 2), "rejected": rejected, "document_ids": ids}


# -- running the questions ---------------------------------------------------------------------


def rank_clauses(embedder, retriever, question: str, versions: dict,  # noqa: ANN001
                 depth: int = RANK_DEPTH) -> tuple[tuple, float]:
    """The real retrieval path for one question: embed, then rank distinct clauses. Returns (ranking, ms)."""
    t0 = time.perf_counter()
    q_vec = embedder.embed([question])[0]
    result = retriever.retrieve(question, q_vec, versions, top_k=depth)
    elapsed = (time.perf_counter() - t0) * 1000
    return tuple(distinct((h.policy_id, h.version, h.clause) for h in result.clauses)), elapsed


def _ranked(world: _World, question: str, versions: dict) -> tuple[tuple, float]:
    return rank_clauses(world.runtime.embedder, world.retriever, question, versions)


def _versions_for(world: _World, as_of: date | None, cache: dict, question: str = "") -> dict:
    """The versions the query service would search for this question (as_of, or history for "what changed")."""
    from services.query.retrieval import version_scope, visible_versions

    key = version_scope(question, as_of)
    if key not in cache:
        runtime = world.runtime
        with runtime.session_factory() as session:
            # the benchmark sees every classification: it measures retrieval, not clearance
            cache[key] = visible_versions(session, runtime.policy.classifications[-1], runtime.policy, *key)
    return cache[key]


def _run_gold(world: _World, queries: list[GoldQuery], progress: Progress | None) -> tuple[list[QueryOutcome], list]:
    from services.query.schemas import AskCreate
    from services.users.service import Principal

    runtime = world.runtime
    query_service = runtime.query  # warms the guards (prohibited-use exemplars, Presidio) once
    principal = Principal(id=0, name="benchmark", role="admin", clearance=runtime.policy.classifications[-1])
    cache: dict = {}
    outcomes, misses = [], []
    for n, q in enumerate(queries, start=1):
        ranked, ms = _ranked(world, q.question, _versions_for(world, q.as_of, cache, q.question))
        request_id = f"bench-{uuid.uuid4().hex[:12]}-{q.id}"[:64]
        refused, reason, tier = None, None, None
        try:
            answer = query_service.ask(principal, AskCreate(question=q.question, classification=q.classification,
                                                            as_of=q.as_of), channel="benchmark",
                                       request_id=request_id)
            refused, reason = answer.refused, answer.refusal_reason
            tier = None if answer.refused else _routed_tier(world, request_id)
        except PolicyHubError as exc:  # an error is neither a correct refusal nor an answer
            reason = f"error: {exc.error}: {exc.detail}"
            refused = False
        outcome = QueryOutcome(query_id=q.id, category=q.category, ranked=ranked, gold=q.gold, retrieval_ms=ms,
                               expected_refusal=q.expected_refusal is not None, refused=refused,
                               refusal_reason=reason, expected_refusal_reason=q.expected_refusal,
                               expected_tier=q.expected_tier, tier=tier)
        outcomes.append(outcome)
        if q.gold and recall_at_k(ranked, set(q.gold), 5) < 1.0 and len(misses) < MISSES_SHOWN:
            misses.append(_miss(q.id, q.category, q.question, q.gold, ranked))
        if progress:
            progress("questions", n, len(queries))
    return outcomes, misses


def _routed_tier(world: _World, request_id: str) -> int | None:
    """The tier the router would choose with every policy-file model approved, replayed from the audit trace.

    The benchmark's own database approves no generation model (it measures retrieval and
    must not spend on generation), so the live answer is always a tier-0 quote; the router
    is a pure function, so its decision for the policy's full model line-up is replayed from
    the features, classification and risk the real request path recorded.
    """
    from services.query.complexity import QuestionFeatures
    from services.query.router import Budget, decide

    runtime = world.runtime
    policy = runtime.policy
    with runtime.session_factory() as session:
        record = session.scalars(select(AuditRecord).where(AuditRecord.request_id == request_id)).first()
    trace = json.loads(record.payload).get("trace", {}) if record else {}
    route = trace.get("route")
    if not route:
        return None
    features = QuestionFeatures(**route["features"])
    budget = Budget(per_request_cap=policy.routing.per_request_cost_cap,
                    daily_remaining=policy.routing.daily_budget_per_user)
    decision = decide(features, route["effective_classification"], route["risk"], trace.get("sla_ms"), budget,
                      [(spec, True) for spec in policy.models], policy)
    return decision.candidates[0].tier


def _obliqa_questions(root: Path, split: str, document_ids: list[int], limit: int | None) -> list[dict]:
    """Questions whose gold passages all lie in the ingested documents (all of them on a full run)."""
    ingested = set(document_ids)
    questions = [q for q in obliqa_split(root, split) if {p["DocumentID"] for p in q["Passages"]} <= ingested]
    return questions[:limit]


def obliqa_passage_map(world: _World, root: Path) -> dict[tuple[str, str], str]:
    """(policy id, our clause number) -> the ObliQA passage that holds it.

    ObliQA's passages keep a paragraph's sub-items inside it ("4.1.1.(2)" includes its
    "(a)" to "(d)"); policyhub cites the sub-items as clauses of their own. Walking each
    document in order, a clause whose number is one of the dataset's passage ids starts
    that passage, and every clause after it belongs to it until the next one starts. The
    map comes from the dataset's own passage segmentation (structured/), not its questions.
    """
    mapping: dict[tuple[str, str], str] = {}
    with world.runtime.session_factory() as session:
        rows = session.execute(select(DocumentVersion.policy_id, Clause.number)
                               .join(Clause, Clause.version_id == DocumentVersion.id)
                               .order_by(DocumentVersion.policy_id, Clause.ordinal)).all()
    passage_ids: dict[str, set[str]] = {}
    current: dict[str, str] = {}
    for policy_id, number in rows:
        if policy_id not in passage_ids:
            structured = root / "structured" / f"{policy_id.removeprefix('ADGM-')}.json"
            passage_ids[policy_id] = ({p["PassageID"] for p in json.loads(structured.read_text())}
                                      if structured.exists() else set())
        if number in passage_ids[policy_id]:
            current[policy_id] = number
        mapping.setdefault((policy_id, number), current.get(policy_id, number))
    return mapping


def _run_obliqa(world: _World, questions: list[dict], passage_of: dict[tuple[str, str], str],
                progress: Progress | None) -> tuple[list[QueryOutcome], list]:
    versions = _versions_for(world, None, {})
    outcomes, misses = [], []
    for n, q in enumerate(questions, start=1):
        gold = frozenset((f"ADGM-{p['DocumentID']}", "1", str(p["PassageID"])) for p in q["Passages"])
        # deeper than RANK_DEPTH: several of our clauses can fall in one ObliQA passage
        clauses, ms = rank_clauses(world.runtime.embedder, world.retriever, q["Question"], versions, RANK_DEPTH * 3)
        ranked = tuple(distinct((p, v, passage_of.get((p, c), c)) for p, v, c in clauses))[:RANK_DEPTH]
        outcomes.append(QueryOutcome(query_id=q["QuestionID"], category=f"group_{q.get('Group', '?')}",
                                     ranked=ranked, gold=gold, retrieval_ms=ms))
        if recall_at_k(ranked, set(gold), 10) < 1.0 and len(misses) < MISSES_SHOWN:
            misses.append(_miss(q["QuestionID"], f"group_{q.get('Group', '?')}", q["Question"], gold, ranked))
        if progress:
            progress("questions", n, len(questions))
    return outcomes, misses


def _gold_coverage(world: _World, outcomes: list[QueryOutcome]) -> float | None:
    """Share of gold clauses that exist in the index at all — the ceiling on recall (segmentation misses)."""
    gold = {key for o in outcomes for key in o.gold}
    if not gold:
        return None
    with world.runtime.session_factory() as session:
        rows = session.execute(select(DocumentVersion.policy_id, DocumentVersion.version, Clause.number)
                               .join(Clause, Clause.version_id == DocumentVersion.id)
                               .where(DocumentVersion.status.in_(("active", "superseded")))).all()
    present = {(p, v, c) for p, v, c in rows}
    return round(len(gold & present) / len(gold), 4)


def _miss(qid: str, category: str, question: str, gold: frozenset, ranked: tuple) -> dict:
    fmt = lambda key: f"{key[0]}§{key[2]}@{key[1]}"  # noqa: E731
    return {"id": qid, "category": category, "question": question, "gold": sorted(fmt(k) for k in gold),
            "top5": [fmt(k) for k in ranked[:5]]}


# -- the report ---------------------------------------------------------------------------------


def _assemble(policy: GovernancePolicy, world: _World, dataset: str, version: str, split: str, corpus: dict,
              outcomes: list[QueryOutcome], misses: list, coverage: float | None, settings: Settings,
              seconds: float, partial: bool) -> dict:
    metrics = summarize(outcomes)
    metrics["partial"] = partial  # a subset of the questions is never evidence for an approval
    metrics["recall_curve"] = recall_curve(outcomes, RANK_DEPTH)
    thresholds = thresholds_for("embedding", policy)
    failures = threshold_failures(metrics, thresholds) + (["partial run: a subset of the questions"] if partial else [])
    candidate = world.candidate
    return {
        "kind": "embedding",
        "dataset": dataset,
        "dataset_version": version,
        "split": split,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"key": candidate.key, "name": candidate.name, "version": candidate.version,
                  "path": str(candidate.path), "fingerprint": world.fingerprint,
                  "index": index_name_for(world.fingerprint)},
        "queries": len(outcomes),
        "corpus": {k: v for k, v in corpus.items() if k != "document_ids"},
        "gold_coverage": coverage,
        "metrics": metrics,
        "thresholds": thresholds,
        "threshold_failures": failures,
        "passed": not failures,
        "latency_histogram": histogram([o.retrieval_ms for o in outcomes]),
        "misses": misses,
        "settings": {"retrieval": policy.retrieval.model_dump(), "rank_depth": RANK_DEPTH,
                     "embedding_batch_size": settings.embedding_batch_size},
        "seconds": round(seconds, 1),
        "outcomes": [_outcome_row(o) for o in outcomes],
    }


def _outcome_row(o: QueryOutcome) -> dict:
    row = asdict(o)
    row["ranked"] = ["|".join(k) for k in o.ranked[:10]]
    row["gold"] = sorted("|".join(k) for k in o.gold)
    row["retrieval_ms"] = round(o.retrieval_ms, 2)
    return row


def write_report(report: dict, html: str, path: Path) -> tuple[Path, Path]:
    """JSON and HTML side by side: PATH.json and PATH.html whatever PATH's own suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    json_path, html_path = path.with_suffix(".json"), path.with_suffix(".html")
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    html_path.write_text(html, encoding="utf-8")
    return json_path, html_path


def store_report(settings: Settings, report: dict, html: str, actor: Actor) -> int:
    """Store the report in the production database against the fingerprint; a registered model becomes benchmarked."""
    from services.runtime import open_database

    engine, factory = open_database(settings)
    try:
        with transaction(factory) as session:
            session.connection(execution_options={"immediate": True})
            row = BenchmarkReport(
                model_key=report["model"]["key"], fingerprint=report["model"]["fingerprint"], kind=report["kind"],
                dataset=report["dataset"], dataset_version=report["dataset_version"], split=report["split"],
                metrics={k: v for k, v in report["metrics"].items()}, passed=report["passed"],
                report_json=json.dumps(report, ensure_ascii=False), report_html=html)
            session.add(row)
            session.flush()
            model = session.scalars(select(RegisteredModel).where(
                RegisteredModel.fingerprint == report["model"]["fingerprint"])).first()
            if model is not None:
                mark_benchmarked(session, model, row, actor)
            else:
                append(session, AuditEntry(
                    request_id=actor.request_id or uuid.uuid4().hex, event="benchmark.stored", actor=actor.name,
                    actor_role=actor.role, channel=actor.channel, model_key=report["model"]["key"],
                    payload={"report_id": row.id, "model": report["model"]["key"],
                             "fingerprint": report["model"]["fingerprint"], "dataset": row.dataset,
                             "dataset_version": row.dataset_version, "passed": row.passed,
                             "note": "the model is not registered; the report waits for its registration"}))
            return row.id
    finally:
        engine.dispose()

