"""The audit record table: one row per request or governance event, hash-chained."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, Integer, PrimaryKeyConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from governance.records.base import Base


class AuditRecord(Base):
    """Append-only. `hash = SHA-256(prev_hash || canonical JSON of the record)`.

    The filter columns (actor, tier, refused, ...) duplicate what is in `payload`
    so compliance can query them; all of them are inside the hashed content.
    """

    __tablename__ = "audit_records"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), autoincrement=False)
    chain: Mapped[str] = mapped_column(String(32), default="main")
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    event: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(200), index=True)
    actor_role: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(32))
    question: Mapped[str | None] = mapped_column(Text, nullable=True)
    effective_classification: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tier: Mapped[int | None] = mapped_column(Integer, nullable=True)
    model_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    refused: Mapped[bool] = mapped_column(Boolean, default=False)
    pii_present: Mapped[bool] = mapped_column(Boolean, default=False)
    policy_ids: Mapped[str] = mapped_column(Text, default="")  # space-separated, cited policies
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    # Each chain numbers its records from 1 (migration 0006).
    __table_args__ = (PrimaryKeyConstraint("chain", "seq"),)
