"""Model lifecycle and approvals: proposed → benchmarked → approved → active → retired (+ rejected).

The decisions — may this status follow that one, what blocks an approval — are pure
functions. The functions that change a model's status also append the governance event
to the audit chain in the caller's session, so the change and its audit record commit
together or not at all; none of them commits.

Approval needs an `approve` sign-off from every role the policy file names, and is
refused, with the reason, while the model's latest gold benchmark report *for its exact
fingerprint* misses a policy threshold or was run on an older gold dataset version.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance.audit import AuditEntry, append
from governance.errors import PolicyHubError
from governance.evaluation import threshold_failures
from governance.policy import GovernancePolicy, ModelSpec
from governance.records.models import BenchmarkReport, ModelSignoff, RegisteredModel
from governance.redaction import redact_url
from governance.registry import (
    active_embedding_model,
    get_model_or_raise,
    hash_model_files,
    model_fingerprint,
)

GATE_DATASET = "gold"
DECISIONS = ("approve", "reject")

# Which status may follow which. `active → approved`: another embedding model was
# activated, this one stands by (its index is kept, so it can be re-activated) until
# retired. `rejected → benchmarked`: a fresh benchmark reopens the review.
TRANSITIONS: dict[str, frozenset[str]] = {
    "proposed": frozenset({"benchmarked", "rejected", "retired"}),
    "benchmarked": frozenset({"benchmarked", "approved", "rejected", "retired"}),
    "approved": frozenset({"active", "rejected", "retired"}),
    "active": frozenset({"approved", "retired"}),
    "rejected": frozenset({"benchmarked", "retired"}),
    "retired": frozenset(),
}


class InvalidTransition(PolicyHubError):
    status_code, error = 409, "invalid_transition"


class ApprovalRefused(PolicyHubError):
    status_code, error = 409, "approval_refused"


class InvalidSignoff(PolicyHubError):
    status_code, error = 422, "invalid_signoff"


@dataclass(frozen=True)
class Actor:
    """Who made a governance change, and through which channel (for the audit record)."""

    name: str
    role: str
    channel: str = "cli"
    request_id: str | None = None


@dataclass(frozen=True)
class ReportFacts:
    """What the approval gate needs to know about a benchmark report."""

    report_id: int
    fingerprint: str
    dataset: str
    dataset_version: str
    metrics: Mapping[str, object]


# -- pure decisions ---------------------------------------------------------------------


def check_transition(current: str, target: str, model_key: str = "the model") -> None:
    if target not in TRANSITIONS.get(current, frozenset()):
        allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "none (final)"
        raise InvalidTransition(f"{model_key} is {current}; it cannot become {target} (allowed next: {allowed})")


def thresholds_for(kind: str, policy: GovernancePolicy) -> dict[str, float]:
    """The policy file's minimum metrics for a model kind."""
    if kind == "embedding":
        return dict(policy.approvals.embedding_thresholds)
    return dict(policy.approvals.generation_thresholds)


def approval_blockers(fingerprint: str, report: ReportFacts | None, thresholds: Mapping[str, float],
                      current_dataset_version: str) -> list[str]:
    """Every reason the evidence does not support an approval; empty when it does."""
    if report is None:
        return [f"no {GATE_DATASET} benchmark report for fingerprint {fingerprint[:12]}: "
                f"run `policyhub models benchmark` first"]
    blockers = []
    if report.fingerprint != fingerprint:  # defence in depth: the query already selects on it
        blockers.append(f"report {report.report_id} is for fingerprint {report.fingerprint[:12]}, "
                        f"not this model's {fingerprint[:12]}")
    if report.dataset_version != current_dataset_version:
        blockers.append(f"report {report.report_id} was run on gold dataset version {report.dataset_version}; "
                        f"the current version is {current_dataset_version}: re-run the benchmark")
    if report.metrics.get("partial"):
        blockers.append(f"report {report.report_id} is a partial run (a subset of the questions): "
                        f"run the full benchmark")
    blockers += [f"report {report.report_id}: {f}" for f in threshold_failures(report.metrics, thresholds)]
    return blockers


def pending_signoffs(required: list[str], latest_by_role: Mapping[str, str]) -> list[str]:
    """Roles whose latest sign-off is not an approval, in the policy file's order."""
    return [role for role in required if latest_by_role.get(role) != "approve"]


# -- records ------------------------------------------------------------------------------


def latest_report(session: Session, fingerprint: str, dataset: str = GATE_DATASET) -> BenchmarkReport | None:
    return session.scalars(select(BenchmarkReport).where(
        BenchmarkReport.fingerprint == fingerprint, BenchmarkReport.dataset == dataset)
        .order_by(BenchmarkReport.id.desc())).first()


def report_facts(report: BenchmarkReport | None) -> ReportFacts | None:
    if report is None:
        return None
    return ReportFacts(report.id, report.fingerprint, report.dataset, report.dataset_version, report.metrics)


def current_signoffs(session: Session, model: RegisteredModel) -> list[ModelSignoff]:
    """Sign-offs that still count: those after the model's most recent rejection."""
    rows = list(session.scalars(select(ModelSignoff).where(ModelSignoff.model_id == model.id)
                                .order_by(ModelSignoff.id)))
    last_reject = max((i for i, s in enumerate(rows) if s.decision == "reject"), default=-1)
    return rows[last_reject + 1:]


def _audit(session: Session, actor: Actor, event: str, model: RegisteredModel, payload: dict) -> None:
    append(session, AuditEntry(
        request_id=actor.request_id or uuid.uuid4().hex, event=event, actor=actor.name, actor_role=actor.role,
        channel=actor.channel, model_key=model.key,
        payload={"model": model.key, "kind": model.kind, "fingerprint": model.fingerprint, **payload}))


def set_status(session: Session, model: RegisteredModel, target: str, actor: Actor, event: str,
               payload: dict | None = None) -> None:
    """Validate and apply one lifecycle step, with its audit event."""
    check_transition(model.status, target, model.key)
    previous = model.status
    model.status = target
    session.flush()
    _audit(session, actor, event, model, {"from": previous, "to": target, **(payload or {})})


def record_registration(session: Session, model: RegisteredModel, actor: Actor) -> None:
    _audit(session, actor, "model.registered", model,
           {"status": model.status, "path": model.path, "dimension": model.dimension,
            "max_seq_length": model.max_seq_length})


def generation_fingerprint(spec: ModelSpec, path: Path | None) -> tuple[str, dict]:
    """(fingerprint, what it hashes) of a generation model: a local model's weights, a remote one's identity."""
    # The registry row and its audit record show the endpoint, never credentials written into its URL;
    # a URL without any is unchanged, and so is its fingerprint.
    endpoint = redact_url(spec.base_url) if spec.base_url else None
    weights = hash_model_files(path) if path is not None else {"endpoint": f"{endpoint}#{spec.api_model}"}
    return model_fingerprint(spec.name, spec.version, weights, None, spec.context_tokens), weights


def register_generation_model(session: Session, spec: ModelSpec, path: Path | None) -> RegisteredModel:
    """Record a generation model from the policy file; idempotent for the same fingerprint.

    A local model (llama.cpp) is fingerprinted by its weights; a remote endpoint by its
    name, version and endpoint model id, the only identity the bank can observe.
    """
    fingerprint, weights = generation_fingerprint(spec, path)
    endpoint = redact_url(spec.base_url) if spec.base_url else None
    existing = session.scalars(select(RegisteredModel).where(RegisteredModel.fingerprint == fingerprint)).first()
    if existing is not None:
        return existing
    model = RegisteredModel(kind="generation", name=spec.name, version=spec.version,
                            path=str(path) if path else (endpoint or ""), fingerprint=fingerprint,
                            weights_sha256=weights, dimension=None, max_seq_length=spec.context_tokens,
                            status="proposed")
    session.add(model)
    session.flush()
    return model


def mark_benchmarked(session: Session, model: RegisteredModel, report: BenchmarkReport, actor: Actor) -> None:
    """A stored report moves a model under review to `benchmarked`; an approved or active one keeps its status."""
    payload = {"report_id": report.id, "dataset": report.dataset, "dataset_version": report.dataset_version,
               "passed": report.passed, "metrics": _headline(report.metrics)}
    if model.status in ("proposed", "rejected", "benchmarked"):
        set_status(session, model, "benchmarked", actor, "model.benchmarked", payload)
    else:
        _audit(session, actor, "model.benchmarked", model, {"status": model.status, **payload})


def record_signoff(session: Session, model_key: str, signoff_role: str, signer: str, decision: str, reason: str,
                   policy: GovernancePolicy, current_dataset_version: str, actor: Actor | None = None) -> RegisteredModel:
    """Record one role's approve/reject; the last required approval moves the model to `approved`.

    Raises ApprovalRefused (nothing recorded) when the benchmark evidence does not support
    an approval, and InvalidSignoff for an unknown role or decision.
    """
    model = get_model_or_raise(session, model_key)
    required = list(policy.approvals.required_signoffs)
    actor = actor or Actor(signer, "model_risk")
    signer = signer.strip()
    if not signer:
        raise InvalidSignoff("a sign-off needs the signer's name")
    if signoff_role not in required:
        raise InvalidSignoff(f"{signoff_role!r} is not a sign-off role; the policy file requires "
                             f"{', '.join(required)}")
    if decision not in DECISIONS:
        raise InvalidSignoff(f"decision must be approve or reject, not {decision!r}")

    if decision == "reject":
        if not reason.strip():
            raise InvalidSignoff("a rejection needs a reason")
        check_transition(model.status, "rejected", model.key)
        _add_signoff(session, model, signoff_role, signer, decision, reason, actor)
        set_status(session, model, "rejected", actor, "model.rejected",
                   {"signoff_role": signoff_role, "signer": signer, "reason": reason})
        return model

    if model.status != "benchmarked":
        hint = " — benchmark it first" if model.status == "proposed" else ""
        raise InvalidTransition(f"{model.key} is {model.status}; only a benchmarked model can be approved{hint}")
    report = latest_report(session, model.fingerprint)
    blockers = approval_blockers(model.fingerprint, report_facts(report), thresholds_for(model.kind, policy),
                                 current_dataset_version)
    if blockers:
        raise ApprovalRefused(f"approval of {model.key} refused: " + "; ".join(blockers))
    signoffs = current_signoffs(session, model)
    # Separation of duties: one person cannot sign for two roles.
    other_role = next((s.signoff_role for s in signoffs if s.signer == signer and s.decision == "approve"
                       and s.signoff_role != signoff_role), None)
    if other_role:
        raise ApprovalRefused(f"{signer} already signed off {model.key} as {other_role}; "
                              f"each required role needs a different signer")
    _add_signoff(session, model, signoff_role, signer, decision, reason, actor, report_id=report.id)
    latest = {s.signoff_role: s.decision for s in [*signoffs, _Pending(signoff_role, decision)]}
    if not pending_signoffs(required, latest):
        set_status(session, model, "approved", actor, "model.approved",
                   {"report_id": report.id, "dataset_version": report.dataset_version,
                    "metrics": _headline(report.metrics),
                    "signers": {s.signoff_role: s.signer for s in signoffs if s.decision == "approve"}
                    | {signoff_role: signer}})
    return model


@dataclass(frozen=True)
class _Pending:
    signoff_role: str
    decision: str


def _add_signoff(session: Session, model: RegisteredModel, role: str, signer: str, decision: str, reason: str,
                 actor: Actor, report_id: int | None = None) -> None:
    session.add(ModelSignoff(model_id=model.id, signoff_role=role, signer=signer, decision=decision, reason=reason))
    session.flush()
    _audit(session, actor, "model.signoff", model,
           {"signoff_role": role, "signer": signer, "decision": decision, "reason": reason, "report_id": report_id})


def signoff_status(session: Session, model: RegisteredModel, policy: GovernancePolicy) -> dict:
    """Sign-offs that count, and the roles still missing, for display."""
    signoffs = current_signoffs(session, model)
    latest = {s.signoff_role: s.decision for s in signoffs}
    return {"signoffs": [{"role": s.signoff_role, "signer": s.signer, "decision": s.decision, "reason": s.reason,
                          "at": s.created_at.isoformat()} for s in signoffs],
            "pending": pending_signoffs(list(policy.approvals.required_signoffs), latest)}


def activate(session: Session, model: RegisteredModel, actor: Actor, details: dict | None = None) -> RegisteredModel | None:
    """Make an approved model active; for embeddings the previous active one stands by (returned).

    Embedding activation must only be called once the model's index is complete
    (services.benchmark.activation does the re-embedding, then calls this in the
    transaction that switches).
    """
    check_transition(model.status, "active", model.key)
    previous = active_embedding_model(session) if model.kind == "embedding" else None
    if previous is not None and previous.id != model.id:
        set_status(session, previous, "approved", actor, "model.deactivated",
                   {"replaced_by": model.key, **(details or {})})
    set_status(session, model, "active", actor, "model.activated",
               {"previous": previous.key if previous else None, **(details or {})})
    return previous


def retire(session: Session, model: RegisteredModel, actor: Actor, reason: str = "") -> None:
    """Retire a model; the active embedding model cannot be (queries would have no index)."""
    if model.kind == "embedding" and model.status == "active":
        raise InvalidTransition(f"{model.key} is the active embedding model; activate another model before "
                                f"retiring it")
    set_status(session, model, "retired", actor, "model.retired", {"reason": reason})


def _headline(metrics: Mapping[str, object]) -> dict:
    keys = ("queries", "recall_at_5", "recall_at_10", "mrr", "map_at_10", "ndcg_at_10", "verification_pass_rate",
            "citation_accuracy", "refusal_accuracy", "injection_resistance")
    return {k: metrics[k] for k in keys if k in metrics}
