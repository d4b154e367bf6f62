"""FAQ creation refuses what it cannot stand behind and stores nothing; four eyes on approval;
every step audited in its own transaction. Real database (SQLite and PostgreSQL), real corpus."""

from __future__ import annotations

import copy
import json

import pytest
from sqlalchemy import func, select

from governance.records.audit import AuditRecord
from services.db.models import FaqEntry
from services.db.session import transaction
from services.errors import FaqConflict, FaqRejected, Forbidden, FourEyesViolation
from services.faq.service import FaqActor, approve_faq, list_faqs, retire_faq
from tests.services.faq.conftest import MEALS

pytestmark = pytest.mark.integration


def counts(runtime) -> tuple[int, int]:  # noqa: ANN001
    """(FAQ rows, faq.* audit records)."""
    with runtime.session_factory() as session:
        return (session.scalar(select(func.count()).select_from(FaqEntry)),
                session.scalar(select(func.count()).select_from(AuditRecord).where(AuditRecord.event.like("faq.%"))))


def variant(**changes) -> dict:  # noqa: ANN003
    data = copy.deepcopy(MEALS)
    data.update(changes)
    return data


@pytest.mark.parametrize("changes,message", [
    ({"clauses": [{"policy_id": "TEST-EXP", "version": "1.0", "clause": "9.9"}]},
     "bound clause not found in a published version: TEST-EXP version 1.0 clause 9.9"),
    ({"clauses": [{"policy_id": "TEST-EXP", "version": "2.0", "clause": "2.1"}]},  # v2 is not ingested
     "TEST-EXP version 2.0 clause 2.1"),
    ({"answer": "Staff may claim up to INR 2,000 a day for meals on domestic business travel."},
     "'2000' does not appear in the cited clauses"),
    ({"answer": "   "}, "answer is empty"),
    ({"answer": "x" * 1201}, "answer is 1201 characters long; the limit is 1200"),
    ({"questions": []}, "questions: at least one phrasing is needed"),
    ({"questions": ["q?"] * 21}, "at most 20"),
    ({"questions": ["What is the meal allowance?", "x" * 4001]}, "questions[2] is 4001 characters long"),
])
def test_creation_refuses_naming_the_problem_and_stores_nothing(faq_stack, changes, message):
    before = counts(faq_stack.runtime)
    with pytest.raises(FaqRejected) as info:
        faq_stack.add(variant(**changes))
    assert message in info.value.detail
    assert info.value.status_code == 422
    assert counts(faq_stack.runtime) == before == (0, 0)


def test_a_prohibited_phrasing_is_refused_by_the_request_paths_screen(faq_stack):
    screen = faq_stack.runtime.query.prohibited.check
    with pytest.raises(FaqRejected, match=r"questions\[2\] is a prohibited use \(autonomous_credit_decision\)"):
        faq_stack.add(variant(questions=["What is the meal allowance?", "Should we approve this loan for the "
                                                                        "customer?"]), screen=screen)
    assert counts(faq_stack.runtime) == (0, 0)


def test_only_admin_adds_and_the_author_may_not_approve(faq_stack):
    with pytest.raises(Forbidden):
        faq_stack.add(MEALS, who="cleo")
    entry = faq_stack.add(MEALS, who="ana")
    assert (entry.status, entry.author, entry.approver) == ("proposed", "ana", None)
    runtime = faq_stack.runtime
    with pytest.raises(FourEyesViolation, match="four-eyes rule: FAQ .* written by ana, who may not also approve"), \
            transaction(runtime.session_factory) as session:
        approve_faq(session, runtime.policy, entry.id, FaqActor(faq_stack.users["ana"], "test"))
    with pytest.raises(Forbidden), transaction(runtime.session_factory) as session:
        approve_faq(session, runtime.policy, entry.id, FaqActor(faq_stack.users["mo"], "test"))
    with transaction(runtime.session_factory) as session:
        approved = approve_faq(session, runtime.policy, entry.id, FaqActor(faq_stack.users["abe"], "test"))
        assert (approved.status, approved.approver) == ("approved", "abe")
    with pytest.raises(FaqConflict, match="only a proposed FAQ can be approved"), \
            transaction(runtime.session_factory) as session:
        approve_faq(session, runtime.policy, entry.id, FaqActor(faq_stack.users["cleo"], "test"))
    with transaction(runtime.session_factory) as session:
        retired = retire_faq(session, runtime.policy, entry.id, FaqActor(faq_stack.users["cleo"], "test"), "superseded")
        assert (retired.status, retired.retired_by) == ("retired", "cleo")
    with pytest.raises(FaqConflict, match="already retired"), transaction(runtime.session_factory) as session:
        retire_faq(session, runtime.policy, entry.id, FaqActor(faq_stack.users["cleo"], "test"))

    with runtime.session_factory() as session:
        events = [(r.event, r.actor, json.loads(r.payload), r.policy_ids) for r in session.scalars(
            select(AuditRecord).where(AuditRecord.event.like("faq.%")).order_by(AuditRecord.seq))]
    assert [(e, a) for e, a, _, _ in events] == [("faq.add", "ana"), ("faq.approve", "abe"), ("faq.retire", "cleo")]
    assert all(p["faq_id"] == entry.id for _, _, p, _ in events)
    assert events[0][2]["answer"] == MEALS["answer"] and events[2][2]["reason"] == "superseded"
    assert "TEST-EXP" in events[0][3]


def test_a_duplicate_is_refused_and_content_cannot_be_edited(faq_stack):
    entry = faq_stack.add(MEALS)
    with pytest.raises(FaqConflict, match=f"FAQ {entry.id} \\(proposed\\) already holds"):
        faq_stack.add(MEALS)
    with pytest.raises(ValueError, match="answer cannot be edited"), \
            transaction(faq_stack.runtime.session_factory) as session:
        session.get(FaqEntry, entry.id).answer = "Something else."
        session.flush()
    with faq_stack.runtime.session_factory() as session:
        assert session.get(FaqEntry, entry.id).answer == MEALS["answer"]


def test_listing_shows_staff_only_approved_entries_within_their_clearance(faq_stack):
    meals = faq_stack.add_approved(MEALS)
    proposed = faq_stack.add(variant(questions=["Is alcohol reimbursed?"], answer="Alcohol is never reimbursed.",
                                     clauses=[MEALS["clauses"][1]]))
    treasury = faq_stack.add_approved({
        "questions": ["What is the overnight FX position limit?"],
        "answer": "The dealing room's overnight open FX position limit is USD 25 million.",
        "clauses": [{"policy_id": "TEST-TRS", "version": "1.0", "clause": "1.1"}]})
    with faq_stack.runtime.session_factory() as session:
        policy = faq_stack.runtime.policy
        assert [f.id for f in list_faqs(session, policy, faq_stack.users["sam"])] == [meals]  # not confidential
        assert [f.id for f in list_faqs(session, policy, faq_stack.users["mo"])] == [meals, treasury]
        assert [f.id for f in list_faqs(session, policy, faq_stack.users["cleo"])] == [meals, proposed.id, treasury]
        assert [f.id for f in list_faqs(session, policy, faq_stack.users["cleo"], "proposed")] == [proposed.id]
