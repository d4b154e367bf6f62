"""PII detection with the real Presidio analyzer (pattern recognizers on a blank spaCy pipeline)."""

from __future__ import annotations

import socket

import pytest

from governance.policy import PiiRules, PolicyError, load_policy
from services.query.pii import PiiDetector, PiiFinding, redact

POLICY = load_policy()


def _verhoeff_check_digit(digits: str) -> str:
    """Check digit that makes `digits + d` a valid Verhoeff number (as Aadhaar numbers are)."""
    d = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
         [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
         [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
         [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]
    p = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
         [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
         [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8]]
    inverse = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9]
    c = 0
    for i, digit in enumerate(reversed(digits)):
        c = d[c][p[(i + 1) % 8][int(digit)]]
    return str(inverse[c])


AADHAAR = "23456789012"[:11] + _verhoeff_check_digit("23456789012"[:11])


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    detector = PiiDetector(POLICY.pii)
    detector.warm_up()
    return detector


def _spans(text: str, findings: list[PiiFinding]) -> set[tuple[str, str]]:
    return {(f.entity_type, text[f.start:f.end]) for f in findings}


@pytest.mark.integration
@pytest.mark.parametrize(("text", "entity", "span"), [
    ("please email ramesh.kumar@example.co.in the sanction letter", "EMAIL_ADDRESS", "ramesh.kumar@example.co.in"),
    ("her mobile is +91 98765 43210", "PHONE_NUMBER", "+91 98765 43210"),
    ("the customer gave 9876543210 as contact", "PHONE_NUMBER", "9876543210"),
    ("UK branch: +44 20 7946 0958", "PHONE_NUMBER", "+44 20 7946 0958"),
    ("US office (212) 555-0134", "PHONE_NUMBER", "(212) 555-0134"),
    ("card 4111 1111 1111 1111 was blocked", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("transfer to GB82 WEST 1234 5698 7654 32 today", "IBAN_CODE", "GB82 WEST 1234 5698 7654 32"),
    ("his PAN is ABCPE1234F", "IN_PAN", "ABCPE1234F"),
    (f"Aadhaar {AADHAAR[:4]} {AADHAAR[4:8]} {AADHAAR[8:]} on file", "IN_AADHAAR",
     f"{AADHAAR[:4]} {AADHAAR[4:8]} {AADHAAR[8:]}"),
    ("a/c no. 123456789012 was frozen", "BANK_ACCOUNT", "123456789012"),
    ("A/C 00012345678 of the branch", "BANK_ACCOUNT", "00012345678"),
    ("his savings account 000123456789 was debited", "BANK_ACCOUNT", "000123456789"),
    ("should we approve this loan for Mr Rao?", "PERSON", "Rao"),
    ("loan for Mrs. Priya Nair and her husband", "PERSON", "Priya Nair"),
    ("Dr R. K. Sharma applied", "PERSON", "R. K. Sharma"),
    ("KYC of smt lakshmi is pending", "PERSON", "lakshmi"),
    ("customer Ramesh Kumar wants a top-up", "PERSON", "Ramesh Kumar"),
    ("the borrower Anil Verma defaulted", "PERSON", "Anil Verma"),
    ("an applicant named Fatima Sheikh", "PERSON", "Fatima Sheikh"),
])
def test_each_policy_entity_type_is_found_with_its_span(detector, text, entity, span):
    findings = detector.detect(text)
    assert (entity, span) in _spans(text, findings), findings
    assert all(f.score >= POLICY.pii.min_score for f in findings)


@pytest.mark.integration
@pytest.mark.parametrize("text", [
    "what is the maximum LTV for a home loan above 75 lakh?",
    "what is the approval limit for a branch manager?",
    "what does the Customer Due Diligence section say about beneficial owners?",
    "how often must KYC be refreshed for high-risk customers?",
    "loans above Rs 100000000 in a current account need board approval",
    "what does clause 4.2.1 effective 2024-03-31 say about 90 days past due?",
    "is a guarantor required for education loans above 7.5 lakh?",
    "what is the penalty on prepayment of 10,00,000 within 12 months?",
    "what does RBI circular DOR.CRE.REC.25/21.01.003/2023-24 require?",
    "Mr and Mrs are honorifics; what does the KYC form call them?",
    "what is the customer's right to a copy of the Customer Rights Policy?",
    "how do I update the ABC form for account opening?",
    "which committee sanctions loans above 5 crore?",
    "the client Risk Profile must be reviewed annually",
])
def test_policy_questions_without_personal_data_have_no_findings(detector, text):
    assert detector.detect(text) == []


@pytest.mark.integration
def test_findings_are_in_text_order_and_redaction_names_the_types(detector):
    text = "customer Ramesh Kumar, phone +91 98765 43210, email ramesh@example.co.in"
    findings = detector.detect(text)
    assert [f.start for f in findings] == sorted(f.start for f in findings)
    assert redact(text, findings) == "customer <PERSON>, phone <PHONE_NUMBER>, email <EMAIL_ADDRESS>"


@pytest.mark.integration
def test_bare_names_without_a_cue_are_a_known_gap(detector):
    # No NER model: a name with no honorific or role word before it is missed.
    assert detector.detect("can Ramesh Kumar get a loan?") == []


@pytest.mark.integration
def test_only_policy_entities_at_or_above_the_minimum_score_are_reported():
    text = "call 9876543210 or write to ramesh@example.co.in"  # phone scores 0.6, email 1.0
    only_email = PiiDetector(PiiRules(entities=["EMAIL_ADDRESS"], min_score=0.5, classification="confidential"))
    only_email.warm_up()
    assert {f.entity_type for f in only_email.detect(text)} == {"EMAIL_ADDRESS"}
    strict = PiiDetector(PiiRules(entities=["PHONE_NUMBER", "EMAIL_ADDRESS"], min_score=0.9,
                                  classification="confidential"))
    strict.warm_up()
    assert {f.entity_type for f in strict.detect(text)} == {"EMAIL_ADDRESS"}
    lenient = PiiDetector(PiiRules(entities=["PHONE_NUMBER", "EMAIL_ADDRESS"], min_score=0.5,
                                   classification="confidential"))
    lenient.warm_up()
    assert {f.entity_type for f in lenient.detect(text)} == {"PHONE_NUMBER", "EMAIL_ADDRESS"}


@pytest.mark.unit
def test_the_constructor_is_cheap_and_detect_needs_warm_up():
    detector = PiiDetector(POLICY.pii)
    assert detector._analyzer is None
    with pytest.raises(RuntimeError, match="warm_up"):
        detector.detect("anything")


@pytest.mark.integration
def test_a_policy_entity_no_recognizer_detects_fails_at_warm_up():
    detector = PiiDetector(PiiRules(entities=["EMAIL_ADDRESS", "US_SSN"], min_score=0.5,
                                    classification="confidential"))
    with pytest.raises(PolicyError, match="US_SSN"):
        detector.warm_up()


@pytest.mark.integration
def test_warm_up_and_detect_never_touch_the_network_or_download_a_model(monkeypatch):
    import spacy.cli
    import tldextract

    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args else kwargs)
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(spacy.cli, "download", refuse)
    # Presidio's own EmailRecognizer calls this default extractor, which fetches
    # the public suffix list on first use; ours must not go through it.
    monkeypatch.setattr(tldextract, "extract", refuse)

    detector = PiiDetector(POLICY.pii)
    detector.warm_up()
    text = "mail a.b@bank.co.in, x@example.com or y@sub.example.org.uk; Mr Rao +91 98765 43210"
    found = {f.entity_type for f in detector.detect(text)}
    assert attempts == []
    assert {"EMAIL_ADDRESS", "PERSON", "PHONE_NUMBER"} <= found


@pytest.mark.unit
def test_redact_replaces_spans_and_merges_overlaps():
    text = "call 9876543210 about a/c 123456789012 now"
    findings = [
        PiiFinding("PHONE_NUMBER", 5, 15, 0.6),
        PiiFinding("BANK_ACCOUNT", 5, 15, 0.55),  # same span, lower score: one placeholder
        PiiFinding("BANK_ACCOUNT", 26, 38, 1.0),
        PiiFinding("IN_AADHAAR", 26, 38, 0.4),
    ]
    assert redact(text, findings) == "call <PHONE_NUMBER> about a/c <BANK_ACCOUNT> now"
    assert redact(text, []) == text
    assert redact("ab", [PiiFinding("PERSON", 1, 99, 1.0), PiiFinding("PERSON", 5, 9, 1.0)]) == "a<PERSON>"
    assert redact("abcdef", [PiiFinding("A", 0, 4, 0.5), PiiFinding("B", 2, 6, 0.9)]) == "<B>"
    assert redact("abcdef", [PiiFinding("A", 0, 2, 0.5), PiiFinding("B", 2, 4, 0.5)]) == "<A><B>ef"
