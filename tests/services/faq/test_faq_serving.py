"""An approved FAQ is served at Tier-0 with no model call, only to requests it may answer:
similar enough and worded within its phrasing, bound versions in effect and within the
caller's clearance, after every guard. Real stack on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
from datetime import date

import pytest

from governance.audit_query import get_by_request_id, record_to_dict
from services.db.session import transaction
from services.faq.service import FaqActor, retire_faq
from services.generation.base import Generation
from services.query.schemas import AskCreate
from tests.services.faq.conftest import MEALS, SUMMARY

pytestmark = pytest.mark.integration

SMOLLM = "smollm2-135m-instruct@q4_1"


class RecordingGenerator:
    """Approved and routable: every call is recorded (a served FAQ must leave `calls` empty)."""

    def __init__(self, spec) -> None:  # noqa: ANN001
        self.spec, self.calls = spec, []

    def warm_up(self) -> None:
        pass

    def generate(self, messages: list[dict], max_tokens: int = 256, grammar: str | None = None) -> Generation:
        self.calls.append(messages)
        return Generation(text="Not available in policy", input_tokens=10, output_tokens=4, latency_ms=1.0,
                          finish="stop")


@pytest.fixture
def query(faq_stack, monkeypatch):  # noqa: ANN201
    service = faq_stack.runtime.query
    generator = RecordingGenerator(service.policy.model(SMOLLM))
    monkeypatch.setattr(service, "generators", {SMOLLM: generator})
    monkeypatch.setattr(service, "approved_models", {SMOLLM})
    service.generator = generator  # for the tests' eyes only
    return service


def ask(faq_stack, query, question: str, who: str = "sam", **fields):  # noqa: ANN001, ANN003, ANN201
    return query.ask(faq_stack.users[who], AskCreate(question=question, **fields), "test")


def trace_of(faq_stack, request_id: str) -> dict:  # noqa: ANN001
    with faq_stack.runtime.session_factory() as session:
        record = record_to_dict(get_by_request_id(session, request_id), include_payload=True)
    payload = record["payload"] if isinstance(record["payload"], dict) else json.loads(record["payload"])
    return payload["trace"]


def test_an_approved_faq_is_served_at_tier_0_without_a_model_and_audited(faq_stack, query):
    entry = faq_stack.add(MEALS)
    proposed = ask(faq_stack, query, SUMMARY)  # the same question goes to the model while the FAQ is proposed
    assert len(query.generator.calls) == 1 and MEALS["answer"] not in proposed.answer

    with transaction(faq_stack.runtime.session_factory) as session:
        from services.faq.service import approve_faq
        approve_faq(session, faq_stack.runtime.policy, entry.id, FaqActor(faq_stack.users["cleo"], "test"))
    query.generator.calls.clear()
    served = ask(faq_stack, query, SUMMARY)
    assert query.generator.calls == []
    assert (served.tier, served.model, served.cost, served.refused) == (0, None, 0.0, False)
    assert served.answer.startswith(MEALS["answer"] + "\n\n")
    assert "— Staff Travel and Expenses Policy, clause 2.1, version 1.0, effective 2024-01-01" in served.answer
    assert [(c.policy_id, c.clause, c.version, c.effective_date) for c in served.citations] == [
        ("TEST-EXP", "2.1", "1.0", "2024-01-01"), ("TEST-EXP", "2.2", "1.0", "2024-01-01")]
    assert "INR 1,500" in served.citations[0].text and served.citations[0].score >= 0.9
    assert served.effective_classification == "internal"

    trace = trace_of(faq_stack, served.request_id)
    assert trace["route"]["faq"]["served"]["id"] == entry.id
    [attempt] = trace["attempts"]
    assert (attempt["faq_id"], attempt["tier"], attempt["model_key"], attempt["outcome"]) == (entry.id, 0, None,
                                                                                              "served")
    assert attempt["raw_output"] == MEALS["answer"] and attempt["verification"]["passed"]

    with transaction(faq_stack.runtime.session_factory) as session:
        retire_faq(session, faq_stack.runtime.policy, entry.id, FaqActor(faq_stack.users["cleo"], "test"))
    retired = ask(faq_stack, query, SUMMARY)
    assert len(query.generator.calls) == 1 and MEALS["answer"] not in retired.answer
    assert "faq" not in trace_of(faq_stack, retired.request_id)["route"]  # no approved FAQ left


def test_an_faq_costs_nothing_so_it_is_served_past_the_budget(faq_stack, query, monkeypatch):
    faq_stack.add_approved(MEALS)
    broke = query.policy.routing.model_copy(update={"daily_budget_per_user": 0.0})
    monkeypatch.setattr(query, "policy", query.policy.model_copy(update={"routing": broke}))
    served = ask(faq_stack, query, SUMMARY)
    assert served.tier == 0 and served.answer.startswith(MEALS["answer"])


def test_a_paraphrase_below_the_threshold_or_with_other_words_is_not_served(faq_stack, query):
    faq_id = faq_stack.add_approved(MEALS)
    far = ask(faq_stack, query, "How much can I claim for meals per day when travelling in India on business?")
    assert MEALS["answer"] not in far.answer
    record = trace_of(faq_stack, far.request_id)["route"]["faq"]
    assert record["served"] is None and record["best"]["id"] == faq_id and record["best"]["similarity"] < 0.9

    # Cosine 0.95 to a phrasing, but "international" is not in it: the FAQ answers for domestic travel only.
    other = ask(faq_stack, query, "What is the daily meal allowance on international business travel?")
    assert MEALS["answer"] not in other.answer
    [skipped] = trace_of(faq_stack, other.request_id)["route"]["faq"]["not_served"]
    assert skipped["similarity"] >= 0.9 and skipped["reason"].startswith("words: the question's 'international'")


def test_a_new_version_of_a_bound_policy_makes_the_faq_stale(faq_stack, query):
    faq_id = faq_stack.add_approved(MEALS)
    assert ask(faq_stack, query, SUMMARY).answer.startswith(MEALS["answer"])
    faq_stack.ingest("expenses-v2.md")  # 2.0 supersedes the 1.0 the FAQ is bound to

    after = ask(faq_stack, query, SUMMARY)
    assert MEALS["answer"] not in after.answer
    [stale] = trace_of(faq_stack, after.request_id)["route"]["faq"]["not_served"]
    assert stale["id"] == faq_id and stale["reason"].startswith("stale: TEST-EXP version 1.0 is not in effect")
    # Asked as of a day version 1.0 was in effect, the FAQ is that day's answer.
    then = ask(faq_stack, query, SUMMARY, as_of=date(2025, 6, 1))
    assert then.tier == 0 and then.answer.startswith(MEALS["answer"])


def test_a_caller_without_clearance_for_a_bound_clause_does_not_get_the_faq(faq_stack, query):
    data = copy.deepcopy(MEALS)
    data["answer"] += " Dealers' overnight FX positions are limited to USD 25 million."
    data["clauses"].append({"policy_id": "TEST-TRS", "version": "1.0", "clause": "1.1"})  # confidential
    faq_id = faq_stack.add_approved(data)

    staff = ask(faq_stack, query, SUMMARY, who="sam")  # clearance internal
    assert "25 million" not in staff.answer and all(c.policy_id != "TEST-TRS" for c in staff.citations)
    [hidden] = trace_of(faq_stack, staff.request_id)["route"]["faq"]["not_served"]
    assert hidden["id"] == faq_id and hidden["reason"].startswith("clearance: TEST-TRS version 1.0 is confidential")

    cleared = ask(faq_stack, query, SUMMARY, who="cleo")  # clearance confidential
    assert cleared.answer.startswith(data["answer"]) and cleared.effective_classification == "confidential"


def test_a_prohibited_question_identical_to_an_faq_phrasing_is_still_refused_first(faq_stack, query):
    prohibited = "Should we approve this loan for the customer?"
    data = copy.deepcopy(MEALS)
    data["questions"].append(prohibited)  # added without the screen, as if approved before the pattern existed
    faq_stack.add_approved(data)
    refused = ask(faq_stack, query, prohibited)
    assert refused.refused and refused.refusal_reason.startswith("prohibited_use: autonomous_credit_decision")
    assert MEALS["answer"] not in refused.answer and query.generator.calls == []


def test_a_served_answer_is_verified_again_at_serve_time(faq_stack, query, monkeypatch):
    from services.query import service as query_service
    from services.query.verify import Verification

    faq_id = faq_stack.add_approved(MEALS)
    monkeypatch.setattr(query_service, "verify_faq_answer",
                        lambda answer, clauses: Verification(False, ("'1500' does not appear",), ()))
    answer = ask(faq_stack, query, SUMMARY)
    assert MEALS["answer"] not in answer.answer
    [failed] = trace_of(faq_stack, answer.request_id)["route"]["faq"]["not_served"]
    assert failed["id"] == faq_id and failed["reason"] == "verification: '1500' does not appear"
