"""Model registry records: registered models, sign-offs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from governance.records.base import Base, utcnow

MODEL_STATUSES = ("proposed", "benchmarked", "approved", "active", "retired", "rejected")


class RegisteredModel(Base):
    """An embedding or generation model, identified by the fingerprint of its weights."""

    __tablename__ = "registered_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # embedding | generation
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    weights_sha256: Mapped[dict] = mapped_column(JSON)
    dimension: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_seq_length: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="proposed")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("name", "version", "fingerprint"),)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"


class ModelSignoff(Base):
    """One role's approval or rejection of a registered model."""

    __tablename__ = "model_signoffs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id"))
    signoff_role: Mapped[str] = mapped_column(String(64))
    signer: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(16))  # approve | reject
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BenchmarkReport(Base):
    """A benchmark run against one model fingerprint; approval reads the latest one."""

    __tablename__ = "benchmark_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_key: Mapped[str] = mapped_column(String(300))
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # embedding | generation
    dataset: Mapped[str] = mapped_column(String(32))  # gold | obliqa
    dataset_version: Mapped[str] = mapped_column(String(32))
    split: Mapped[str] = mapped_column(String(32), default="")
    metrics: Mapped[dict] = mapped_column(JSON)
    passed: Mapped[bool] = mapped_column(default=False)
    report_json: Mapped[str] = mapped_column(Text)
    report_html: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DriftAlert(Base):
    """A significant drop or shift found by `policyhub drift run`."""

    __tablename__ = "drift_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_key: Mapped[str] = mapped_column(String(300))
    signal: Mapped[str] = mapped_column(String(64))
    baseline: Mapped[float | None] = mapped_column(nullable=True)
    current: Mapped[float | None] = mapped_column(nullable=True)
    relative_change: Mapped[float | None] = mapped_column(nullable=True)
    details: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
