"""Browser sign-in: an API key is exchanged once for a signed session cookie.

The cookie never holds the API key. It holds the user id, a random session id (the
CSRF token is derived from it), the issue time and a binding to the user's current
key hash, all signed with HMAC-SHA256 under `settings.session_secret`. Rotating or
deactivating a user's key therefore ends every browser session of that user, and a
cookie forged or altered without the secret is ignored. Signing out records the session
id as revoked until the cookie would have expired anyway, so a copy of the cookie taken
before is refused after; the user's other sessions carry on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request, Response
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.db.models import RevokedWebSession, User
from services.users.service import Principal, authenticate

SESSION_COOKIE = "policyhub_session"
SESSION_MAX_AGE_S = 8 * 3600  # one working day; then sign in again
CLOCK_SKEW_S = 60  # between workers, tolerated on both sides of a session's lifetime
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


@dataclass(frozen=True)
class WebSession:
    user_id: int
    sid: str
    issued_at: int
    key_binding: str


def derive_key(secret: str, purpose: str) -> bytes:
    """One secret, separate keys per purpose, so a session signature is never a valid CSRF token."""
    return hmac.new(secret.encode(), f"policyhub-web:{purpose}".encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_binding(secret: str, api_key_sha256: str) -> str:
    # Bound to the stored hash but not equal to it: the cookie reveals nothing of the key.
    return hmac.new(derive_key(secret, "key-binding"), api_key_sha256.encode(), hashlib.sha256).hexdigest()[:32]


def encode_session(secret: str, session: WebSession) -> str:
    body = _b64(json.dumps({"u": session.user_id, "s": session.sid, "t": session.issued_at,
                            "k": session.key_binding}, separators=(",", ":")).encode())
    mac = hmac.new(derive_key(secret, "session"), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def decode_session(secret: str, token: str | None, now: float | None = None,
                   max_age_s: int = SESSION_MAX_AGE_S) -> WebSession | None:
    """The session in a cookie, or None when it is missing, altered, malformed or expired."""
    if not token or token.count(".") != 1 or len(token) > 1024:
        return None
    body, mac = token.split(".")
    expected = hmac.new(derive_key(secret, "session"), body.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _unb64(mac)):
            return None
        data = json.loads(_unb64(body))
        session = WebSession(user_id=int(data["u"]), sid=str(data["s"]), issued_at=int(data["t"]),
                             key_binding=str(data["k"]))
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None
    age = (time.time() if now is None else now) - session.issued_at
    if age < -CLOCK_SKEW_S or age > max_age_s:
        return None
    return session


def start_session(db: Session, secret: str, api_key: str | None) -> tuple[Principal, str]:
    """Check an API key (raises Unauthenticated) and return the principal and a new cookie value."""
    principal = authenticate(db, (api_key or "").strip() or None)
    user = db.get(User, principal.id)
    session = WebSession(user_id=user.id, sid=secrets.token_urlsafe(18), issued_at=int(time.time()),
                         key_binding=key_binding(secret, user.api_key_sha256))
    return principal, encode_session(secret, session)


def session_principal(db: Session, secret: str, session: WebSession) -> Principal | None:
    """The user behind a valid session, if not signed out, still active and still holding the same key."""
    if db.get(RevokedWebSession, session.sid) is not None:  # one primary-key lookup per request
        return None
    user = db.scalars(select(User).where(User.id == session.user_id, User.active.is_(True))).first()
    if user is None or not hmac.compare_digest(key_binding(secret, user.api_key_sha256), session.key_binding):
        return None
    return Principal(id=user.id, name=user.name, role=user.role, clearance=user.clearance)


def end_session(db: Session, session: WebSession, now: float | None = None) -> None:
    """Refuse this session from now on, until its cookie would have expired anyway.

    Revocations past that point can no longer matter, so each sign-out first deletes them
    (an indexed range delete): the table holds at most a working day of sign-outs.
    """
    now = time.time() if now is None else now
    db.execute(delete(RevokedWebSession).where(RevokedWebSession.expires_at < datetime.fromtimestamp(now, UTC)))
    # Another worker's clock may run behind ours: keep the row until its expiry too.
    expires_at = datetime.fromtimestamp(session.issued_at + SESSION_MAX_AGE_S + CLOCK_SKEW_S, UTC)
    db.add(RevokedWebSession(sid=session.sid, expires_at=expires_at))


def cookie_is_secure(request: Request) -> bool:
    """Secure everywhere except plain http on the loopback in dev or test, where a developer runs `policyhub serve`.

    In prod the answer never depends on the request: behind a proxy that forwards plain http
    to 127.0.0.1 (nginx sends the upstream's name as Host by default) every request looks local.
    """
    if request.app.state.runtime.settings.env == "prod":
        return True
    return not (request.url.scheme == "http" and (request.url.hostname or "") in LOCAL_HOSTS)


def set_session_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(SESSION_COOKIE, value, max_age=SESSION_MAX_AGE_S, path="/", httponly=True,
                        samesite="strict", secure=cookie_is_secure(request))


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=cookie_is_secure(request))
