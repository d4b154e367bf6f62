"""Users, roles and API keys. Keys are shown once and stored only as SHA-256."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.models import ROLES, User
from services.errors import Forbidden, InvalidRequest, Unauthenticated

KEY_PREFIX = "phk_"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, as handed to services."""

    id: int
    name: str
    role: str
    clearance: str


def hash_api_key(key: str) -> str:
    # Keys are 256-bit random tokens, so a plain SHA-256 is not brute-forceable.
    return hashlib.sha256(key.encode()).hexdigest()


def create_user(session: Session, name: str, role: str, clearance: str, classifications: list[str]) -> tuple[User, str]:
    """Add a user; returns the user and the API key, which is never stored in clear."""
    name = name.strip()
    if not name:
        raise InvalidRequest("user name must not be empty")
    if role not in ROLES:
        raise InvalidRequest(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if clearance not in classifications:
        raise InvalidRequest(f"unknown clearance {clearance!r}; expected one of {', '.join(classifications)}")
    if session.scalars(select(User).where(User.name == name)).first() is not None:
        raise InvalidRequest(f"user {name!r} already exists")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    user = User(name=name, role=role, clearance=clearance, api_key_sha256=hash_api_key(key), key_prefix=key[:10])
    session.add(user)
    session.flush()
    return user, key


def authenticate(session: Session, key: str | None) -> Principal:
    if not key:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'")
    user = session.scalars(select(User).where(User.api_key_sha256 == hash_api_key(key), User.active.is_(True))).first()
    if user is None:
        raise Unauthenticated("invalid API key")
    return Principal(id=user.id, name=user.name, role=user.role, clearance=user.clearance)


def require_role(principal: Principal, allowed: tuple[str, ...]) -> Principal:
    if principal.role not in allowed:
        raise Forbidden(f"role {principal.role!r} may not do this; needs one of {', '.join(allowed)}")
    return principal


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id)))
