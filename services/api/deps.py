"""Dependencies: the runtime, a request-scoped session, and the authenticated caller."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from services.db.models import ROLES
from services.runtime import Runtime
from services.users.service import Principal, authenticate, require_role

ALL_ROLES = ROLES
COMPLIANCE_ROLES = ("compliance", "admin")
MODEL_RISK_ROLES = ("model_risk", "admin")
ADMIN_ROLES = ("admin",)


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    """The request owns the transaction: commit on success, roll back on error."""
    session = runtime.session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def api_key_from(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    # No cookie here: a cookie-authenticated API would need CSRF protection; the web
    # pages have their own signed session (services/web/session.py).
    return request.headers.get("x-api-key") or None


def get_principal(request: Request, runtime: RuntimeDep) -> Principal:
    with runtime.session_factory() as session:
        principal = authenticate(session, api_key_from(request))
    request.state.principal = principal
    return principal


def role_required(*roles: str) -> Callable[..., Principal]:
    def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        return require_role(principal, roles)

    return dependency


AnyUser = Annotated[Principal, Depends(role_required(*ALL_ROLES))]
ComplianceUser = Annotated[Principal, Depends(role_required(*COMPLIANCE_ROLES))]
ModelRiskUser = Annotated[Principal, Depends(role_required(*MODEL_RISK_ROLES))]
AdminUser = Annotated[Principal, Depends(role_required(*ADMIN_ROLES))]
