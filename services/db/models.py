"""Tables of the running system: users and their keys, signed-out web sessions, documents, versions,
clauses, chunks, FAQ templates."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Integer, String, Text, UniqueConstraint, event, inspect
from sqlalchemy.orm import Mapped, mapped_column

from governance.records.base import Base, utcnow

ROLES = ("staff", "compliance", "model_risk", "admin")
VERSION_STATUSES = ("pending", "active", "superseded")
FAQ_STATUSES = ("proposed", "approved", "retired")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    clearance: Mapped[str] = mapped_column(String(32))
    api_key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RevokedWebSession(Base):
    """A browser session signed out before its cookie expired: refused until it would have expired anyway."""

    __tablename__ = "revoked_web_sessions"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Document(Base):
    """A policy, identified by its policy_id; its content lives in immutable versions."""

    __tablename__ = "documents"

    policy_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DocumentVersion(Base):
    """One immutable version. Visible to queries only once `status` is active (or superseded for as_of)."""

    __tablename__ = "document_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    policy_id: Mapped[str] = mapped_column(ForeignKey("documents.policy_id"))
    version: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(200))
    classification: Mapped[str] = mapped_column(String(32))
    effective_date: Mapped[date] = mapped_column(Date)
    content_sha256: Mapped[str] = mapped_column(String(64))
    source_name: Mapped[str] = mapped_column(Text)
    index_name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    clause_count: Mapped[int] = mapped_column(Integer, default=0)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(nullable=True)
    superseded_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # While pending: the process indexing it, and when it last said it was still at work.
    ingest_host: Mapped[str | None] = mapped_column(String(300), nullable=True)
    ingest_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ingest_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)

    __table_args__ = (UniqueConstraint("policy_id", "version"),)


class Clause(Base):
    __tablename__ = "clauses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("document_versions.id"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    number: Mapped[str] = mapped_column(Text)
    heading_path: Mapped[list] = mapped_column(JSON)
    text: Mapped[str] = mapped_column(Text)
    chunk_id: Mapped[str] = mapped_column(String(36), index=True)


class Chunk(Base):
    __tablename__ = "chunks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # also the vector point id
    version_id: Mapped[int] = mapped_column(ForeignKey("document_versions.id"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    token_count: Mapped[int] = mapped_column(Integer)
    clause_numbers: Mapped[list] = mapped_column(JSON)
    heading_path: Mapped[list] = mapped_column(JSON)
    text: Mapped[str] = mapped_column(Text)


class Feedback(Base):
    """Thumbs up/down from staff, stored against the audit record of the answer."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    rating: Mapped[int] = mapped_column(Integer)  # +1 or -1
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FaqEntry(Base):
    """An approved short answer to questions staff ask often, bound to exact clause versions (Tier-0).

    Like a document version, its content is immutable: questions, answer and bound clauses
    are never edited; a change is a new entry and the old one retired.
    """

    __tablename__ = "faq_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    questions: Mapped[list] = mapped_column(JSON)  # 1+ phrasings staff would use
    answer: Mapped[str] = mapped_column(Text)
    clauses: Mapped[list] = mapped_column(JSON)  # [{"policy_id", "version", "clause"}, ...]
    status: Mapped[str] = mapped_column(String(16), default="proposed", index=True)
    author: Mapped[str] = mapped_column(String(200))
    approver: Mapped[str | None] = mapped_column(String(200), nullable=True)
    retired_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    approved_at: Mapped[datetime | None] = mapped_column(nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(nullable=True)


class FaqGeneration(Base):
    """One row (id 1): raised with every approval or retirement, so a process holding the approved
    FAQs in memory learns from one primary-key read whether they are still current."""

    __tablename__ = "faq_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(Integer)


FAQ_CONTENT = ("questions", "answer", "clauses")


@event.listens_for(FaqEntry, "before_update")
def _faq_content_is_immutable(mapper, connection, target: FaqEntry) -> None:  # noqa: ANN001
    # What compliance approved is what is served: an edit would serve text nobody signed off.
    state = inspect(target)
    changed = [name for name in FAQ_CONTENT if state.attrs[name].history.has_changes()]
    if changed:
        raise ValueError(f"FAQ {target.id}: {', '.join(changed)} cannot be edited; add a new entry and retire "
                         "this one")
