"""The pure FAQ decisions: ranking by best phrasing, the word check, visibility reasons."""

from __future__ import annotations

import numpy as np
import pytest

from services.faq.matching import (
    BoundClause,
    FaqMatch,
    ServableFaq,
    build_index,
    rank_faqs,
    uncovered_terms,
    unservable_reason,
    verify_faq_answer,
)
from services.query.verify import RetrievedClause

pytestmark = pytest.mark.unit


def clause(version_id: int = 1, classification: str = "internal",
           text: str = "Meals: INR 1,500 per day.") -> BoundClause:
    return BoundClause(version_id, RetrievedClause("C1", "EXP", "Expenses", "2.1", "1.0", "2024-01-01", classification,
                                                   text, 0.0))


def faq(faq_id: int, *questions: str, bound: tuple[BoundClause, ...] = ()) -> ServableFaq:
    return ServableFaq(faq_id, questions, "Up to INR 1,500 a day.", bound or (clause(),))


def test_each_entry_ranks_by_its_best_phrasing():
    entries = [faq(1, "a", "b"), faq(2, "c"), faq(3, "d", "e", "f")]
    vectors = [np.array([[1, 0, 0], [0.6, 0.8, 0]]), np.array([[0, 0, 1]]),
               np.array([[0, 1, 0], [0.8, 0.6, 0], [0, 0, -1]])]
    index = build_index(("sig",), entries, vectors)
    best, similar = rank_faqs(index, np.array([0, 2.0, 0]), 0.5)  # not unit length: normalised
    assert (best.entry.id, best.phrasing, round(best.similarity, 3)) == (3, "d", 1.0)
    assert [(m.entry.id, m.phrasing, round(m.similarity, 3)) for m in similar] == [(3, "d", 1.0), (1, "b", 0.8)]
    best, similar = rank_faqs(index, np.array([0, 0, 1.0]), 1.5)
    assert (best.entry.id, best.phrasing, similar) == (2, "c", [])
    assert rank_faqs(build_index(("sig",), [], []), np.ones(3), 0.5) == (None, [])


def test_every_word_and_number_of_the_question_must_be_in_the_phrasing():
    phrasing = "What is the daily meal allowance on domestic business travel?"
    assert uncovered_terms("What was the daily meal allowance on domestic business travel?", phrasing) == []
    assert uncovered_terms("What is the daily meal allowance on international business travel?",
                           phrasing) == ["international"]
    assert uncovered_terms("What is the LTV for a loan of 25 lakh?", "What is the LTV for a loan of 60 lakh?") == [
        "2500000"]


def test_reasons_come_in_order_words_history_clearance_stale():
    match = FaqMatch(faq(1, "meal allowance", bound=(clause(1), clause(2, "confidential"))), 0.95, "meal allowance")
    assert unservable_reason(match, "meal allowance abroad", {1, 2}, {"internal"}, False).startswith("words:")
    assert unservable_reason(match, "meal allowance", {1, 2}, {"internal"}, True).startswith("history:")
    assert unservable_reason(match, "meal allowance", {1}, {"public", "internal"}, False).startswith("clearance:")
    assert unservable_reason(match, "meal allowance", {1}, {"internal", "confidential"}, False).startswith("stale:")
    assert unservable_reason(match, "meal allowance", {1, 2}, {"internal", "confidential"}, False) is None


def test_the_answer_is_held_to_the_bound_clauses_numbers():
    assert verify_faq_answer("Up to INR 1,500 a day.", [clause().clause]).passed
    failed = verify_faq_answer("Up to INR 2,000 a day.", [clause().clause])
    assert not failed.passed and "'2000' does not appear in the cited clauses" in failed.problems
