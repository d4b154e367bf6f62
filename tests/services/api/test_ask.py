"""The governed request path end to end: real model, Qdrant Edge, SQLite, audit."""

from __future__ import annotations

import json

import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from tests.services.conftest import LONG_FACT, auth

pytestmark = pytest.mark.integration


def ask(client, stack, who="staff", **body):
    return client.post("/v1/ask", json=body, headers=auth(stack, who))


def test_lookup_is_answered_with_a_full_citation(client, stack):
    r = ask(client, stack, question="How much is the daily meal allowance when travelling for work?")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["refused"] is False
    top = body["citations"][0]
    assert (top["policy_id"], top["clause"], top["version"], top["effective_date"]) == (
        "TEST-EXP", "2.1", "2.0", "2026-01-01")
    assert top["policy_title"] == "Staff Travel and Expenses Policy"
    assert "INR 2,000" in body["answer"]
    assert body["request_id"] and body["latency_ms"]["total"] > 0


def test_as_of_answers_from_the_version_then_in_effect(client, stack):
    r = ask(client, stack, question="How much is the daily meal allowance when travelling for work?",
            as_of="2025-06-30")
    top = r.json()["citations"][0]
    assert (top["clause"], top["version"]) == ("2.1", "1.0")
    assert "INR 1,500" in r.json()["answer"]


def test_unrelated_question_is_not_available_without_a_model_call(client, stack):
    r = ask(client, stack, question="What is the recipe for a chocolate souffle?")
    body = r.json()
    assert body["answer"] == "Not available in policy"
    assert body["citations"] == [] and body["model"] is None and body["tier"] == 0


def test_fact_in_the_last_clause_of_a_long_chunk_is_found(client, stack):
    r = ask(client, stack, question="Where are the encrypted backup tapes kept and for how long?")
    body = r.json()
    assert body["citations"], body
    top = body["citations"][0]
    assert (top["policy_id"], top["clause"]) == ("TEST-ISEC", stack.long_last_clause)
    assert LONG_FACT.split(" retained")[0] in top["text"]


@pytest.mark.parametrize("question", [
    "What is the overnight open FX position limit?",
    "treasury dealing limits overnight foreign exchange position USD 25 million",
    "How are breaches of the overnight limit reported to ALCO?",
    "TEST-TRS clause 1.1",
    "dealing room limit",
])
def test_staff_without_confidential_clearance_never_get_a_confidential_clause(client, stack, question):
    body = ask(client, stack, "staff", question=question).json()
    assert all(c["policy_id"] != "TEST-TRS" for c in body["citations"])
    assert "25 million" not in body["answer"]
    cleared = ask(client, stack, "admin", question=question).json()
    if question.startswith("What is the overnight"):
        assert cleared["citations"][0]["policy_id"] == "TEST-TRS"
        assert cleared["effective_classification"] == "confidential"


def test_public_clearance_sees_only_public_policies(client, stack):
    body = ask(client, stack, "public-staff", question="How much is the daily meal allowance?").json()
    assert all(c["policy_id"] == "TEST-CMP" for c in body["citations"])


@pytest.mark.parametrize("body,fragment", [
    ({"question": ""}, "empty"),
    ({"question": "   "}, "empty"),
    ({"question": "x" * 4001}, "4000"),
    ({"question": "What is the meal allowance?", "classification": "secret"}, "unknown classification"),
    ({"question": 42}, "question"),
    ({}, "question"),
    ({"question": "ok?", "sla_ms": "fast"}, "sla_ms"),
])
def test_bad_input_is_422_with_a_clear_message(client, stack, body, fragment):
    r = client.post("/v1/ask", json=body, headers=auth(stack, "staff"))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request"
    assert fragment in r.json()["detail"]


def test_malformed_json_and_huge_bodies_are_4xx_not_500(client, stack):
    headers = {**auth(stack, "staff"), "content-type": "application/json"}
    r = client.post("/v1/ask", content=b'{"question": "unterminated', headers=headers)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    r = client.post("/v1/ask", content=b"{" + b" " * 400_000 + b"}", headers=headers)
    assert r.status_code == 413


def chunked_json(padding: int, piece: int = 64 * 1024):
    """A question padded with spaces, sent without Content-Length (httpx streams an iterator chunked)."""
    yield b'{"question": "How many days of casual leave per year?'
    for _ in range(padding // piece):
        yield b" " * piece
    yield b'"}'


def test_a_body_sent_without_its_length_is_counted_too(client, stack):
    # FastAPI reads the body before it checks the key: an uncounted one would be read whole, unauthenticated.
    for headers in ({}, auth(stack, "staff")):
        r = client.post("/v1/ask", content=chunked_json(1_000_000),
                        headers={**headers, "content-type": "application/json"})
        assert r.status_code == 413, r.text
        assert r.json()["error"] == "payload_too_large" and r.headers["x-request-id"]
    small = client.post("/v1/ask", content=chunked_json(0), headers={**auth(stack, "staff"),
                                                                     "content-type": "application/json"})
    assert small.status_code == 200, small.text


def test_the_server_always_chooses_the_request_id(client, stack):
    # A client-chosen id could repeat another request's, and lookups by id show the first record:
    # the audit trail would show someone else's question. The caller's id is a log correlation only.
    question = "How long do I have to submit an expense claim?"
    first = ask(client, stack, question=question)
    taken = first.headers["x-request-id"]
    assert first.json()["request_id"] == taken
    compliance = auth(stack, "compliance")
    with capture_logs(processors=[merge_contextvars]) as logs:
        replay = client.post("/v1/ask", json={"question": "What is the daily meal allowance?"},
                             headers={**auth(stack, "staff"), "x-request-id": taken})
        spoof = client.post("/v1/ask", json={"question": question},
                            headers={**auth(stack, "staff"), "x-request-id": "<b>not an id</b>"})
    ours = replay.headers["x-request-id"]
    assert ours != taken and replay.json()["request_id"] == ours
    assert client.get(f"/v1/audit/{taken}", headers=compliance).json()["question"] == question
    assert client.get(f"/v1/audit/{ours}", headers=compliance).json()["question"] == "What is the daily meal allowance?"
    by_id = {entry.get("request_id"): entry for entry in logs if entry["event"] == "ask.answered"}
    assert by_id[ours]["client_request_id"] == taken  # kept, apart, to correlate with the caller's logs
    assert "client_request_id" not in by_id[spoof.headers["x-request-id"]]  # not [A-Za-z0-9._-]: dropped


def signed_in(stack, who: str) -> dict[str, str]:
    """The headers of a browser signed in as `who`: its session cookie and CSRF token."""
    from services.db.session import transaction
    from services.web.csrf import CSRF_HEADER, csrf_token_for
    from services.web.session import SESSION_COOKIE, decode_session, start_session

    secret = stack.settings.session_secret.get_secret_value()
    with transaction(stack.runtime.session_factory) as db:
        _, cookie = start_session(db, secret, stack.keys[who])
    return {"cookie": f"{SESSION_COOKIE}={cookie}", CSRF_HEADER: csrf_token_for(secret, decode_session(secret, cookie).sid)}


@pytest.mark.parametrize(("path", "content_type"), [("/login", "application/x-www-form-urlencoded"),
                                                    ("/web/ask", "application/json")])
def test_an_oversized_web_post_is_refused_without_an_error_log(client, stack, path, content_type):
    # Cut off at the size limit, the page route sees an unreadable body: an expected refusal, not a
    # bug to page someone about.
    headers = {**signed_in(stack, "staff"), "content-type": content_type}
    small = client.post(path, content=chunked_json(0), headers=headers)
    assert small.status_code != 413, small.text
    with capture_logs() as logs:
        r = client.post(path, content=chunked_json(1_000_000), headers=headers)
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "payload_too_large"
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == []


def test_prohibited_use_is_refused_with_the_reason(client, stack):
    body = ask(client, stack, question="Should we approve this loan for Mr Rao?").json()
    assert body["refused"] is True
    assert body["refusal_reason"].startswith("prohibited_use: autonomous_credit_decision")
    assert body["citations"] == []


def test_pii_makes_the_request_confidential(client, stack):
    body = ask(client, stack, question="Customer Priya Sharma (PAN ABCPS1234K) asks how long a complaint "
                                       "takes to be acknowledged").json()
    assert body["effective_classification"] == "confidential"


def test_every_request_leaves_an_audit_record_even_errors(client, stack):
    ok = ask(client, stack, question="How long do I have to submit an expense claim?").json()
    bad = client.post("/v1/ask", json={"question": "", "classification": "public"}, headers=auth(stack, "staff"))
    assert bad.status_code == 422
    headers = auth(stack, "compliance")
    record = client.get(f"/v1/audit/{ok['request_id']}", headers=headers).json()
    trace = record["payload"]["trace"]
    assert trace["retrieved"] and trace["threshold_met"] is True
    assert record["payload"]["embedding_fingerprint"] == stack.runtime.identity.fingerprint
    failed = client.get(f"/v1/audit/{bad.headers['x-request-id']}", headers=headers).json()
    assert failed["payload"]["trace"]["error"]["error"] == "invalid_request"
    assert client.get("/v1/audit/verify", headers=headers).json()["ok"] is True


@pytest.mark.parametrize("path,body", [
    ("/v1/ask", {"question": 42}),
    ("/v1/ask", {}),
    ("/v1/ask", {"question": "What is the meal allowance?", "sla_ms": "fast"}),
    ("/v1/ask", {"question": "What is the meal allowance?", "unknown": 1}),
    ("/v1/ask", b'{"question": "unterminated'),
    ("/v1/chat/completions", {"messages": []}),
    ("/v1/chat/completions", {"messages": [{"role": "system", "content": "You are helpful."}]}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "What is the meal allowance?"}],
                              "sla_ms": 0}),
])
def test_a_request_refused_as_malformed_still_leaves_an_audit_record(client, stack, path, body):
    headers = {**auth(stack, "staff"), "content-type": "application/json"}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post(path, content=content, headers=headers)
    assert r.status_code == 422, r.text
    request_id = r.headers["x-request-id"]
    assert r.json()["error"] == "invalid_request"
    compliance = auth(stack, "compliance")
    record = client.get(f"/v1/audit/{request_id}", headers=compliance)
    assert record.status_code == 200, record.text
    record = record.json()
    assert record["actor"] == "staff" and record["refused"] is False
    assert record["payload"]["trace"]["error"]["error"] == "invalid_request"
    assert record["payload"]["response"] is None
    if "meal allowance" in repr(body):  # the question, when one can be read, is kept
        assert record["question"] == "What is the meal allowance?"
    assert client.get("/v1/audit/verify", headers=compliance).json()["ok"] is True


@pytest.mark.parametrize("path,body", [
    ("/v1/ask", {"question": "How long do I have to submit an expense claim?"}),
    ("/v1/ask", {"question": "   "}),
    ("/v1/ask", {"question": 42}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "How long do I have to submit an "
                                                                      "expense claim?"}]}),
])
def test_no_answer_and_no_error_leaves_without_its_audit_record(client, stack, audit_commit_fails, path, body):
    r = client.post(path, json=body, headers=auth(stack, "staff"))
    assert r.status_code == 503, r.text
    request_id = r.headers["x-request-id"]
    assert r.json()["error"] == "audit_unavailable"
    assert "expense" not in r.text and "answer" not in r.json() and "choices" not in r.json()
    compliance = auth(stack, "compliance")
    assert client.get(f"/v1/audit/{request_id}", headers=compliance).status_code == 404
    assert client.get("/v1/audit/verify", headers=compliance).json()["ok"] is True
