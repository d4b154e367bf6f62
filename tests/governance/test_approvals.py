"""Model lifecycle and the approval gate, against a real (migrated) database and the real audit chain."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import select

from governance.approvals import (
    TRANSITIONS,
    Actor,
    ApprovalRefused,
    InvalidSignoff,
    InvalidTransition,
    ReportFacts,
    activate,
    approval_blockers,
    check_transition,
    mark_benchmarked,
    record_registration,
    record_signoff,
    register_generation_model,
    retire,
    signoff_status,
)
from governance.audit import verify_chain
from governance.policy import load_policy
from governance.records.audit import AuditRecord
from governance.records.models import BenchmarkReport, ModelSignoff, RegisteredModel
from governance.registry import register_embedding_model
from services.db.session import make_engine, make_session_factory, transaction, upgrade

POLICY = load_policy()
PASSING = {"queries": 170, "recall_at_5": 0.93, "recall_at_10": 0.97, "mrr": 0.81}
ACTOR = Actor("cli:tester", "model_risk")


# -- pure decisions -----------------------------------------------------------------------


@pytest.mark.unit
def test_lifecycle_transitions():
    check_transition("proposed", "benchmarked")
    check_transition("benchmarked", "approved")
    check_transition("approved", "active")
    check_transition("active", "retired")
    for current, target in [("proposed", "approved"), ("proposed", "active"), ("benchmarked", "active"),
                            ("retired", "active"), ("rejected", "approved")]:
        with pytest.raises(InvalidTransition, match=f"is {current}; it cannot become {target}"):
            check_transition(current, target)
    assert TRANSITIONS["retired"] == frozenset()
    # every status can reach `active` only through `approved`
    assert all("active" not in nxt for status, nxt in TRANSITIONS.items() if status != "approved")


@pytest.mark.unit
def test_approval_blockers_name_every_reason():
    thresholds = POLICY.approvals.embedding_thresholds
    fp = "a" * 64
    assert "no gold benchmark report" in approval_blockers(fp, None, thresholds, "1.0.0")[0]
    good = ReportFacts(7, fp, "gold", "1.0.0", PASSING)
    assert approval_blockers(fp, good, thresholds, "1.0.0") == []
    stale = ReportFacts(7, fp, "gold", "0.9.0", PASSING)
    assert approval_blockers(fp, stale, thresholds, "1.0.0") == [
        "report 7 was run on gold dataset version 0.9.0; the current version is 1.0.0: re-run the benchmark"]
    weak = ReportFacts(8, fp, "gold", "1.0.0", {**PASSING, "recall_at_5": 0.88, "mrr": 0.5})
    assert approval_blockers(fp, weak, thresholds, "1.0.0") == [
        "report 8: mrr 0.5000 is below the required 0.7", "report 8: recall_at_5 0.8800 is below the required 0.9"]
    other = ReportFacts(9, "b" * 64, "gold", "1.0.0", PASSING)
    assert "not this model's" in approval_blockers(fp, other, thresholds, "1.0.0")[0]


# -- against the database -----------------------------------------------------------------


@pytest.fixture
def factory(tmp_path):
    url = f"sqlite:///{tmp_path / 'approvals.db'}"
    upgrade(url)
    return make_session_factory(make_engine(url))


def _register(session, tmp_path, version: str) -> RegisteredModel:
    weights = tmp_path / f"w{version}"
    weights.mkdir(exist_ok=True)
    (weights / "model.safetensors").write_bytes(f"weights {version}".encode())
    return register_embedding_model(session, name="mini", version=version, path=weights, dimension=4,
                                    max_seq_length=16, embed=lambda texts: np.ones((len(texts), 4)))


def _report(session, model: RegisteredModel, metrics: dict, dataset_version: str = "1.0.0") -> BenchmarkReport:
    report = BenchmarkReport(model_key=model.key, fingerprint=model.fingerprint, kind=model.kind, dataset="gold",
                             dataset_version=dataset_version, split="all", metrics=metrics, passed=True,
                             report_json="{}", report_html="<html></html>")
    session.add(report)
    session.flush()
    mark_benchmarked(session, model, report, ACTOR)
    return report


def _sign(session, key, role, signer, decision="approve", reason="ok"):
    return record_signoff(session, key, role, signer, decision, reason, POLICY, "1.0.0", ACTOR)


def _events(session) -> list[str]:
    return [r.event for r in session.scalars(select(AuditRecord).order_by(AuditRecord.seq))]


@pytest.mark.integration
def test_approval_needs_current_passing_evidence_and_every_role(factory, tmp_path):
    with transaction(factory) as s:
        model = _register(s, tmp_path, "1")
        key = model.key
    with pytest.raises(InvalidTransition, match="benchmark it first"), transaction(factory) as s:
        _sign(s, key, "model_risk", "mira")

    with transaction(factory) as s:
        _report(s, s.get(RegisteredModel, model.id), {**PASSING, "recall_at_5": 0.80})
    with pytest.raises(ApprovalRefused, match=r"recall_at_5 0\.8000 is below the required 0\.9"), \
            transaction(factory) as s:
        _sign(s, key, "model_risk", "mira")
    with transaction(factory) as s:  # a passing report, but on an older gold dataset
        _report(s, s.get(RegisteredModel, model.id), PASSING, dataset_version="0.9.0")
    with pytest.raises(ApprovalRefused, match="gold dataset version 0.9.0; the current version is 1.0.0"), \
            transaction(factory) as s:
        _sign(s, key, "model_risk", "mira")
    with transaction(factory) as s:
        assert s.scalars(select(ModelSignoff)).all() == []  # refusals record nothing
        _report(s, s.get(RegisteredModel, model.id), PASSING)

    with pytest.raises(InvalidSignoff, match="not a sign-off role"), transaction(factory) as s:
        _sign(s, key, "ceo", "someone")
    with transaction(factory) as s:
        _sign(s, key, "enterprise_architecture", "erin")
        assert s.get(RegisteredModel, model.id).status == "benchmarked"
    with pytest.raises(ApprovalRefused, match="erin already signed off .* as enterprise_architecture"), \
            transaction(factory) as s:
        _sign(s, key, "information_security", "erin")
    with transaction(factory) as s:
        _sign(s, key, "information_security", "ivan")
        assert signoff_status(s, s.get(RegisteredModel, model.id), POLICY)["pending"] == ["model_risk"]
        _sign(s, key, "model_risk", "mira")
        row = s.get(RegisteredModel, model.id)
        assert row.status == "approved"
        events = _events(s)
        assert events.count("model.benchmarked") == 3 and events.count("model.signoff") == 3
        assert events[-1] == "model.approved"
        approved = json.loads(s.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc())).first().payload)
        assert approved["signers"] == {"enterprise_architecture": "erin", "information_security": "ivan",
                                       "model_risk": "mira"}
        assert approved["metrics"]["recall_at_5"] == 0.93
        assert verify_chain(s).ok


@pytest.mark.integration
def test_a_rejection_resets_the_signoffs(factory, tmp_path):
    with transaction(factory) as s:
        model = _register(s, tmp_path, "1")
        _report(s, model, PASSING)
        _sign(s, model.key, "enterprise_architecture", "erin")
        _sign(s, model.key, "information_security", "ivan")
    with pytest.raises(InvalidSignoff, match="needs a reason"), transaction(factory) as s:
        _sign(s, model.key, "model_risk", "mira", "reject", " ")
    with transaction(factory) as s:
        _sign(s, model.key, "model_risk", "mira", "reject", "latency too high for branch use")
        assert s.get(RegisteredModel, model.id).status == "rejected"
        _report(s, s.get(RegisteredModel, model.id), PASSING)  # a fresh benchmark reopens the review
        assert s.get(RegisteredModel, model.id).status == "benchmarked"
        _sign(s, model.key, "model_risk", "mira")
        # the earlier approvals predate the rejection and no longer count
        assert s.get(RegisteredModel, model.id).status == "benchmarked"
        assert signoff_status(s, s.get(RegisteredModel, model.id), POLICY)["pending"] == [
            "enterprise_architecture", "information_security"]


@pytest.mark.integration
def test_activation_hands_over_and_the_active_model_cannot_be_retired(factory, tmp_path):
    with transaction(factory) as s:
        old, new = _register(s, tmp_path, "1"), _register(s, tmp_path, "2")
        for m in (old, new):
            _report(s, m, PASSING)
            for role, who in zip(POLICY.approvals.required_signoffs, ("erin", "ivan", "mira"), strict=True):
                _sign(s, m.key, role, who)
        assert activate(s, old, ACTOR) is None
        with pytest.raises(InvalidTransition, match="activate another model before retiring"):
            retire(s, old, ACTOR)
        assert activate(s, new, ACTOR).id == old.id
        assert (old.status, new.status) == ("approved", "active")
        retire(s, old, ACTOR, "replaced by mini@2")
        assert old.status == "retired"
        with pytest.raises(InvalidTransition):
            activate(s, old, ACTOR)
        assert _events(s)[-4:] == ["model.activated", "model.deactivated", "model.activated", "model.retired"]
        assert verify_chain(s).ok


@pytest.mark.integration
def test_a_remote_model_is_registered_without_its_endpoint_credentials(factory):
    spec = POLICY.model("onprem-large@1").model_copy(
        update={"base_url": "https://svc:pa55word@llm.bank.internal/v1?api_key=k3y-in-url"})
    with transaction(factory) as session:
        model = register_generation_model(session, spec, None)
        record_registration(session, model, ACTOR)
    with factory() as session:
        model = session.scalars(select(RegisteredModel).where(RegisteredModel.fingerprint == model.fingerprint)).one()
        shown = json.dumps([model.path, model.weights_sha256,
                            [r.payload for r in session.scalars(select(AuditRecord))]])
    assert "llm.bank.internal/v1" in model.path
    assert "pa55word" not in shown and "k3y-in-url" not in shown
