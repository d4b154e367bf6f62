"""Compliance review of the audit trail (roles compliance, admin)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from governance.audit import load_checkpoints, verify_all_chains
from governance.audit_query import (
    AuditFilter,
    export_csv,
    export_jsonl,
    get_by_request_id,
    iter_records,
    list_records,
    record_to_dict,
)
from services.api.deps import ComplianceUser, RuntimeDep, SessionDep
from services.errors import NotFound

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class AuditQuery(BaseModel):
    since: datetime | None = None
    until: datetime | None = None
    user: str | None = None
    role: str | None = None
    classification: str | None = None
    tier: int | None = None
    model: str | None = None
    refused: bool | None = None
    pii: bool | None = None
    policy_id: str | None = None
    q: str | None = None
    event: str | None = None

    def to_filter(self) -> AuditFilter:
        return AuditFilter(since=self.since, until=self.until, actor=self.user, actor_role=self.role,
                           classification=self.classification, tier=self.tier, model_key=self.model,
                           refused=self.refused, pii_present=self.pii, policy_id=self.policy_id, text=self.q,
                           event=self.event)


QueryDep = Annotated[AuditQuery, Depends()]


@router.get("")
def list_audit(principal: ComplianceUser, session: SessionDep, query: QueryDep,
               limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)) -> dict:
    """Audit records matching the filters, newest first, with the total count."""
    records, total = list_records(session, query.to_filter(), limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset,
            "records": [record_to_dict(r, include_payload=False) for r in records]}


@router.get("/verify")
def verify(principal: ComplianceUser, session: SessionDep, runtime: RuntimeDep) -> dict:
    """Verify every audit chain (and any stored checkpoints) end to end; `ok` only when all hold.

    The top-level records, seq, hash and reason are the main chain's; `chains` has every chain's.
    """
    checkpoints = load_checkpoints(runtime.settings.checkpoint_file)
    key = runtime.settings.audit_hmac_key.get_secret_value().encode()
    verified = verify_all_chains(session, checkpoints, key=key)
    main = verified.main
    return {"ok": verified.ok, "records": main.records, "first_bad_seq": main.first_bad_seq,
            "reason": main.reason, "head_seq": main.head_seq, "head_hash": main.head_hash,
            "checkpoints": len(checkpoints),
            "chains": [{"chain": chain, **asdict(result)} for chain, result in verified.chains.items()]}


@router.get("/export")
def export(principal: ComplianceUser, runtime: RuntimeDep, query: QueryDep,
           format: Literal["csv", "jsonl"] = "jsonl") -> StreamingResponse:
    """Stream the filtered records as CSV or JSON lines."""
    flt = query.to_filter()

    def stream():  # noqa: ANN202
        with runtime.session_factory() as session:
            records = iter_records(session, flt)
            yield from (export_csv(records) if format == "csv" else export_jsonl(records))

    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(stream(), media_type=media,
                             headers={"content-disposition": f"attachment; filename=audit.{format}"})


@router.get("/{request_id}")
def show(request_id: str, principal: ComplianceUser, session: SessionDep) -> dict:
    """The full trace of one request."""
    record = get_by_request_id(session, request_id)
    if record is None:
        raise NotFound(f"no audit record for request {request_id!r}")
    return record_to_dict(record, include_payload=True)
