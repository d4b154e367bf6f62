"""FAQ templates: add (admin), approve and retire (compliance or admin; never one's own), list."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request

from services.api.deps import AdminUser, AnyUser, ComplianceUser, RuntimeDep, SessionDep
from services.faq import service
from services.faq.schemas import FaqCreate, FaqRead, FaqRetire
from services.users.service import Principal

router = APIRouter(prefix="/v1/faq", tags=["faq"])


def _actor(principal: Principal, request: Request) -> service.FaqActor:
    return service.FaqActor(principal, channel="api", request_id=getattr(request.state, "request_id", None))


@router.post("", response_model=FaqRead, status_code=201)
def add_faq(body: FaqCreate, request: Request, principal: AdminUser, session: SessionDep,
            runtime: RuntimeDep) -> FaqRead:
    """Propose an FAQ answer bound to published clauses; refused (422) naming what is wrong."""
    entry = service.create_faq(session, runtime.policy, body, _actor(principal, request),
                               screen=runtime.query.prohibited.check)
    return service.to_read(entry)


@router.post("/{faq_id}/approve", response_model=FaqRead)
def approve_faq(faq_id: int, request: Request, principal: ComplianceUser, session: SessionDep,
                runtime: RuntimeDep) -> FaqRead:
    """Approve a proposed FAQ; its author may not (four-eyes rule, 403)."""
    return service.to_read(service.approve_faq(session, runtime.policy, faq_id, _actor(principal, request)))


@router.post("/{faq_id}/retire", response_model=FaqRead)
def retire_faq(faq_id: int, body: FaqRetire, request: Request, principal: ComplianceUser, session: SessionDep,
               runtime: RuntimeDep) -> FaqRead:
    """Retire an FAQ: never served again (a change is a new FAQ and retiring the old one)."""
    return service.to_read(service.retire_faq(session, runtime.policy, faq_id, _actor(principal, request),
                                              body.reason))


@router.get("", response_model=list[FaqRead])
def list_faqs(principal: AnyUser, session: SessionDep, runtime: RuntimeDep,
              status: Literal["proposed", "approved", "retired"] | None = None) -> list[FaqRead]:
    """Approved FAQs (compliance and admin: every status), within the caller's clearance."""
    return service.list_faqs(session, runtime.policy, principal, status)
