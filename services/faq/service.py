"""FAQ templates: add (admin) → proposed; approve (compliance or admin, never the author) →
approved; retire (compliance or admin) → retired. The only SQL on `faq_entries`.

Each step appends its audit event in the caller's session, so the change and its record
commit together or not at all; nothing here commits. An entry's questions, answer and bound
clauses are never edited: a change is a new entry and the old one retired.

`FaqCatalog` keeps the approved entries and their phrasings' embeddings in memory for the
request path, reloaded when the generation that every approval and retirement raises has
moved (so a change made by another process is seen on its next request).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from governance.audit import AuditEntry, append
from governance.policy import GovernancePolicy
from governance.records.base import utcnow
from governance.residency import classification_rank, visible_classifications
from services.db.models import Clause, DocumentVersion, FaqEntry, FaqGeneration
from services.errors import FaqConflict, FaqRejected, FourEyesViolation, NotFound
from services.faq.matching import BoundClause, FaqIndex, ServableFaq, build_index, verify_faq_answer
from services.faq.schemas import BoundClauseRef, FaqCreate, FaqRead
from services.query.guards import ProhibitedVerdict, assess_risk
from services.query.verify import RetrievedClause, is_not_available
from services.users.service import Principal, require_role

log = structlog.get_logger()

AUTHOR_ROLES = ("admin",)
REVIEWER_ROLES = ("compliance", "admin")  # approve, retire, and list every status
PUBLISHED = ("active", "superseded")


@dataclass(frozen=True)
class FaqActor:
    """Who acts, and through which channel, for the audit record."""

    principal: Principal
    channel: str = "api"
    request_id: str | None = None


# -- validation (pure) ---------------------------------------------------------------------


def content_problems(data: FaqCreate, policy: GovernancePolicy) -> list[str]:
    """What is wrong with an entry's questions and answer by themselves (the clauses are checked apart)."""
    rules, limit = policy.faq, policy.input.max_question_chars
    problems = []
    if not data.questions:
        problems.append("questions: at least one phrasing is needed")
    if len(data.questions) > rules.max_questions:
        problems.append(f"questions: {len(data.questions)} given; at most {rules.max_questions}")
    for i, question in enumerate(data.questions, start=1):
        text = question.strip()
        if not text:
            problems.append(f"questions[{i}] is empty")
        elif len(text) > limit:
            problems.append(f"questions[{i}] is {len(text)} characters long; the limit is {limit}")
        elif assess_risk(text, policy.risk) == "critical":
            problems.append(f"questions[{i}] names a critical-risk topic, which is always refused")
    stripped = [q.strip().casefold() for q in data.questions]
    duplicates = sorted({q for q in stripped if q and stripped.count(q) > 1})
    if duplicates:
        problems.append(f"questions repeat {duplicates[0]!r}")
    answer = data.answer.strip()
    if not answer:
        problems.append("answer is empty")
    elif len(answer) > rules.max_answer_chars:
        problems.append(f"answer is {len(answer)} characters long; the limit is {rules.max_answer_chars}")
    elif is_not_available(answer):
        problems.append("answer is the refusal 'Not available in policy'; an FAQ must answer")
    if not data.clauses:
        problems.append("clauses: at least one bound clause is needed")
    keys = [(c.policy_id, c.version, c.clause) for c in data.clauses]
    if len(set(keys)) != len(keys):
        problems.append("clauses: the same clause is bound twice")
    return problems


# -- reads -----------------------------------------------------------------------------------


def _clause_rows(session: Session, refs: Sequence[BoundClauseRef]) -> dict[tuple[str, str, str], tuple]:
    """(version row, clause row) of each (policy_id, version, clause) found in a published version:
    one query for any number of refs (a reload of every approved FAQ)."""
    if not refs:
        return {}
    rows = session.execute(
        select(DocumentVersion, Clause).join(Clause, Clause.version_id == DocumentVersion.id).where(
            DocumentVersion.policy_id.in_({r.policy_id for r in refs}),
            DocumentVersion.version.in_({r.version for r in refs}), DocumentVersion.status.in_(PUBLISHED),
            Clause.number.in_({r.clause for r in refs}))
        .order_by(Clause.ordinal)).all()
    found: dict[tuple[str, str, str], tuple] = {}
    for version, clause in rows:
        found.setdefault((version.policy_id, version.version, clause.number), (version, clause))
    return found


def _bound_clauses(session: Session, refs: Sequence[BoundClauseRef | dict],
                   rows: dict[tuple[str, str, str], tuple] | None = None) -> tuple[list[BoundClause], list[str]]:
    """Each ref's clause in a published version (refs C1, C2, ... in order), and the refs not found."""
    parsed = [r if isinstance(r, BoundClauseRef) else BoundClauseRef.model_validate(r) for r in refs]
    rows = _clause_rows(session, parsed) if rows is None else rows
    found, missing = [], []
    for i, r in enumerate(parsed, start=1):
        row = rows.get((r.policy_id, r.version, r.clause))
        if row is None:
            missing.append(f"{r.policy_id} version {r.version} clause {r.clause}")
            continue
        version, clause = row
        found.append(BoundClause(version.id, RetrievedClause(
            ref=f"C{i}", policy_id=version.policy_id, policy_title=version.title, clause=clause.number,
            version=version.version, effective_date=version.effective_date.isoformat(),
            classification=version.classification, text=clause.text, score=0.0)))
    return found, missing


def _get(session: Session, faq_id: int) -> FaqEntry:
    # Locked (PostgreSQL) so two reviewers approving or retiring at once cannot both pass the status check.
    entry = session.get(FaqEntry, faq_id, with_for_update=True)
    if entry is None:
        raise NotFound(f"no FAQ {faq_id}")
    return entry


def find_same(session: Session, data: FaqCreate) -> FaqEntry | None:
    """A proposed or approved entry with exactly this content (questions, answer, bound clauses)."""
    questions, answer = [q.strip() for q in data.questions], data.answer.strip()
    clauses = [c.model_dump() for c in data.clauses]
    for entry in session.scalars(select(FaqEntry).where(FaqEntry.status.in_(("proposed", "approved")),
                                                         FaqEntry.answer == answer)):
        if entry.questions == questions and entry.clauses == clauses:
            return entry
    return None


def to_read(entry: FaqEntry) -> FaqRead:
    return FaqRead(id=entry.id, questions=list(entry.questions), answer=entry.answer,
                   clauses=[BoundClauseRef.model_validate(c) for c in entry.clauses], status=entry.status,
                   author=entry.author, approver=entry.approver, retired_by=entry.retired_by,
                   created_at=entry.created_at, approved_at=entry.approved_at, retired_at=entry.retired_at)


def list_faqs(session: Session, policy: GovernancePolicy, principal: Principal,
              status: str | None = None) -> list[FaqRead]:
    """Entries the caller may see: approved ones for any role, every status for compliance and admin;
    never one bound to a version above the caller's clearance (its answer quotes that clause)."""
    statuses = ("proposed", "approved", "retired") if principal.role in REVIEWER_ROLES else ("approved",)
    if status is not None:
        statuses = tuple(s for s in statuses if s == status)
    rows = session.scalars(select(FaqEntry).where(FaqEntry.status.in_(statuses)).order_by(FaqEntry.id)).all()
    classes = {(v.policy_id, v.version): v.classification for v in session.execute(
        select(DocumentVersion.policy_id, DocumentVersion.version, DocumentVersion.classification)).all()}
    allowed = set(visible_classifications(principal.clearance, policy))
    return [to_read(e) for e in rows
            if all(classes.get((c["policy_id"], c["version"])) in allowed for c in e.clauses)]


# -- lifecycle -------------------------------------------------------------------------------


def _audit(session: Session, event: str, actor: FaqActor, entry: FaqEntry, bound: Sequence[BoundClause],
           policy: GovernancePolicy, **payload: object) -> None:
    classes = [b.clause.classification for b in bound]
    append(session, AuditEntry(
        request_id=actor.request_id or uuid.uuid4().hex, event=event, actor=actor.principal.name,
        actor_role=actor.principal.role, channel=actor.channel,
        payload={"faq_id": entry.id, "status": entry.status, **payload},
        effective_classification=max(classes, key=lambda c: classification_rank(c, policy)) if classes else None,
        policy_ids=sorted({b.clause.policy_id for b in bound})))


def _checked_clauses(session: Session, refs: Sequence[BoundClauseRef | dict], answer: str) -> list[BoundClause]:
    bound, missing = _bound_clauses(session, refs)
    if missing:
        raise FaqRejected("bound clause not found in a published version: " + "; ".join(missing))
    verification = verify_faq_answer(answer, [b.clause for b in bound])
    if not verification.passed:
        raise FaqRejected("the answer fails verification against its bound clauses: "
                          + "; ".join(verification.problems))
    return bound


def create_faq(session: Session, policy: GovernancePolicy, data: FaqCreate, actor: FaqActor,
               screen: Callable[[str], ProhibitedVerdict] | None = None) -> FaqEntry:
    """Add a proposed entry; FaqRejected names every problem and nothing is stored.

    `screen` is the request path's prohibited-use check: a phrasing it would refuse is refused here
    too (it could never be served, and approving it would look as if policyhub answered it).
    """
    require_role(actor.principal, AUTHOR_ROLES)
    problems = content_problems(data, policy)
    if screen is not None:
        for i, question in enumerate(data.questions, start=1):
            verdict = screen(question.strip()) if question.strip() else None
            if verdict is not None and verdict.prohibited:
                problems.append(f"questions[{i}] is a prohibited use ({verdict.category})")
    if problems:
        raise FaqRejected("; ".join(problems))
    answer = data.answer.strip()
    bound = _checked_clauses(session, data.clauses, answer)
    same = find_same(session, data)
    if same is not None:
        raise FaqConflict(f"FAQ {same.id} ({same.status}) already holds these questions, answer and clauses")
    entry = FaqEntry(questions=[q.strip() for q in data.questions], answer=answer,
                     clauses=[c.model_dump() for c in data.clauses], status="proposed",
                     author=actor.principal.name, created_at=utcnow())
    session.add(entry)
    session.flush()
    _audit(session, "faq.add", actor, entry, bound, policy, questions=entry.questions, answer=entry.answer,
           clauses=entry.clauses, author=entry.author)
    log.info("faq.added", faq_id=entry.id, author=entry.author)
    return entry


def approve_faq(session: Session, policy: GovernancePolicy, faq_id: int, actor: FaqActor) -> FaqEntry:
    """Approve a proposed entry. Four eyes: its author may not approve it, whatever their role."""
    require_role(actor.principal, REVIEWER_ROLES)
    entry = _get(session, faq_id)
    if entry.status != "proposed":
        raise FaqConflict(f"FAQ {faq_id} is {entry.status}; only a proposed FAQ can be approved")
    if actor.principal.name == entry.author:
        raise FourEyesViolation(f"four-eyes rule: FAQ {faq_id} was written by {entry.author}, who may not also "
                                "approve it; another compliance or admin user must")
    # Verified again: the verifier may have become stricter since the entry was added.
    bound = _checked_clauses(session, entry.clauses, entry.answer)
    entry.status, entry.approver, entry.approved_at = "approved", actor.principal.name, utcnow()
    session.flush()
    _bump_generation(session)
    _audit(session, "faq.approve", actor, entry, bound, policy, author=entry.author, approver=entry.approver)
    log.info("faq.approved", faq_id=entry.id, approver=entry.approver)
    return entry


def retire_faq(session: Session, policy: GovernancePolicy, faq_id: int, actor: FaqActor,
               reason: str = "") -> FaqEntry:
    """Retire a proposed or approved entry; it is never served again."""
    require_role(actor.principal, REVIEWER_ROLES)
    entry = _get(session, faq_id)
    if entry.status == "retired":
        raise FaqConflict(f"FAQ {faq_id} is already retired")
    previous = entry.status
    bound, _ = _bound_clauses(session, entry.clauses)
    entry.status, entry.retired_by, entry.retired_at = "retired", actor.principal.name, utcnow()
    session.flush()
    _bump_generation(session)
    _audit(session, "faq.retire", actor, entry, bound, policy, previous_status=previous, reason=reason)
    log.info("faq.retired", faq_id=entry.id, by=entry.retired_by)
    return entry


# -- the request path's catalogue --------------------------------------------------------------


def _bump_generation(session: Session) -> None:
    session.execute(update(FaqGeneration).where(FaqGeneration.id == 1)
                    .values(generation=FaqGeneration.generation + 1))


def approved_signature(session: Session) -> tuple:
    """Changes whenever the set of approved entries does (content never changes): the generation
    every approval and retirement raises, read by primary key."""
    return (session.scalar(select(FaqGeneration.generation).where(FaqGeneration.id == 1)),)


def load_approved(session: Session) -> list[ServableFaq]:
    approved = session.scalars(select(FaqEntry).where(FaqEntry.status == "approved").order_by(FaqEntry.id)).all()
    rows = _clause_rows(session, [BoundClauseRef.model_validate(c) for e in approved for c in e.clauses])
    entries = []
    for row in approved:
        bound, missing = _bound_clauses(session, row.clauses, rows)
        if missing:  # published versions are never deleted; should one vanish, never serve half an FAQ
            log.warning("faq.bound_clause_missing", faq_id=row.id, missing=missing)
            continue
        entries.append(ServableFaq(row.id, tuple(row.questions), row.answer, tuple(bound)))
    return entries


class FaqCatalog:
    """The approved FAQs and their phrasings' embeddings (by the service's version-locked embedder).

    `current(session)` costs one primary-key read while nothing changed; on a change it reloads
    the approved rows and embeds only entries it has not embedded before (content is immutable).
    """

    def __init__(self, embed: Callable[[list[str]], np.ndarray]) -> None:
        self.embed = embed
        self._index = FaqIndex.empty(signature=("never loaded",))
        self._vectors: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def current(self, session: Session) -> FaqIndex:
        signature = approved_signature(session)
        if signature == self._index.signature:
            return self._index
        with self._lock:
            if signature != self._index.signature:
                entries = load_approved(session)
                for entry in entries:
                    if entry.id not in self._vectors:
                        self._vectors[entry.id] = np.asarray(self.embed(list(entry.questions)), dtype=np.float32)
                self._vectors = {e.id: self._vectors[e.id] for e in entries}
                self._index = build_index(signature, entries, [self._vectors[e.id] for e in entries])
                log.info("faq.catalog_loaded", entries=len(entries))
            return self._index

