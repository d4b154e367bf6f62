"""CSRF tokens: one per browser session, required on every state-changing request.

The token is an HMAC of the session id, so it needs no server-side store and dies with
the session. Forms send it as the `csrf_token` field, scripts as the `X-CSRF-Token`
header. The sign-in form, which has no session yet, uses a double-submit cookie.
SameSite=Strict cookies already stop most cross-site posts; the token is the second,
independent lock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request

from services.web.session import derive_key

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOGIN_CSRF_COOKIE = "policyhub_login_csrf"


class CsrfRejected(Exception):
    """A state-changing request arrived without the session's CSRF token."""


def csrf_token_for(secret: str, sid: str) -> str:
    return hmac.new(derive_key(secret, "csrf"), sid.encode(), hashlib.sha256).hexdigest()


def tokens_match(expected: str | None, supplied: str | None) -> bool:
    if not expected or not supplied:
        return False
    return hmac.compare_digest(expected.encode(), supplied.encode())


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


async def supplied_token(request: Request) -> str | None:
    """The token from the header, else from an urlencoded or multipart form body."""
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()  # Starlette caches the parsed form, so the endpoint can read it again
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def require_csrf(request: Request, expected: str) -> None:
    if not tokens_match(expected, await supplied_token(request)):
        raise CsrfRejected("missing or wrong CSRF token")
