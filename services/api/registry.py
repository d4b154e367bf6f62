"""Model registry, sign-offs, benchmark reports and drift (roles model_risk and admin; admin activates)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from governance.approvals import Actor
from governance.drift import compare_windows, drift_settings, load_live_samples
from services.api.deps import AdminUser, ModelRiskUser, RuntimeDep, SessionDep
from services.benchmark import service
from services.users.service import Principal

router = APIRouter(prefix="/v1/registry", tags=["models"])
drift_router = APIRouter(prefix="/v1/drift", tags=["drift"])


class SignoffCreate(BaseModel):
    signoff_role: str = Field(description="One of the policy file's approvals.required_signoffs")
    reason: str = Field(default="", max_length=4000, description="Why; required for a rejection")


class RetireCreate(BaseModel):
    reason: str = Field(default="", max_length=4000)


def _actor(principal: Principal, request: Request) -> Actor:
    return Actor(principal.name, principal.role, channel="api", request_id=getattr(request.state, "request_id", None))


@router.get("/models")
def list_registered(principal: ModelRiskUser, session: SessionDep, runtime: RuntimeDep) -> list[dict]:
    """Registered embedding and generation models: status, latest gold report, pending sign-offs."""
    return service.list_models(session, runtime.policy)


@router.get("/models/{model_key}")
def show_model(model_key: str, principal: ModelRiskUser, session: SessionDep, runtime: RuntimeDep) -> dict:
    """One model with its sign-offs and every benchmark report of its fingerprint."""
    return service.show_model(session, model_key, runtime.policy)


@router.post("/models/{model_key}/approve")
def approve_model(model_key: str, body: SignoffCreate, request: Request, principal: ModelRiskUser,
                  session: SessionDep, runtime: RuntimeDep) -> dict:
    """Record an approval for one sign-off role; refused (409) when the benchmark evidence misses the policy."""
    from services.benchmark.runner import gold_dataset_version

    return service.sign_off(session, runtime.policy, model_key, body.signoff_role, "approve", body.reason,
                            _actor(principal, request), gold_dataset_version())


@router.post("/models/{model_key}/reject")
def reject_model(model_key: str, body: SignoffCreate, request: Request, principal: ModelRiskUser,
                 session: SessionDep, runtime: RuntimeDep) -> dict:
    """Reject a model for one sign-off role (a reason is required)."""
    from services.benchmark.runner import gold_dataset_version

    return service.sign_off(session, runtime.policy, model_key, body.signoff_role, "reject", body.reason,
                            _actor(principal, request), gold_dataset_version())


@router.post("/models/{model_key}/activate")
def activate_model(model_key: str, request: Request, principal: AdminUser, runtime: RuntimeDep) -> dict:
    """Activate an approved model; an embedding model is re-embedded into its own index first (blue/green)."""
    from services.benchmark.activation import activate_model as activate

    result = activate(runtime.session_factory, runtime.index, runtime.policy, model_key, _actor(principal, request),
                      batch_size=runtime.settings.embedding_batch_size)
    return {"model": result.model_key, "status": "active", "previous": result.previous_key,
            "index": result.index_name, "versions": result.versions, "points": result.points,
            "seconds": result.seconds}


@router.post("/models/{model_key}/retire")
def retire_model(model_key: str, body: RetireCreate, request: Request, principal: AdminUser,
                 runtime: RuntimeDep) -> dict:
    """Retire a model; an embedding model's index is dropped (the active one cannot be retired)."""
    from services.benchmark.activation import retire_model as retire

    if runtime.identity is not None and model_key == runtime.identity.key:
        # this process serves from that model's index: keep it until the process is restarted on another
        return retire(runtime.session_factory, None, model_key, _actor(principal, request), body.reason)
    return retire(runtime.session_factory, runtime.index, model_key, _actor(principal, request), body.reason)


@router.get("/models/{model_key}/reports")
def model_reports(model_key: str, principal: ModelRiskUser, session: SessionDep) -> list[dict]:
    """Benchmark reports stored against the model's fingerprint, newest first."""
    from governance.registry import get_model_or_raise

    return service.list_reports(session, get_model_or_raise(session, model_key).fingerprint)


@router.get("/reports/{report_id}")
def report_json(report_id: int, principal: ModelRiskUser, session: SessionDep) -> dict:
    """A stored benchmark report (JSON)."""
    import json

    return json.loads(service.get_report(session, report_id).report_json)


@router.get("/reports/{report_id}/html", response_class=HTMLResponse)
def report_html(report_id: int, principal: ModelRiskUser, session: SessionDep) -> HTMLResponse:
    """A stored benchmark report as its self-contained HTML page."""
    return HTMLResponse(service.get_report(session, report_id).report_html,
                        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:"})


@drift_router.get("/alerts")
def drift_alerts(principal: ModelRiskUser, session: SessionDep,
                 limit: int = Query(default=100, ge=1, le=1000)) -> list[dict]:
    """Recorded drift alerts, newest first."""
    return service.list_alerts(session, limit)


@drift_router.get("/status")
def drift_status(principal: ModelRiskUser, session: SessionDep, runtime: RuntimeDep,
                 window_days: float = Query(default=7.0, gt=0, le=365)) -> dict:
    """Live signals of the last window against the one before (nothing recorded; `drift run` records alerts)."""
    now = datetime.now(UTC)
    window = timedelta(days=window_days)
    alpha, min_samples = drift_settings(runtime.policy.drift)
    shifts = compare_windows(load_live_samples(session, now - 2 * window, now - window),
                             load_live_samples(session, now - window, now), alpha, min_samples)
    status: Literal["ok", "shift"] = "shift" if any(s.significant for s in shifts) else "ok"
    return {"status": status, "window_days": window_days, "alpha": alpha, "min_samples": min_samples,
            "shifts": [s.as_dict() for s in shifts], "recent_alerts": service.list_alerts(session, 10)}
