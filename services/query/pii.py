"""PII detection on questions with Presidio, pattern recognizers only, fully offline.

Why no NER model: Presidio's default NLP engine loads (and tries to download)
`en_core_web_lg`; this service runs without network and without that model. The
analyzer therefore runs on a blank spaCy English tokenizer, and every recognizer
is pattern- or checksum-based:

- EMAIL_ADDRESS: Presidio's regex, validated against the public-suffix snapshot
  bundled with tldextract (never fetched; see `_OfflineEmailRecognizer`).
- PHONE_NUMBER: python-phonenumbers, numbers valid in India, the UK or the US.
- CREDIT_CARD (Luhn), IBAN_CODE (mod-97), IN_AADHAAR (Verhoeff), IN_PAN.
- BANK_ACCOUNT: 9-18 digit numbers introduced by "a/c", "account no" and the
  like, or near such words.
- PERSON: names after an honorific (Mr, Mrs, Ms, Dr, Shri, Smt, ...) or after a
  role word (customer, client, applicant, borrower, ...). Known gap: a bare
  name with no such cue ("can Ramesh Kumar get a loan?") is not detected; that
  needs an NER model.

Which entity types count, and the minimum score, come from the policy file
(`pii.entities`, `pii.min_score`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from governance.policy import PiiRules, PolicyError

LANGUAGE = "en"

# Cue words. A lookbehind per cue (Python needs fixed-width lookbehinds) keeps the
# cue itself out of the reported span, so redaction reads "customer <PERSON>".
_HONORIFICS = ("mr", "mrs", "ms", "miss", "dr", "shri", "sri", "smt", "kumari")
_ROLE_WORDS = ("customer", "client", "applicant", "co-applicant", "borrower", "co-borrower", "guarantor",
               "depositor", "nominee", "account holder", "named", "name is")
# Capitalised words that follow a role word in banking terms, not names
# ("Customer Due Diligence", "Client Risk Profile").
_NOT_NAMES = ("Due", "Diligence", "Identification", "Id", "Acceptance", "Service", "Services", "Care", "Risk",
              "Profile", "Agreement", "Onboarding", "Data", "Information", "Charter", "Policy", "Account",
              "Accounts", "Protection", "Complaint", "Complaints", "Grievance", "Grievances", "Relationship",
              "Experience", "Education", "Awareness", "Rights", "Consent", "Master", "Category", "Segment",
              "Code", "Verification", "Declaration", "Form", "Portal", "Charges", "Liability", "The", "A", "An")
_NAME = r"(?-i:(?:[A-Z]\.\s?|[A-Z]\s){0,2}[A-Z][a-z]+(?:[\s'-][A-Z][a-z]+){0,2})\b"
_LOWERCASE_NAME = (r"(?!(?:and|or|the|an|to|of|is|are|was|were|be|been|has|have|had|will|would|should|can|could"
                   r"|must|may|with|for|in|on|at|by|as|who|what|which|whose|if|not|no)\b)[a-z]{2,}\b")

_ACCOUNT_CUES = ("a/c", "a/c no", "a/c no.", "a/c number", "acct", "acct no", "acct no.", "account no",
                 "account no.", "account number", "account", "ac no", "ac no.", "bank account")
# Amounts are not account numbers, whatever words surround them.
_NOT_AMOUNT = r"(?<!rs )(?<!rs\. )(?<!rs\.)(?<!inr )(?<!₹ )(?<!₹)(?<!\$)(?<!usd )"


def _after_any(cues: Iterable[str], separators: Sequence[str]) -> str:
    return "(?:" + "|".join(rf"(?<=\b{re.escape(cue + sep)})" for cue in cues for sep in separators) + ")"


@dataclass(frozen=True)
class PiiFinding:
    entity_type: str
    start: int
    end: int
    score: float


def _build_recognizers() -> list[Any]:
    """The explicit recognizer set; nothing is loaded from Presidio's default registry."""
    import tldextract
    from presidio_analyzer import Pattern, PatternRecognizer
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        InAadhaarRecognizer,
        InPanRecognizer,
        PhoneRecognizer,
    )

    # An extractor with no suffix-list URLs and no disk cache answers from the
    # snapshot inside the tldextract wheel; the module-level `tldextract.extract`
    # that Presidio's EmailRecognizer calls would fetch the list on first use.
    offline_suffixes = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)

    class _OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return offline_suffixes(pattern_text.rsplit("@", 1)[-1]).fqdn != ""

    class _ValidatedPhoneRecognizer(PhoneRecognizer):
        # Presidio scores a phonenumbers match 0.4 and relies on a nearby word like
        # "phone" to lift it. A number that phonenumbers accepts as *valid* for the
        # region is strong evidence on its own, and questions rarely say "phone".
        SCORE = 0.6

    # Pattern scores rank how strong each cue is (checksums score 1.0 in Presidio);
    # the policy's `pii.min_score` (0.5) decides which findings count.
    person = PatternRecognizer(
        supported_entity="PERSON",
        name="CuedPersonRecognizer",
        patterns=[
            Pattern("name after honorific", _after_any(_HONORIFICS, (" ", ". ")) + _NAME, 0.7),
            Pattern("lower-case name after honorific",
                    _after_any(("mr", "mrs", "shri", "smt"), (" ", ". ")) + _LOWERCASE_NAME, 0.55),
            Pattern("name after role word",
                    _after_any(_ROLE_WORDS, (" ",)) + r"(?!(?-i:" + "|".join(_NOT_NAMES) + r")\b)" + _NAME, 0.6),
        ],
    )
    bank_account = PatternRecognizer(
        supported_entity="BANK_ACCOUNT",
        name="BankAccountRecognizer",
        patterns=[
            Pattern("account number after a/c cue",
                    _after_any(_ACCOUNT_CUES, (" ", ": ", ":", " - ", " # ", "# ")) + r"\d{9,18}\b", 0.65),
            # Bare long numbers are often references or amounts: weak until a
            # context word (below) lifts them past the policy's minimum score.
            Pattern("bare 9-18 digit number", _NOT_AMOUNT + r"\b\d{9,18}\b", 0.2),
        ],
        context=["account", "a/c", "acct", "savings", "current", "iban", "ifsc", "beneficiary"],
    )
    return [
        _OfflineEmailRecognizer(),
        _ValidatedPhoneRecognizer(supported_regions=("IN", "GB", "US")),
        CreditCardRecognizer(),
        IbanRecognizer(),
        InPanRecognizer(),
        InAadhaarRecognizer(),
        bank_account,
        person,
    ]


def _blank_english_engine() -> Any:
    """A Presidio NlpEngine over `spacy.blank("en")`: tokens only, no model, no download."""
    import spacy
    from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine
    from spacy.symbols import ORTH

    class BlankEnglishNlpEngine(NlpEngine):
        def __init__(self) -> None:
            self.nlp: Any = None

        def load(self) -> None:
            nlp = spacy.blank(LANGUAGE)
            # Keep "a/c" whole so it can serve as a context word for account numbers.
            for form in ("a/c", "A/C", "A/c"):
                nlp.tokenizer.add_special_case(form, [{ORTH: form}])
            self.nlp = nlp

        def is_loaded(self) -> bool:
            return self.nlp is not None

        def process_text(self, text: str, language: str) -> NlpArtifacts:
            return self._artifacts(self.nlp(text), language)

        def process_batch(self, texts: Iterable[str], language: str, batch_size: int = 1, n_process: int = 1,
                          as_tuples: bool = False, **kwargs: Any) -> Iterator[Any]:
            for text in texts:
                yield text, self.process_text(str(text), language)

        def is_stopword(self, word: str, language: str) -> bool:
            return self.nlp.vocab[word].is_stop

        def is_punct(self, word: str, language: str) -> bool:
            return self.nlp.vocab[word].is_punct

        def get_supported_entities(self) -> list[str]:
            return []

        def get_supported_languages(self) -> list[str]:
            return [LANGUAGE]

        def _artifacts(self, doc: Any, language: str) -> NlpArtifacts:
            # A blank pipeline has no lemmatizer; the lower-cased surface form
            # stands in, which is what Presidio's context matching compares.
            # Tokens go in as plain strings: the context enhancer walks them once
            # per finding, and walking a spaCy Doc builds a Token object per step
            # (most of detect()'s time). None of our recognizers reads Token attributes.
            tokens = [t.text for t in doc]
            return NlpArtifacts(entities=[], tokens=tokens, tokens_indices=[t.idx for t in doc],
                                lemmas=[t.lower() for t in tokens], nlp_engine=self, language=language, scores=[])

    return BlankEnglishNlpEngine()


class PiiDetector:
    """Finds the policy's PII entity types in a question; the analyzer is built once in warm_up()."""

    def __init__(self, rules: PiiRules) -> None:
        self.rules = rules
        self._analyzer: Any = None
        self._entities: list[str] = []

    def warm_up(self) -> None:
        if self._analyzer is not None:
            return
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

        registry = RecognizerRegistry(supported_languages=[LANGUAGE])
        for recognizer in _build_recognizers():
            registry.add_recognizer(recognizer)
        supported = {entity for r in registry.recognizers for entity in r.supported_entities}
        missing = sorted(set(self.rules.entities) - supported)
        if missing:
            # Fail at start-up: the policy asks for detection this build cannot do.
            raise PolicyError(f"pii.entities lists {', '.join(missing)}, which no configured recognizer detects; "
                              f"supported: {', '.join(sorted(supported))}")
        analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=_blank_english_engine(),
            supported_languages=[LANGUAGE],
            # Also look two tokens after a match: "1234567890 is his account".
            context_aware_enhancer=LemmaContextAwareEnhancer(context_prefix_count=5, context_suffix_count=2),
        )
        self._entities = list(self.rules.entities)
        self._analyzer = analyzer

    def detect(self, text: str) -> list[PiiFinding]:
        """PII spans of the policy's entity types scoring at least `min_score`, in text order."""
        if self._analyzer is None:
            raise RuntimeError("PiiDetector used before warm_up()")
        if not text or not self._entities:
            return []
        results = self._analyzer.analyze(text=text, language=LANGUAGE, entities=self._entities,
                                         score_threshold=self.rules.min_score)
        findings = {PiiFinding(entity_type=r.entity_type, start=r.start, end=r.end, score=round(float(r.score), 4))
                    for r in results if r.entity_type in self._entities and r.score >= self.rules.min_score}
        return sorted(findings, key=lambda f: (f.start, f.end, f.entity_type))


def redact(text: str, findings: Sequence[PiiFinding]) -> str:
    """Replace each finding with `<ENTITY_TYPE>` for logs; overlapping spans merge into one placeholder."""
    spans: list[list[Any]] = []  # [start, end, entity_type, score]
    for f in sorted(findings, key=lambda f: (f.start, -f.end)):
        start, end = max(0, f.start), min(len(text), f.end)
        if start >= end:
            continue
        if spans and start < spans[-1][1]:
            last = spans[-1]
            last[1] = max(last[1], end)
            if f.score > last[3]:
                last[2], last[3] = f.entity_type, f.score
            continue
        spans.append([start, end, f.entity_type, f.score])
    out, cursor = [], 0
    for start, end, entity_type, _ in spans:
        out.append(text[cursor:start])
        out.append(f"<{entity_type}>")
        cursor = end
    out.append(text[cursor:])
    return "".join(out)
