"""The FAQ endpoints on the shared stack: every one checks the caller's role; four eyes on
approval; an approved FAQ answers /v1/ask at tier 0. Entries made here are retired after."""

from __future__ import annotations

import pytest

from tests.services.conftest import auth

pytestmark = pytest.mark.integration

QUESTION = "Within how many business days is a customer complaint acknowledged?"
FAQ = {"questions": [QUESTION],
       "answer": "Every complaint is acknowledged to the customer within 2 business days of receipt.",
       "clauses": [{"policy_id": "TEST-CMP", "version": "3.1", "clause": "1.1"}]}


@pytest.fixture
def made(client, stack):  # noqa: ANN201
    """Ids of FAQs a test made, retired afterwards so the shared stack serves none of them."""
    ids: list[int] = []
    yield ids
    for faq_id in ids:
        client.post(f"/v1/faq/{faq_id}/retire", headers=auth(stack, "compliance"), json={"reason": "test over"})


@pytest.mark.parametrize("method,path", [("post", "/v1/faq"), ("post", "/v1/faq/1/approve"),
                                         ("post", "/v1/faq/1/retire"), ("get", "/v1/faq")])
def test_every_endpoint_needs_an_api_key(client, method, path):
    r = getattr(client, method)(path, **({"json": {}} if method == "post" else {}))
    assert r.status_code == 401 and r.json()["error"] == "unauthenticated"


@pytest.mark.parametrize("who,method,path", [
    ("staff", "post", "/v1/faq"), ("compliance", "post", "/v1/faq"), ("model_risk", "post", "/v1/faq"),
    ("staff", "post", "/v1/faq/1/approve"), ("model_risk", "post", "/v1/faq/1/approve"),
    ("staff", "post", "/v1/faq/1/retire"), ("model_risk", "post", "/v1/faq/1/retire"),
])
def test_roles_that_may_not_act_are_refused(client, stack, who, method, path):
    r = getattr(client, method)(path, headers=auth(stack, who), json=FAQ if path == "/v1/faq" else {})
    assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text


def test_add_approve_list_ask_retire(client, stack, made):
    bad = client.post("/v1/faq", headers=auth(stack, "admin"),
                      json={**FAQ, "answer": "Complaints are acknowledged within 3 business days."})
    assert bad.status_code == 422 and bad.json() == {
        "error": "faq_rejected",
        "detail": "the answer fails verification against its bound clauses: '3' does not appear in the cited clauses"}

    added = client.post("/v1/faq", headers=auth(stack, "admin"), json=FAQ)
    assert added.status_code == 201, added.text
    faq_id = added.json()["id"]
    made.append(faq_id)
    assert (added.json()["status"], added.json()["author"]) == ("proposed", "admin")
    assert client.get("/v1/faq", headers=auth(stack, "staff")).json() == []  # proposed: reviewers only
    assert [f["id"] for f in client.get("/v1/faq", headers=auth(stack, "compliance")).json()] == [faq_id]

    own = client.post(f"/v1/faq/{faq_id}/approve", headers=auth(stack, "admin"))
    assert own.status_code == 403 and own.json()["error"] == "four_eyes_rule"
    approved = client.post(f"/v1/faq/{faq_id}/approve", headers=auth(stack, "compliance"))
    assert approved.status_code == 200 and approved.json()["approver"] == "compliance"
    assert [f["id"] for f in client.get("/v1/faq", headers=auth(stack, "staff")).json()] == [faq_id]

    answer = client.post("/v1/ask", headers=auth(stack, "staff"), json={"question": QUESTION}).json()
    assert answer["tier"] == 0 and answer["answer"].startswith(FAQ["answer"])
    assert [(c["policy_id"], c["clause"], c["version"]) for c in answer["citations"]] == [("TEST-CMP", "1.1", "3.1")]

    retired = client.post(f"/v1/faq/{faq_id}/retire", headers=auth(stack, "compliance"), json={"reason": "done"})
    assert retired.status_code == 200 and retired.json()["status"] == "retired"
    again = client.post(f"/v1/faq/{faq_id}/retire", headers=auth(stack, "admin"), json={})
    assert again.status_code == 409 and again.json()["error"] == "faq_conflict"
    assert client.get("/v1/faq", headers=auth(stack, "staff")).json() == []
    missing = client.post("/v1/faq/999999/approve", headers=auth(stack, "compliance"))
    assert missing.status_code == 404
