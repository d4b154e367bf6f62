"""`policyhub drift run|sample|label`: the I/O around governance.drift's comparisons.

`run_drift` re-runs the gold questions on the *active* production index (restricted to the
gold corpus' versions, so the figure is comparable with the approval baseline) and compares
Recall@5 with the approved baseline report; when the gold corpus is not ingested in
production it re-runs the benchmark on a temporary index built with the active model
instead, and says so. It then compares live signals from the audit log between the last
window and the one before it. Every significant shift is recorded as a drift alert (with its
audit event); the caller exits non-zero when there is any.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from governance.audit import AuditEntry, append
from governance.drift import (
    compare_windows,
    drift_settings,
    gold_recall_shift,
    live_recall_at_5,
    load_live_samples,
    record_alert,
)
from governance.evaluation import QueryOutcome, ranking_metrics
from governance.records.audit import AuditRecord
from governance.records.models import BenchmarkReport
from services.benchmark.runner import (
    DEFAULT_GOLD_DIR,
    gold_dataset_version,
    load_gold_queries,
    rank_clauses,
    run_benchmark,
)
from services.config import Settings
from services.db.models import DocumentVersion
from services.db.session import transaction
from services.errors import InvalidRequest, NotFound

log = structlog.get_logger()

SAMPLE_FIELDS = ("request_id", "asked_at", "question", "as_of", "refused", "refusal_reason", "served")


def baseline_report(session: Session, fingerprint: str, dataset_version: str) -> BenchmarkReport | None:
    """The approval baseline: the latest gold report for this fingerprint on the current dataset version."""
    rows = session.scalars(select(BenchmarkReport).where(
        BenchmarkReport.fingerprint == fingerprint, BenchmarkReport.dataset == "gold")
        .order_by(BenchmarkReport.id.desc())).all()
    return next((r for r in rows if r.dataset_version == dataset_version), rows[0] if rows else None)


def gold_version_ids(session: Session, gold_dir: Path) -> set[int] | None:
    """Production version ids holding exactly the gold corpus files; None when any file is missing."""
    files = sorted((gold_dir / "policies").glob("*.*"))
    digests = {hashlib.sha256(f.read_bytes()).hexdigest() for f in files if ".meta." not in f.name}
    rows = session.execute(select(DocumentVersion.id, DocumentVersion.content_sha256).where(
        DocumentVersion.status.in_(("active", "superseded")), DocumentVersion.content_sha256.in_(digests))).all()
    return {r.id for r in rows} if {r.content_sha256 for r in rows} == digests else None


def _gold_on_active_index(runtime, gold_dir: Path, version_ids: set[int]) -> dict:  # noqa: ANN001
    from services.query.retrieval import Retriever, version_scope, visible_versions

    retriever = Retriever(runtime.index, runtime.policy, runtime.identity.index_name, runtime.session_factory,
                          embed=runtime.embedder.embed)
    outcomes, cache = [], {}
    for q in load_gold_queries(gold_dir):
        if not q.gold:
            continue
        key = version_scope(q.question, q.as_of)
        if key not in cache:
            with runtime.session_factory() as session:
                visible = visible_versions(session, runtime.policy.classifications[-1], runtime.policy, *key)
            cache[key] = {k: v for k, v in visible.items() if k in version_ids}
        ranked, ms = rank_clauses(runtime.embedder, retriever, q.question, cache[key])
        outcomes.append(QueryOutcome(q.id, q.category, ranked, q.gold, ms))
    return ranking_metrics(outcomes).as_dict()


def run_drift(runtime, *, window_days: float = 7.0, now: datetime | None = None, gold: bool = True,  # noqa: ANN001
              gold_dir: Path = DEFAULT_GOLD_DIR, actor: str = "drift", channel: str = "cli") -> dict:
    """One drift check with a runtime built with models (the active model, version-locked to its index)."""
    now = now or datetime.now(UTC)
    settings: Settings = runtime.settings
    policy = runtime.policy
    identity = runtime.identity
    alpha, min_samples = drift_settings(policy.drift)
    result: dict = {"model": identity.key, "fingerprint": identity.fingerprint, "index": identity.index_name,
                    "checked_at": now.isoformat(timespec="seconds"), "alerts": []}
    shifts = []
    if gold:
        version = gold_dataset_version(gold_dir)
        with runtime.session_factory() as session:
            baseline = baseline_report(session, identity.fingerprint, version)
            version_ids = gold_version_ids(session, gold_dir)
        if baseline is None:
            raise NotFound(f"no gold benchmark report for the active model {identity.key} "
                           f"(fingerprint {identity.fingerprint[:12]}): there is no baseline to compare with")
        if version_ids is not None:
            current, source = _gold_on_active_index(runtime, gold_dir, version_ids), "active index"
        else:
            report = run_benchmark(settings, "gold", model_key=identity.key, store=False, gold_dir=gold_dir)
            current, source = report["metrics"], "temporary index (the gold corpus is not ingested in production)"
        shift = gold_recall_shift(baseline.metrics, current, policy.drift.recall_at_5_relative_drop)
        shifts.append(shift)
        result["gold"] = {"source": source, "baseline_report": baseline.id,
                          "baseline_dataset_version": baseline.dataset_version, "dataset_version": version,
                          "metrics": current, "shift": shift.as_dict()}
    window = timedelta(days=window_days)
    with runtime.session_factory() as session:
        before = load_live_samples(session, now - 2 * window, now - window)
        recent = load_live_samples(session, now - window, now)
    live = compare_windows(before, recent, alpha, min_samples)
    shifts += live
    result["live"] = {"baseline_window": [(now - 2 * window).isoformat(timespec="seconds"),
                                          (now - window).isoformat(timespec="seconds")],
                      "current_window": [(now - window).isoformat(timespec="seconds"),
                                         now.isoformat(timespec="seconds")],
                      "alpha": alpha, "min_samples": min_samples, "shifts": [s.as_dict() for s in live]}
    significant = [s for s in shifts if s.significant]
    if significant:
        with transaction(runtime.session_factory) as session:
            request_id = uuid.uuid4().hex
            for s in significant:
                alert = record_alert(session, identity.key, s, actor=actor, channel=channel,
                                     request_id=request_id)
                result["alerts"].append({"id": alert.id, "signal": s.signal, "note": s.note})
    log.info("drift.checked", model=identity.key, alerts=len(result["alerts"]))
    return result


def sample_questions(session: Session, n: int, *, days: float = 30.0, now: datetime | None = None,
                     seed: int | None = None, include_pii: bool = False) -> list[dict]:
    """A random sample of recent answered questions for labelling (questions with PII left out by default)."""
    now = now or datetime.now(UTC)
    stmt = select(AuditRecord).where(AuditRecord.event == "ask", AuditRecord.created_at >= now - timedelta(days=days),
                                     AuditRecord.question.is_not(None))
    if not include_pii:
        stmt = stmt.where(AuditRecord.pii_present.is_(False))
    records = []
    for record in session.scalars(stmt.order_by(AuditRecord.seq)):
        payload = json.loads(record.payload)
        trace = payload.get("trace") or {}
        if trace.get("error"):
            continue
        response = payload.get("response") or {}
        records.append({
            "request_id": record.request_id, "asked_at": record.created_at.isoformat(timespec="seconds"),
            "question": record.question, "as_of": trace.get("as_of"), "refused": record.refused,
            "refusal_reason": response.get("refusal_reason"),
            "served": [{"rank": r["rank"], "policy_id": r["policy_id"], "version": r["version"],
                        "clause": r["clause"]} for r in trace.get("retrieved") or []],
            # for the labeller to fill in: the clauses a correct answer cites, or not_in_policy: true
            "gold": [], "not_in_policy": None})
    rng = random.Random(seed)
    picked = rng.sample(records, min(n, len(records)))
    return sorted(picked, key=lambda r: r["asked_at"])


def write_sample(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def import_labels(session: Session, path: Path, actor: str = "drift", channel: str = "cli") -> dict:
    """Recall@5 on labelled live traffic, from what the audit log says was served (not what the file says)."""
    items, unlabelled, refusals = [], 0, {"labelled_not_in_policy": 0, "refused": 0}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{path}:{n}: not JSON: {exc.msg}") from exc
        record = session.scalars(select(AuditRecord).where(AuditRecord.request_id == row.get("request_id"),
                                                           AuditRecord.event == "ask")).first()
        if record is None:
            raise InvalidRequest(f"{path}:{n}: no audited question with request id {row.get('request_id')!r}")
        if row.get("not_in_policy"):
            refusals["labelled_not_in_policy"] += 1
            refusals["refused"] += int(bool(record.refused))
            continue
        gold = {(g["policy_id"], str(g["version"]), str(g["clause"])) for g in row.get("gold") or []}
        if not gold:
            unlabelled += 1
            continue
        trace = json.loads(record.payload).get("trace") or {}
        served = [(r["policy_id"], str(r["version"]), str(r["clause"]))
                  for r in sorted(trace.get("retrieved") or [], key=lambda r: r["rank"])]
        items.append((served, gold))
    result = {**live_recall_at_5(items), "unlabelled": unlabelled, **refusals,
              "not_in_policy_refusal_rate": (round(refusals["refused"] / refusals["labelled_not_in_policy"], 4)
                                             if refusals["labelled_not_in_policy"] else None)}
    append(session, AuditEntry(request_id=uuid.uuid4().hex, event="drift.labels_imported", actor=actor,
                               actor_role="model_risk", channel=channel,
                               payload={"file": path.name, **result}))
    return result
