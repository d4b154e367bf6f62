"""Try the router's candidates in order until one gives a verified answer; quote the clauses if none does.

Rules:

* A model's answer is served only if `verify_answer` passes (it cites clauses its prompt showed,
  all retrieved, every number in it appears in a cited clause, it does not repeat itself, and
  for a model held to the clause's wording, few enough of its words are new)
  and the model finished it: an answer cut off at `MAX_ANSWER_TOKENS`, or stopped because the
  model was looping, is not served however well it starts.
* "Not available in policy" from a model is NOT served: the clauses passed the retrieval
  threshold, so they are probably relevant, and a small model often gives up wrongly. It is
  recorded as `declined` and the next candidate (ultimately the tier-0 quote, which lets the
  reader judge the clause) is tried. The service itself answers "Not available in policy"
  when retrieval finds nothing above the threshold.
* A timeout or any generation error moves on to the next candidate; nothing here raises for a
  down endpoint or a broken model.
* At most `retry_budget + 1` model calls; candidates past that are recorded as `skipped`.
* The last resort is the tier-0 quote, which cannot fail.
* Every candidate considered leaves an `Attempt`: for a model call the prompt it was sent, the
  raw output, the verification result, tokens, cost (tokens x the policy file's prices) and
  latency; for a skipped candidate the reason; for the tier-0 quote the quoted text.
* A model call's attempt is appended to the caller's list as soon as the model has answered,
  before verification: if anything after that raises (a verifier bug), the caller still holds
  every prompt already sent to a model and can audit it. Such an attempt stays `unverified`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from governance.redaction import redact_urls
from services.generation.base import (FINISH_LENGTH, FINISH_LOOP, Generator, GenerationError, GenerationTimeout,
                                      generation_cost)
from services.generation.prompts import answer_grammar, build_messages, parse_citations, prompt_clauses
from services.query.router import RouteDecision
from services.query.schemas import NOT_AVAILABLE
from services.query.verify import RetrievedClause, Verification, is_not_available, verify_answer

# Outcomes of an attempt.
SERVED, FAILED_VERIFICATION, DECLINED, ERROR, TIMEOUT, SKIPPED, UNVERIFIED = (
    "served", "failed_verification", "declined", "error", "timeout", "skipped", "unverified")
# One or two sentences. A clause-length answer takes 50-80 tokens: at 48, 21 of 44 SmolLM2 answers
# served in the tiering bench were cut off mid-sentence; at 96, 3 of 52 (all three loops).
MAX_ANSWER_TOKENS = 96


@dataclass
class Attempt:
    tier: int
    model_key: str | None
    zone: str | None
    prompt: list[dict] | None
    raw_output: str | None
    verification: Verification | None
    input_tokens: int
    output_tokens: int
    cost: float
    latency_ms: float
    error: str | None
    outcome: str  # served | failed_verification | declined | error | timeout | skipped | unverified
    verify_ms: float = 0.0
    finish: str | None = None  # why the model stopped: stop | length | loop (None: no answer)
    faq_id: int | None = None  # an approved FAQ answer served at tier 0 (services.faq)


@dataclass
class EscalationResult:
    answer: str
    cited: tuple[RetrievedClause, ...]
    tier: int
    model_key: str | None
    zone: str | None
    attempts: list[Attempt]
    cost: float


def format_citation(clause: RetrievedClause) -> str:
    return (f"— {clause.policy_title}, clause {clause.clause}, version {clause.version}, "
            f"effective {clause.effective_date}")


def quote_answer(clauses: Sequence[RetrievedClause], max_clauses: int = 2) -> str:
    """Tier 0: the best clauses verbatim (in retrieval order), each followed by its citation."""
    quoted = [f"\"{c.text.strip()}\"\n{format_citation(c)}" for c in clauses[:max_clauses]]
    return "\n\n".join(quoted) if quoted else NOT_AVAILABLE


def _quote_result(clauses: Sequence[RetrievedClause], attempts: list[Attempt], max_clauses: int = 2) -> EscalationResult:
    started = time.perf_counter()
    answer = quote_answer(clauses, max_clauses)
    attempts.append(Attempt(tier=0, model_key=None, zone=None, prompt=None, raw_output=answer, verification=None,
                            input_tokens=0, output_tokens=0, cost=0.0,
                            latency_ms=(time.perf_counter() - started) * 1000, error=None, outcome=SERVED))
    return EscalationResult(answer=answer, cited=tuple(clauses[:max_clauses]), tier=0, model_key=None, zone=None,
                            attempts=attempts, cost=sum(a.cost for a in attempts))


def run_escalation(decision: RouteDecision, question: str, clauses: Sequence[RetrievedClause],
                   generators: Mapping[str, Generator], retry_budget: int,
                   attempts: list[Attempt] | None = None) -> EscalationResult:
    """Serve the first verified answer from the candidates in order; never raises for a failing model.

    Attempts are appended to `attempts` when the caller passes its own list, so that what was
    sent to models survives in the caller's hands even if something here raises.
    """
    attempts = [] if attempts is None else attempts
    model_calls = 0
    for candidate in decision.candidates:
        if candidate.tier == 0 or candidate.model_key is None:
            return _quote_result(clauses, attempts)
        skipped = Attempt(tier=candidate.tier, model_key=candidate.model_key, zone=candidate.zone, prompt=None,
                          raw_output=None, verification=None, input_tokens=0, output_tokens=0, cost=0.0,
                          latency_ms=0.0, error=None, outcome=SKIPPED)
        if model_calls > retry_budget:
            skipped.error = f"retry budget of {retry_budget} exhausted"
            attempts.append(skipped)
            continue
        generator = generators.get(candidate.model_key)
        if generator is None:
            skipped.error = "no generator is configured for this model"
            attempts.append(skipped)
            continue
        if generator.spec.zone != candidate.zone:  # defence in depth: never trust a mis-keyed generator
            skipped.error = f"the generator's zone {generator.spec.zone} is not the candidate's zone {candidate.zone}"
            attempts.append(skipped)
            continue
        model_calls += 1
        messages = build_messages(question, clauses, candidate.tier)
        shown = prompt_clauses(clauses, candidate.tier)  # a model may cite only what it was shown
        attempt = _call(candidate.tier, candidate.model_key, candidate.zone, generator, messages, len(shown))
        attempts.append(attempt)  # before verification, which may raise: the prompt was sent either way
        if attempt.outcome == UNVERIFIED:
            _verify(attempt, shown, question, generator.spec.max_new_word_share)
        if attempt.outcome == SERVED:
            served = attempt
            by_ref = {c.ref: c for c in clauses}
            cited = tuple(by_ref[r] for r in served.verification.cited_refs if r in by_ref)
            return EscalationResult(answer=served.raw_output or "", cited=cited, tier=candidate.tier,
                                    model_key=candidate.model_key, zone=candidate.zone, attempts=attempts,
                                    cost=sum(a.cost for a in attempts))
    return _quote_result(clauses, attempts)  # the router always ends with tier 0; this is a safety net


def _call(tier: int, model_key: str, zone: str | None, generator: Generator, messages: list[dict],
          n_clauses: int) -> Attempt:
    """One model call: an `unverified` attempt holding the answer, or a timeout or error."""
    started = time.perf_counter()
    try:
        generation = generator.generate(messages, max_tokens=MAX_ANSWER_TOKENS, grammar=answer_grammar(n_clauses))
    except GenerationTimeout as exc:  # what it consumed before it was stopped is paid for all the same
        return Attempt(tier=tier, model_key=model_key, zone=zone, prompt=messages, raw_output=None, verification=None,
                       input_tokens=exc.input_tokens, output_tokens=exc.output_tokens,
                       cost=generation_cost(generator.spec, exc.input_tokens, exc.output_tokens),
                       latency_ms=(time.perf_counter() - started) * 1000, error=str(exc), outcome=TIMEOUT)
    except GenerationError as exc:
        return Attempt(tier=tier, model_key=model_key, zone=zone, prompt=messages, raw_output=None, verification=None,
                       input_tokens=0, output_tokens=0, cost=0.0, latency_ms=(time.perf_counter() - started) * 1000,
                       error=str(exc), outcome=ERROR)
    except Exception as exc:  # a backend failing in a way it did not wrap: the prompt was sent, so record it
        return Attempt(tier=tier, model_key=model_key, zone=zone, prompt=messages, raw_output=None, verification=None,
                       input_tokens=0, output_tokens=0, cost=0.0, latency_ms=(time.perf_counter() - started) * 1000,
                       error=redact_urls(f"{type(exc).__name__}: {exc}"), outcome=ERROR)
    cost = generation_cost(generator.spec, generation.input_tokens, generation.output_tokens)
    return Attempt(tier=tier, model_key=model_key, zone=zone, prompt=messages, raw_output=generation.text,
                   verification=None, input_tokens=generation.input_tokens,
                   output_tokens=generation.output_tokens, cost=cost, latency_ms=generation.latency_ms,
                   error=None, outcome=UNVERIFIED, finish=generation.finish)


_UNFINISHED = {FINISH_LENGTH: "the answer was cut off at the {n}-token limit",
               FINISH_LOOP: "the model was stopped after {n} tokens: it was repeating itself"}


def _verify(attempt: Attempt, clauses: Sequence[RetrievedClause], question: str,
            max_new_word_share: float | None) -> None:
    """Judge an answered attempt in place: served, declined or failed verification."""
    text = attempt.raw_output or ""
    verify_started = time.perf_counter()
    verification = verify_answer(text, parse_citations(text, clauses), clauses, question=question,
                                 max_new_word_share=max_new_word_share)
    declined = is_not_available(text)
    unfinished = _UNFINISHED.get(attempt.finish or "")
    if unfinished is not None and not declined:
        verification = Verification(False, (*verification.problems, unfinished.format(n=attempt.output_tokens)),
                                    verification.cited_refs)
    attempt.verify_ms = (time.perf_counter() - verify_started) * 1000
    attempt.verification = verification
    if declined:
        attempt.outcome, attempt.error = DECLINED, ("the model answered 'Not available in policy' although "
                                                    "clauses were retrieved")
    elif verification.passed:
        attempt.outcome, attempt.error = SERVED, None
    else:
        attempt.outcome, attempt.error = FAILED_VERIFICATION, "; ".join(verification.problems)
