"""The query service's audit record of a request that fails part-way: the shared real stack
(SQLite, embedding model, Qdrant Edge) with the bundled SmolLM2 approved as the Tier-1 model."""

from __future__ import annotations

import uuid

import pytest

from governance.audit_query import get_by_request_id, record_to_dict
from services.errors import BudgetExceeded
from services.generation.llama import LlamaCppGenerator
from services.query import escalation
from services.query.schemas import AskCreate
from services.users.service import authenticate

pytestmark = pytest.mark.integration

SMOLLM = "smollm2-135m-instruct@q4_1"
# "Summarise" is a rule-labelled summarisation question: its lowest adequate tier is 1.
MEALS = "Summarise the rules for claiming meals on business travel"


@pytest.fixture(scope="module")
def smollm2(stack) -> LlamaCppGenerator:
    # A generous timeout so a busy machine does not turn the model's answer into a timeout.
    generator = LlamaCppGenerator(stack.runtime.policy.model(SMOLLM).model_copy(update={"timeout_s": 120.0}))
    generator.warm_up()
    return generator


@pytest.fixture
def tier1(stack, smollm2, monkeypatch):  # noqa: ANN201
    """The stack's query service with SmolLM2 approved and loaded (the shared stack approves no model)."""
    query = stack.runtime.query
    monkeypatch.setattr(query, "generators", {SMOLLM: smollm2})
    monkeypatch.setattr(query, "approved_models", {SMOLLM})
    return query


def staff(stack):  # noqa: ANN001, ANN201
    with stack.runtime.session_factory() as db:
        return authenticate(db, stack.keys["staff"])


def audit_record(stack, request_id: str) -> dict:  # noqa: ANN001
    with stack.runtime.session_factory() as db:
        record = get_by_request_id(db, request_id)
        assert record is not None, f"no audit record for {request_id}"
        return record_to_dict(record)


def test_attempts_made_before_escalation_raises_reach_the_audit_record(stack, tier1, monkeypatch):
    verified: list[str] = []

    def broken_verifier(answer: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        verified.append(answer)
        raise RuntimeError("verifier bug")

    monkeypatch.setattr(escalation, "verify_answer", broken_verifier)
    request_id = f"escalation-raises-{uuid.uuid4().hex[:12]}"
    with pytest.raises(RuntimeError, match="verifier bug"):
        tier1.ask(staff(stack), AskCreate(question=MEALS), "api", request_id)
    assert len(verified) == 1  # the model was really called and answered before verification raised

    record = audit_record(stack, request_id)
    trace = record["payload"]["trace"]
    assert trace["error"] == {"error": "internal_error", "detail": "RuntimeError"}
    assert record["payload"]["response"] is None
    [attempt] = trace["attempts"]
    assert (attempt["tier"], attempt["model_key"], attempt["zone"]) == (1, SMOLLM, "onprem")
    assert any(MEALS in message["content"] for message in attempt["prompt"])  # the prompt the model was sent
    assert attempt["raw_output"] == verified[0] and attempt["output_tokens"] > 0 and attempt["cost"] > 0
    assert attempt["outcome"] == "unverified" and attempt["verification"] is None


def test_a_budget_refusal_after_routing_records_the_effective_classification(stack, tier1, monkeypatch):
    broke = tier1.policy.routing.model_copy(update={"daily_budget_per_user": 0.0})
    monkeypatch.setattr(tier1, "policy", tier1.policy.model_copy(update={"routing": broke}))
    request_id = f"budget-429-{uuid.uuid4().hex[:12]}"
    with pytest.raises(BudgetExceeded):
        tier1.ask(staff(stack), AskCreate(question=MEALS, classification="confidential"), "api", request_id)
    record = audit_record(stack, request_id)
    assert record["payload"]["trace"]["error"]["status"] == 429
    assert record["payload"]["trace"]["route"]["effective_classification"] == "confidential"
    assert record["effective_classification"] == "confidential"


def test_a_failure_before_retrieval_records_the_classification_known_by_then(stack, tier1, monkeypatch):
    def index_down(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise ConnectionError("qdrant is down")

    monkeypatch.setattr(tier1.retriever, "retrieve", index_down)
    request_id = f"retrieval-fails-{uuid.uuid4().hex[:12]}"
    with pytest.raises(ConnectionError):
        tier1.ask(staff(stack), AskCreate(question=MEALS), "api", request_id)
    record = audit_record(stack, request_id)
    assert record["payload"]["trace"]["route"] is None  # it failed before routing ...
    assert record["effective_classification"] == "internal"  # ... but the undeclared question's class was known
