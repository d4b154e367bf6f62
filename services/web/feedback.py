"""Thumbs up/down on an answer, stored against the audit record of that answer.

Only the person who asked may rate an answer: feedback from anyone else would let a
user probe for, or skew the ratings of, other people's requests.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance.records.audit import AuditRecord
from services.db.models import Feedback
from services.errors import NotFound
from services.users.service import Principal

COMMENT_LIMIT = 2000


def record_feedback(session: Session, principal: Principal, request_id: str, rating: int,
                    comment: str = "") -> Feedback:
    """Store (or change) the caller's rating of their own answer; one rating per user and request."""
    asked = session.scalars(select(AuditRecord.seq).where(
        AuditRecord.request_id == request_id, AuditRecord.event == "ask",
        AuditRecord.actor == principal.name)).first()
    if asked is None:
        # The same answer for "no such request" and "someone else's request": nothing leaks.
        raise NotFound(f"no answer of yours with request id {request_id!r}")
    row = session.scalars(select(Feedback).where(Feedback.request_id == request_id,
                                                 Feedback.actor == principal.name)).first()
    if row is None:
        row = Feedback(request_id=request_id, actor=principal.name, rating=rating, comment=comment)
        session.add(row)
    else:
        row.rating, row.comment = rating, comment
    session.flush()
    return row


def feedback_for(session: Session, request_id: str) -> list[Feedback]:
    return list(session.scalars(select(Feedback).where(Feedback.request_id == request_id).order_by(Feedback.id)))
