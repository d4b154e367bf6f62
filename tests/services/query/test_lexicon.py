"""Clause-level BM25 over the visible corpus, acronyms the corpus defines, and history scope."""

from __future__ import annotations

import math

import pytest

from services.query.lexicon import ClauseLexicon, acronym_definitions, clause_terms
from services.query.retrieval import asks_about_history
from services.vectors.sparse import tokenize

CLAUSES = {
    1: [("c1", "1.1", ["Scope"], "This policy applies to every home loan sanctioned by the Bank."),
        ("c1", "4.2", ["Loan-to-value limits"], "For a home loan above INR 30 lakh the LTV cap is 80%."),
        ("c2", "5.4", ["Due diligence"], "Opening an account for a PEP requires the approval of the Principal Officer."),
        ("c2", "3.2.(a)", ["Risk"], "the customer is a politically exposed person (PEP) or a close relative of one;")],
    2: [("c3", "4.2", ["Loan-to-value limits"], "For a home loan above INR 30 lakh the LTV cap is 75%.")],
    3: [("c4", "9.1", ["Fees"], "A processing fee of 0.5% of the loan amount is charged on every loan.")],
}


def _lexicon(calls: list | None = None) -> ClauseLexicon:
    def load(version_ids: list[int]) -> list[tuple]:
        if calls is not None:
            calls.append(sorted(version_ids))
        return [(v, chunk, number, heading, text) for v in version_ids for chunk, number, heading, text in CLAUSES[v]]

    return ClauseLexicon(load)


def _bm25(query: str, docs: list[list[str]], doc: int, k1: float = 1.2, b: float = 0.75) -> float:
    """Textbook BM25 of one document, to check the vectorised scores against."""
    n, avgdl = len(docs), sum(map(len, docs)) / len(docs)
    score = 0.0
    for term in dict.fromkeys(tokenize(query)):
        df = sum(term in d for d in docs)
        tf = docs[doc].count(term)
        if tf:
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(docs[doc]) / avgdl))
    return score


def test_scores_are_bm25_over_the_visible_clauses_only() -> None:
    lexicon = _lexicon()
    result = lexicon.search(tokenize("processing fee on a loan"), [1, 3], limit=10)
    visible = [clause_terms(h, t) for v in (1, 3) for _, _, h, t in CLAUSES[v]]
    keys = [(c, n) for v in (1, 3) for c, n, _, _ in CLAUSES[v]]
    for i, key in enumerate(keys):
        assert result.scores.get(key, 0.0) == pytest.approx(_bm25("processing fee on a loan", visible, i), rel=1e-5)
    assert result.top[0] == ("c4", "9.1")
    # version 2 is loaded by another query, but never counted or returned for this one
    lexicon.search(tokenize("LTV cap"), [2], limit=10)
    again = lexicon.search(tokenize("processing fee on a loan"), [1, 3], limit=10)
    assert again.scores == pytest.approx(result.scores)
    assert all(key != ("c3", "4.2") for key in again.scores)


def test_versions_are_loaded_once_and_only_when_needed() -> None:
    calls: list = []
    lexicon = _lexicon(calls)
    lexicon.search(["loan"], [1], limit=5)
    lexicon.search(["loan"], [1], limit=5)
    lexicon.search(["loan"], [1, 2], limit=5)
    assert calls == [[1], [2]]
    assert len(lexicon) == 5


def test_limit_orders_best_first_and_unknown_terms_score_nothing() -> None:
    lexicon = _lexicon()
    result = lexicon.search(tokenize("LTV cap for a home loan"), [1, 2], limit=2)
    assert len(result.top) == 2
    assert result.scores[result.top[0]] >= result.scores[result.top[1]]
    assert lexicon.search(tokenize("quantum entanglement"), [1, 2], limit=5).top == []
    assert lexicon.search(tokenize("loan"), [], limit=5).top == []


def test_an_acronym_matches_its_long_form_both_ways() -> None:
    lexicon = _lexicon()
    # "PEP" is defined in clause 3.2.(a); a question with the long form finds 5.4, which says only "PEP"
    by_long_form = lexicon.search(tokenize("who approves an account for a politically exposed person"), [1], limit=5)
    assert ("c2", "5.4") in by_long_form.top[:2]
    by_acronym = lexicon.search(tokenize("is a PEP a risk"), [1], limit=5)
    assert by_acronym.top[0] == ("c2", "3.2.(a)")


@pytest.mark.parametrize(("text", "expected"), [
    ("a politically exposed person (PEP) or", [("PEP", "politically exposed person")]),
    ("the Anti-Money Laundering (AML) rules", [("AML", "Anti-Money Laundering")]),
    ("the Loan to Value (LTV) ratio", [("LTV", "Loan to Value")]),
    ("the Financial Action Task Force (\u201cFATF\u201d)", [("FATF", "Financial Action Task Force")]),
    ("(a) an item; the Bank (the Bank); a limit (INR 5 lakh)", []),
    ("the customer (PEP) is", []),  # capitals that are not the initials of the words before
])
def test_acronym_definitions(text: str, expected: list) -> None:
    assert acronym_definitions(text) == expected


@pytest.mark.parametrize(("question", "history"), [
    ("What changed in the LTV cap between version 1.0 and version 2.0?", True),
    ("How did the periodic KYC interval change in the 2026 policy?", True),
    ("What were the old and new Band B hotel limits?", True),
    ("What was the LTV cap in the previous version?", True),
    ("What is the LTV cap for a 60 lakh loan?", False),
    ("Can I change my nominee?", False),
])
def test_questions_about_changes_search_superseded_versions(question: str, history: bool) -> None:
    assert asks_about_history(question) is history


def test_expansions_spell_out_the_other_form_for_the_embedding_query() -> None:
    lexicon = _lexicon()
    lexicon.ensure_loaded([1])
    assert lexicon.expansions(tokenize("who signs off a PEP account")) == ["politically exposed person"]
    assert lexicon.expansions(tokenize("a politically exposed person wants an account")) == ["PEP"]
    assert lexicon.expansions(tokenize("what is the LTV cap")) == []  # LTV is never defined in this corpus


def test_an_acronym_the_whole_corpus_uses_is_not_spelled_out() -> None:
    common = [(1, "c1", "1.0", [], "the Abu Dhabi Global Market (ADGM) and the Financial Services Regulatory "
                                    "Authority (FSRA)")]
    common += [(1, f"c{i}", f"1.{i}", [], f"Rule {i} applies in the ADGM.") for i in range(1, 40)]
    common += [(1, "c99", "9.9", [], "an FSRA rule")]
    lexicon = ClauseLexicon(lambda ids: common)
    lexicon.ensure_loaded([1])
    # ADGM is in 40 of 41 clauses: spelling it out tells the search nothing; FSRA is in 2
    assert lexicon.expansions(tokenize("which ADGM rule covers FSRA fees")) == [
        "Financial Services Regulatory Authority"]
