"""The model registry as the CLI and the API see it: register, list, show, sign off, reports.

Each function takes a session the caller owns (the request or the CLI command commits), so a
change and its audit record land together.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance.approvals import (
    Actor,
    latest_report,
    record_registration,
    record_signoff,
    register_generation_model,
    signoff_status,
)
from governance.policy import GovernancePolicy
from governance.records.models import BenchmarkReport, DriftAlert, RegisteredModel
from governance.registry import get_model_or_raise, index_name_for, register_embedding_model
from services.errors import InvalidRequest, NotFound


def register_embedding(session: Session, path: Path, name: str, version: str, actor: Actor,
                       batch_size: int = 64) -> RegisteredModel:
    """Load the model once (determinism check), register it as `proposed` and audit the registration."""
    from services.runtime import shared_embedder

    path = Path(path)
    if not path.exists():
        raise InvalidRequest(f"{path}: no model files there")
    embedder = shared_embedder(path, name, version, batch_size)
    before = session.scalars(select(RegisteredModel.id)).all()
    model = register_embedding_model(session, name=name, version=version, path=path, dimension=embedder.dimension,
                                     max_seq_length=embedder.max_seq_length, embed=embedder.embed)
    if model.id not in before:
        record_registration(session, model, actor)
    return model


def register_generation(session: Session, policy: GovernancePolicy, model_key: str, actor: Actor) -> RegisteredModel:
    """Register a generation model the policy file lists (its local weights are fingerprinted)."""
    from services.generation.base import resolve_model_path

    spec = policy.model(model_key)
    if spec is None:
        raise NotFound(f"{model_key} is not a model of the policy file; add it there first")
    path = resolve_model_path(spec.path) if spec.kind == "llama_cpp" else None
    before = session.scalars(select(RegisteredModel.id)).all()
    model = register_generation_model(session, spec, path)
    if model.id not in before:
        record_registration(session, model, actor)
    return model


def report_summary(report: BenchmarkReport | None) -> dict | None:
    if report is None:
        return None
    m = report.metrics or {}
    return {"id": report.id, "dataset": report.dataset, "dataset_version": report.dataset_version,
            "split": report.split, "passed": report.passed, "created_at": report.created_at.isoformat(),
            "metrics": {k: m.get(k) for k in ("queries", "recall_at_5", "recall_at_10", "mrr", "map_at_10",
                                               "ndcg_at_10") if k in m}}


def model_summary(session: Session, model: RegisteredModel, policy: GovernancePolicy) -> dict:
    status = signoff_status(session, model, policy)
    return {"key": model.key, "name": model.name, "version": model.version, "kind": model.kind,
            "status": model.status, "fingerprint": model.fingerprint,
            "index": index_name_for(model.fingerprint) if model.kind == "embedding" else None,
            "dimension": model.dimension, "max_seq_length": model.max_seq_length,
            "created_at": model.created_at.isoformat(), "pending_signoffs": status["pending"],
            "signoffs": status["signoffs"], "latest_gold_report": report_summary(latest_report(session, model.fingerprint))}


def list_models(session: Session, policy: GovernancePolicy) -> list[dict]:
    return [model_summary(session, m, policy)
            for m in session.scalars(select(RegisteredModel).order_by(RegisteredModel.id))]


def show_model(session: Session, model_key: str, policy: GovernancePolicy) -> dict:
    model = get_model_or_raise(session, model_key)
    detail = model_summary(session, model, policy)
    detail["reports"] = list_reports(session, model.fingerprint)
    return detail


def list_reports(session: Session, fingerprint: str) -> list[dict]:
    rows = session.scalars(select(BenchmarkReport).where(BenchmarkReport.fingerprint == fingerprint)
                           .order_by(BenchmarkReport.id.desc()))
    return [report_summary(r) for r in rows]


def get_report(session: Session, report_id: int) -> BenchmarkReport:
    report = session.get(BenchmarkReport, report_id)
    if report is None:
        raise NotFound(f"no benchmark report {report_id}")
    return report


def sign_off(session: Session, policy: GovernancePolicy, model_key: str, signoff_role: str, decision: str,
             reason: str, actor: Actor, current_dataset_version: str) -> dict:
    model = record_signoff(session, model_key, signoff_role, actor.name, decision, reason, policy,
                           current_dataset_version, actor)
    return model_summary(session, model, policy)


def list_alerts(session: Session, limit: int = 100) -> list[dict]:
    rows = session.scalars(select(DriftAlert).order_by(DriftAlert.id.desc()).limit(limit))
    return [{"id": a.id, "model": a.model_key, "signal": a.signal, "baseline": a.baseline, "current": a.current,
             "relative_change": a.relative_change, "details": a.details, "created_at": a.created_at.isoformat()}
            for a in rows]
