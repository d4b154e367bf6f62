"""Model registry (roles model_risk, admin)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from governance.records.models import RegisteredModel
from services.api.deps import ModelRiskUser, SessionDep

router = APIRouter(prefix="/v1/registry", tags=["models"])


@router.get("/models")
def list_registered(principal: ModelRiskUser, session: SessionDep) -> list[dict]:
    """Registered embedding and generation models with their lifecycle status."""
    rows = session.scalars(select(RegisteredModel).order_by(RegisteredModel.id)).all()
    return [{"name": r.name, "version": r.version, "kind": r.kind, "status": r.status,
             "fingerprint": r.fingerprint, "dimension": r.dimension, "max_seq_length": r.max_seq_length,
             "created_at": r.created_at.isoformat()} for r in rows]
