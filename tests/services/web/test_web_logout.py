"""Signing out ends the session on the server: a copy of the cookie taken before is refused after,
on SQLite and PostgreSQL, while the same user's other sessions carry on."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.api.app import create_app
from services.config import Settings
from services.db.models import RevokedWebSession
from services.db.session import transaction
from services.runtime import build_runtime
from services.users.service import create_user
from services.web.csrf import CSRF_HEADER, csrf_token_for
from services.web.session import SESSION_COOKIE, WebSession, decode_session, end_session, start_session

pytestmark = pytest.mark.integration


@pytest.fixture
def web(db_url, tmp_path):
    settings = Settings(env="test", data_dir=tmp_path, database_url=db_url)
    runtime = build_runtime(settings, with_models=False)
    app = create_app(settings, runtime=runtime)
    # Signing in and out needs only the database; the lifespan would first load every model.
    app.state.runtime = runtime
    with transaction(runtime.session_factory) as db:
        _, key = create_user(db, "alice", "staff", "internal", runtime.policy.classifications)
    yield TestClient(app), runtime, key
    runtime.close()


def sign_in(runtime, key: str) -> str:  # noqa: ANN001
    with transaction(runtime.session_factory) as db:
        return start_session(db, runtime.settings.session_secret.get_secret_value(), key)[1]


def with_cookie(runtime, cookie: str) -> dict[str, str]:  # noqa: ANN001
    secret = runtime.settings.session_secret.get_secret_value()
    return {"cookie": f"{SESSION_COOKIE}={cookie}",
            CSRF_HEADER: csrf_token_for(secret, decode_session(secret, cookie).sid)}


def test_a_cookie_copied_before_sign_out_is_refused_after_it(web):
    client, runtime, key = web
    copied, other_browser = sign_in(runtime, key), sign_in(runtime, key)
    assert client.get("/chat", headers=with_cookie(runtime, copied), follow_redirects=False).status_code == 200

    out = client.post("/logout", headers=with_cookie(runtime, copied), follow_redirects=False)
    assert (out.status_code, out.headers["location"]) == (303, "/login")

    page = client.get("/chat", headers=with_cookie(runtime, copied), follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    script = client.post("/web/ask", json={"question": "What is the meal allowance?"},
                         headers=with_cookie(runtime, copied))
    assert script.status_code == 401
    assert client.post("/logout", headers=with_cookie(runtime, copied), follow_redirects=False
                       ).headers["location"].startswith("/login?")  # signed out already: to sign in, no error
    # The same user's session in another browser is not touched.
    assert client.get("/chat", headers=with_cookie(runtime, other_browser), follow_redirects=False).status_code == 200


def test_sign_out_prunes_revocations_whose_cookies_have_expired_anyway(session_factory):
    now = time.time()
    morning = WebSession(user_id=1, sid="morning", issued_at=int(now), key_binding="k" * 32)
    next_day = WebSession(user_id=1, sid="next-day", issued_at=int(now) + 24 * 3600, key_binding="k" * 32)
    with transaction(session_factory) as db:
        end_session(db, morning, now=now)
    with transaction(session_factory) as db:
        end_session(db, next_day, now=now + 24 * 3600)
    with session_factory() as db:
        assert list(db.scalars(select(RevokedWebSession.sid))) == ["next-day"]
