"""The governed request path: guards, retrieval, threshold, routing, verification, audit.

Each step is its own function or module; this service only sequences them and
writes the audit record. The answer leaves only after its audit record commits.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from governance.audit import AuditEntry, append
from governance.policy import GovernancePolicy
from governance.records.audit import AuditRecord
from governance.residency import allowed_zones, effective_classification, visible_classifications
from services.db.session import transaction
from services.embedding.sentence import Embedder
from services.errors import AuditUnavailable, BudgetExceeded, PolicyHubError
from services.faq.matching import FaqIndex, FaqMatch, rank_faqs, unservable_reason, verify_faq_answer
from services.faq.service import FaqCatalog
from services.generation.base import Generator
from services.query.complexity import classify_complexity
from services.query.escalation import SERVED, Attempt, EscalationResult, format_citation, quote_answer, run_escalation
from services.query.guards import ProhibitedUseDetector, assess_risk, check_input
from services.query.pii import PiiDetector
from services.query.retrieval import ClauseHit, Retriever, version_scope, visible_versions
from services.query.router import Budget, decide
from services.query.schemas import NOT_AVAILABLE, AskCreate, AskRead, CitationRead, LatencyRead, ModelRead
from services.query.verify import RetrievedClause, Verification
from services.users.service import Principal

log = structlog.get_logger()


@dataclass
class Trace:
    """Everything the audit record needs, filled in as the request proceeds."""

    request_id: str
    channel: str
    question: str | None = None
    declared: str | None = None
    as_of: str | None = None
    sla_ms: int | None = None
    pii_types: list[str] = field(default_factory=list)
    prohibited: dict | None = None
    risk: str | None = None
    retrieved: list[dict] = field(default_factory=list)
    threshold: float | None = None
    threshold_met: bool | None = None
    best_score: float | None = None
    route: dict | None = None
    # The most restricted classification known so far; a failed request's audit record shows it too.
    effective_classification: str | None = None
    attempts: list[dict] = field(default_factory=list)
    error: dict | None = None


def to_retrieved(hits: list[ClauseHit]) -> list[RetrievedClause]:
    return [RetrievedClause(ref=f"C{i}", policy_id=h.policy_id, policy_title=h.policy_title, clause=h.clause,
                            version=h.version, effective_date=h.effective_date, classification=h.classification,
                            text=h.text, score=h.dense_score) for i, h in enumerate(hits, start=1)]


def citation(clause: RetrievedClause, excerpt_chars: int = 300) -> CitationRead:
    text = clause.text.strip()
    excerpt = text if len(text) <= excerpt_chars else text[:excerpt_chars].rsplit(" ", 1)[0] + " …"
    return CitationRead(policy_id=clause.policy_id, policy_title=clause.policy_title, clause=clause.clause,
                        version=clause.version, effective_date=clause.effective_date,
                        score=round(clause.score, 4), excerpt=excerpt, text=text)


class QueryService:
    def __init__(self, *, policy: GovernancePolicy, session_factory: sessionmaker[Session], embedder: Embedder,
                 retriever: Retriever, prohibited: ProhibitedUseDetector, pii: PiiDetector,
                 generators: dict[str, Generator], approved_models: set[str], embedding_key: str,
                 embedding_fingerprint: str, faqs: FaqCatalog | None = None) -> None:
        self.policy = policy
        self.session_factory = session_factory
        self.embedder = embedder
        self.retriever = retriever
        self.prohibited = prohibited
        self.pii = pii
        self.generators = generators
        self.approved_models = approved_models
        self.embedding_key = embedding_key
        self.embedding_fingerprint = embedding_fingerprint
        self.faqs = faqs

    @property
    def threshold(self) -> float:
        return self.policy.retrieval.threshold_for(self.embedding_key)

    def ask(self, principal: Principal, request: AskCreate, channel: str = "api",
            request_id: str | None = None) -> AskRead:
        """Answer one question; every outcome, errors included, leaves an audit record."""
        trace = Trace(request_id=request_id or uuid.uuid4().hex, channel=channel)
        started = time.perf_counter()
        try:
            response = self._answer(principal, request, trace, started)
        except PolicyHubError as exc:
            trace.error = {"error": exc.error, "detail": exc.detail, "status": exc.status_code}
            self._audit(principal, trace, None)
            raise
        except Exception as exc:
            trace.error = {"error": "internal_error", "detail": type(exc).__name__}
            self._audit(principal, trace, None)
            raise
        self._audit(principal, trace, response)
        return response

    def audit_rejected(self, principal: Principal, error: PolicyHubError, channel: str = "api",
                       request_id: str | None = None, question: object = None) -> None:
        """Audit a request refused before `ask` could read it (a body its schema rejects)."""
        trace = Trace(request_id=request_id or uuid.uuid4().hex, channel=channel,
                      question=question if isinstance(question, str) else None,
                      error={"error": error.error, "detail": error.detail, "status": error.status_code})
        self._audit(principal, trace, None)

    # -- the request path ------------------------------------------------------------

    def _answer(self, principal: Principal, request: AskCreate, trace: Trace, started: float) -> AskRead:
        policy = self.policy
        trace.question = request.question if isinstance(request.question, str) else None
        trace.declared, trace.sla_ms = request.classification, request.sla_ms
        trace.as_of = request.as_of.isoformat() if request.as_of else None
        question, declared = check_input(request.question, request.classification, policy)

        t0 = time.perf_counter()
        q_vec = self.embedder.embed([question])[0]
        verdict = self.prohibited.check(question, q_vec)
        trace.prohibited = asdict(verdict)
        findings = self.pii.detect(question)
        trace.pii_types = sorted({f.entity_type for f in findings})
        trace.risk = assess_risk(question, policy.risk)
        request_class = trace.effective_classification = effective_classification(
            declared, bool(findings), [], policy)

        def refusal(reason: str, answer: str) -> AskRead:
            return self._response(trace, started, answer=answer, citations=[], refused=True, reason=reason,
                                  tier=0, model=None, classification=request_class,
                                  latency=LatencyRead(route=_ms(t0)))

        if verdict.prohibited:
            return refusal(f"prohibited_use: {verdict.category}: {verdict.reason}",
                           f"Refused: {verdict.reason}")

        as_of, history = version_scope(question, request.as_of)
        with transaction(self.session_factory) as session:
            versions = visible_versions(session, principal.clearance, policy, as_of, history)
            spent_today = _spent_today(session, principal.name)
            faqs = self.faqs.current(session) if self.faqs is not None else None
        result = self.retriever.retrieve(question, q_vec, versions)
        t_retrieve = _ms(t0)
        trace.threshold, trace.best_score = self.threshold, result.best_dense
        trace.retrieved = [{"rank": r, "policy_id": h.policy_id, "version": h.version, "clause": h.clause,
                            "classification": h.classification, "dense_score": round(h.dense_score, 5),
                            "lexical_score": round(h.lexical_score, 5), "fused_score": round(h.score, 6)}
                           for r, h in enumerate(result.clauses, start=1)]
        passing = [h for h in result.clauses if h.dense_score >= self.threshold]
        trace.threshold_met = bool(passing)
        if not passing:
            return self._response(trace, started, answer=NOT_AVAILABLE, citations=[], refused=True,
                                  reason="not_in_policy", tier=0, model=None, classification=request_class,
                                  latency=LatencyRead(retrieve=t_retrieve))
        clauses = to_retrieved(passing)
        classification = trace.effective_classification = effective_classification(
            declared, bool(findings), [c.classification for c in clauses], policy)

        t1 = time.perf_counter()
        features = classify_complexity(question, [c.score for c in clauses])
        models = [(spec, spec.key in self.approved_models and spec.key in self.generators)
                  for spec in policy.models]
        budget = Budget(per_request_cap=policy.routing.per_request_cost_cap,
                        daily_remaining=max(0.0, policy.routing.daily_budget_per_user - spent_today))
        decision = decide(features, classification, trace.risk, request.sla_ms, budget, models, policy)
        trace.route = {"features": asdict(features), "effective_classification": classification,
                       "allowed_zones": list(allowed_zones(classification, policy)),
                       "candidates": [asdict(c) for c in decision.candidates], "reasons": list(decision.reasons),
                       "risk": decision.risk, "human_review_required": decision.human_review_required,
                       "refused": decision.refused, "budget_exceeded": decision.budget_exceeded}
        t_route = _ms(t1)
        if decision.refused:
            return self._response(trace, started, answer=f"Refused: {decision.refusal_reason}", citations=[],
                                  refused=True, reason=f"risk: {decision.refusal_reason}", tier=0, model=None,
                                  classification=classification,
                                  latency=LatencyRead(retrieve=t_retrieve, route=t_route))
        # An approved FAQ answer costs nothing, so it is served even past the budget; every guard,
        # the threshold and the risk refusal above have run first.
        t_faq = time.perf_counter()
        faq = self._match_faq(faqs, question, q_vec, versions, principal.clearance, history, trace)
        if faq is not None:
            match, verification = faq
            bound = [b.clause for b in match.entry.bound]
            classification = trace.effective_classification = effective_classification(
                declared, bool(findings), [c.classification for c in (*clauses, *bound)], policy)
            trace.route["effective_classification"] = classification
            trace.attempts = [_attempt_dict(Attempt(
                tier=0, model_key=None, zone=None, prompt=None, raw_output=match.entry.answer,
                verification=verification, input_tokens=0, output_tokens=0, cost=0.0,
                latency_ms=_ms(t_faq), error=None, outcome=SERVED, faq_id=match.entry.id))]
            answer = "\n".join([match.entry.answer, "", *(format_citation(c) for c in bound)])
            return self._response(
                trace, started, answer=answer,
                citations=[citation(replace(c, score=match.similarity)) for c in bound], refused=False,
                reason=None, tier=0, model=None, classification=classification,
                human_review=decision.human_review_required,
                latency=LatencyRead(retrieve=t_retrieve, route=t_route + _ms(t_faq)))
        if decision.budget_exceeded:
            raise BudgetExceeded(f"budget exceeded: {decision.budget_exceeded}")

        t2 = time.perf_counter()
        attempts: list[Attempt] = []
        try:
            outcome = self._generate(decision, question, clauses, attempts)
        finally:  # also when escalation raises: prompts already sent to models belong in the audit record
            trace.attempts = [_attempt_dict(a) for a in attempts]
        t_generate = _ms(t2)
        spec = policy.model(outcome.model_key) if outcome.model_key else None
        model = ModelRead(name=spec.name, version=spec.version, zone=spec.zone) if spec else None
        verify_ms = sum(a.get("verify_ms", 0.0) for a in trace.attempts)
        cited = list(outcome.cited) or clauses[:1]
        return self._response(
            trace, started, answer=outcome.answer, citations=[citation(c) for c in cited], refused=False,
            reason=None, tier=outcome.tier, model=model, classification=classification,
            human_review=decision.human_review_required, cost=outcome.cost,
            latency=LatencyRead(retrieve=t_retrieve, route=t_route, generate=t_generate - verify_ms,
                                verify=verify_ms))

    def _match_faq(self, index: FaqIndex | None, question: str, q_vec, versions: dict, clearance: str,  # noqa: ANN001
                   history: bool, trace: Trace) -> tuple[FaqMatch, Verification] | None:
        """The most similar approved FAQ this request may be served, re-verified; why others were not, in the trace."""
        if index is None or not index.entries:
            return None
        min_similarity = self.policy.faq.min_similarity
        best, similar = rank_faqs(index, q_vec, min_similarity)
        record: dict = {"min_similarity": min_similarity, "served": None, "not_served": [],
                        "best": {"id": best.entry.id, "similarity": round(best.similarity, 5)}}
        trace.route["faq"] = record
        visible = visible_classifications(clearance, self.policy)
        for match in similar:
            seen = {"id": match.entry.id, "similarity": round(match.similarity, 5), "phrasing": match.phrasing,
                    "bound": match.entry.bound_refs()}
            reason = unservable_reason(match, question, versions.keys(), visible, history)
            verification = None
            if reason is None:
                # Served text is checked at serve time, not trusted from approval: the same verifier
                # as a model's answer, against the bound clauses' texts.
                verification = verify_faq_answer(match.entry.answer, [b.clause for b in match.entry.bound])
                if not verification.passed:
                    reason = "verification: " + "; ".join(verification.problems)
            if reason is not None:
                record["not_served"].append({**seen, "reason": reason})
                continue
            record["served"] = seen
            return match, verification
        return None

    def _generate(self, decision, question: str, clauses: list[RetrievedClause],  # noqa: ANN001
                  attempts: list[Attempt]) -> EscalationResult:
        if len(decision.candidates) == 1 and decision.candidates[0].tier == 0:
            quote = quote_answer(clauses)
            return EscalationResult(answer=quote, cited=tuple(clauses[:2]), tier=0, model_key=None, zone=None,
                                    attempts=attempts, cost=0.0)
        return run_escalation(decision, question, clauses, self.generators, self.policy.routing.retry_budget,
                              attempts)

    def _response(self, trace: Trace, started: float, *, answer: str, citations: list[CitationRead], refused: bool,
                  reason: str | None, tier: int, model: ModelRead | None, classification: str,
                  latency: LatencyRead, human_review: bool = False, cost: float = 0.0) -> AskRead:
        latency.total = _ms(started)
        return AskRead(request_id=trace.request_id, answer=answer, citations=citations, refused=refused,
                       refusal_reason=reason, tier=tier, model=model, effective_classification=classification,
                       human_review_required=human_review, latency_ms=latency, cost=round(cost, 8))

    # -- audit -------------------------------------------------------------------------

    def _audit(self, principal: Principal, trace: Trace, response: AskRead | None) -> None:
        payload = {"trace": asdict(trace), "embedding_model": self.embedding_key,
                   "embedding_fingerprint": self.embedding_fingerprint,
                   "response": response.model_dump(mode="json") if response else None}
        entry = AuditEntry(
            request_id=trace.request_id, event="ask", actor=principal.name, actor_role=principal.role,
            channel=trace.channel, payload=payload, question=trace.question,
            effective_classification=(response.effective_classification if response
                                      else trace.effective_classification),
            tier=response.tier if response else None,
            model_key=f"{response.model.name}@{response.model.version}" if response and response.model else None,
            refused=bool(response.refused) if response else False, pii_present=bool(trace.pii_types),
            policy_ids=sorted({c.policy_id for c in response.citations}) if response else (),
            cost=response.cost if response else 0.0)
        try:
            with transaction(self.session_factory) as session:
                append(session, entry)
        except Exception as exc:
            log.error("audit.write_failed", request_id=trace.request_id, error=type(exc).__name__)
            raise AuditUnavailable("the audit record could not be written; no answer is served") from exc
        log.info("ask.answered", request_id=trace.request_id, tier=entry.tier, refused=entry.refused,
                 error=(trace.error or {}).get("error"))


def _attempt_dict(attempt) -> dict:  # noqa: ANN001
    data = asdict(attempt)
    return data


def _spent_today(session: Session, actor: str) -> float:
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    total = session.scalar(select(func.coalesce(func.sum(AuditRecord.cost), 0.0)).where(
        AuditRecord.actor == actor, AuditRecord.created_at >= start, AuditRecord.created_at < start + timedelta(days=1)))
    return float(total or 0.0)


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)
