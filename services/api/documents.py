"""Policy documents: upload (admin) and listing."""

from __future__ import annotations

import json
from datetime import date

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import select

from services.api.deps import AdminUser, AnyUser, RuntimeDep, SessionDep
from services.db.models import DocumentVersion
from services.errors import DocumentRejected, NotFound
from governance.residency import visible_classifications

router = APIRouter(prefix="/v1/documents", tags=["documents"])


class VersionRead(BaseModel):
    policy_id: str
    version: str
    title: str
    owner: str
    classification: str
    effective_date: date
    status: str
    clauses: int
    chunks: int
    content_sha256: str


class IngestRead(BaseModel):
    status: str
    policy_id: str | None
    version: str | None
    clauses: int
    chunks: int


def _read(v: DocumentVersion) -> VersionRead:
    return VersionRead(policy_id=v.policy_id, version=v.version, title=v.title, owner=v.owner,
                       classification=v.classification, effective_date=v.effective_date, status=v.status,
                       clauses=v.clause_count, chunks=v.chunk_count, content_sha256=v.content_sha256)


@router.post("", response_model=IngestRead, status_code=201)
async def upload_document(request: Request, principal: AdminUser, runtime: RuntimeDep,
                          file: UploadFile = File(...), metadata: str | None = Form(None)) -> IngestRead:
    """Upload one policy document; metadata (JSON) overrides what the file itself declares."""
    limit = runtime.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise DocumentRejected(f"{file.filename}: upload is over the {limit:,}-byte limit")
    try:
        overrides = json.loads(metadata) if metadata else {}
    except json.JSONDecodeError as exc:
        raise DocumentRejected(f"{file.filename}: metadata is not valid JSON: {exc.msg}") from exc
    if not isinstance(overrides, dict):
        raise DocumentRejected(f"{file.filename}: metadata must be a JSON object")
    # Passed as sent: resolve_metadata reads null or "" as "no override", as for an unset CLI
    # option, and rejects a list, object or boolean naming the field (str() made null "None").
    result = await run_in_threadpool(runtime.ingestion.ingest_bytes, file.filename or "upload", data,
                                     overrides, None, principal, request.state.request_id)
    return IngestRead(status=result.status, policy_id=result.policy_id, version=result.version,
                      clauses=result.clauses, chunks=result.chunks)


@router.get("", response_model=list[VersionRead])
def list_documents(principal: AnyUser, session: SessionDep, runtime: RuntimeDep) -> list[VersionRead]:
    """Active policy versions the caller's clearance allows."""
    allowed = visible_classifications(principal.clearance, runtime.policy)
    rows = session.scalars(select(DocumentVersion).where(
        DocumentVersion.status == "active", DocumentVersion.classification.in_(allowed))
        .order_by(DocumentVersion.policy_id)).all()
    return [_read(v) for v in rows]


@router.get("/{policy_id}/versions", response_model=list[VersionRead])
def list_versions(policy_id: str, principal: AnyUser, session: SessionDep, runtime: RuntimeDep) -> list[VersionRead]:
    """Every published version of one policy, newest effective date first."""
    allowed = visible_classifications(principal.clearance, runtime.policy)
    rows = session.scalars(select(DocumentVersion).where(
        DocumentVersion.policy_id == policy_id, DocumentVersion.status.in_(("active", "superseded")),
        DocumentVersion.classification.in_(allowed)).order_by(DocumentVersion.effective_date.desc())).all()
    if not rows:
        raise NotFound(f"no policy {policy_id!r} visible to you")
    return [_read(v) for v in rows]
