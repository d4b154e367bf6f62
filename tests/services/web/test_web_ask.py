"""`POST /web/ask` (the chat page's script endpoint) through the ASGI test client, signed in with a
real session cookie and CSRF token, on the shared real stack."""

from __future__ import annotations

import json

import pytest

from services.web.csrf import CSRF_HEADER, csrf_token_for
from services.web.session import SESSION_COOKIE, decode_session, start_session
from tests.services.conftest import auth

pytestmark = pytest.mark.integration

QUESTION = "What is the meal allowance?"


def web_headers(stack, who: str) -> dict[str, str]:
    """What the chat page sends: the session cookie, its CSRF token and a JSON body."""
    secret = stack.settings.session_secret.get_secret_value()
    with stack.runtime.session_factory() as db:
        _, cookie = start_session(db, secret, stack.keys[who])
    token = csrf_token_for(secret, decode_session(secret, cookie).sid)
    return {"cookie": f"{SESSION_COOKIE}={cookie}", CSRF_HEADER: token, "content-type": "application/json"}


def encoded(body: object) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


MALFORMED = [
    {"question": 42},
    {},
    {"question": QUESTION, "as_of": "2025-13-01"},
    {"question": QUESTION, "unknown": 1},
    b'{"question": "unterminated',
    b"[" * 100_000,
]


@pytest.mark.parametrize("body", MALFORMED)
def test_a_question_the_web_page_rejects_as_malformed_still_leaves_an_audit_record(client, stack, body):
    r = client.post("/web/ask", content=encoded(body), headers=web_headers(stack, "staff"))
    request_id = r.headers["x-request-id"]  # the server chooses every request id
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request"
    compliance = auth(stack, "compliance")
    record = client.get(f"/v1/audit/{request_id}", headers=compliance)
    assert record.status_code == 200, record.text
    record = record.json()
    assert (record["actor"], record["channel"], record["refused"]) == ("staff", "web", False)
    assert record["payload"]["trace"]["error"]["error"] == "invalid_request"
    assert record["payload"]["trace"]["error"]["detail"] == r.json()["detail"]
    assert record["payload"]["response"] is None
    assert record["question"] == (QUESTION if QUESTION in repr(body) else None)
    assert client.get("/v1/audit/verify", headers=compliance).json()["ok"] is True


def test_a_malformed_web_question_is_refused_503_when_its_audit_record_cannot_be_written(client, stack,
                                                                                       audit_commit_fails):
    body = {"question": QUESTION, "as_of": "not a date"}
    r = client.post("/web/ask", content=encoded(body), headers=web_headers(stack, "staff"))
    request_id = r.headers["x-request-id"]
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "audit_unavailable"
    assert client.get(f"/v1/audit/{request_id}", headers=auth(stack, "compliance")).status_code == 404
