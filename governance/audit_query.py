"""Compliance's view of the audit trail: filter, page, look up one request, export.

All SQL on audit_records for reading lives here; appending and verifying live in
governance.audit.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, func, literal, select
from sqlalchemy.orm import Session

from governance.audit import iso_utc
from governance.records.audit import AuditRecord

_EXPORT_BATCH = 1000  # rows per streamed chunk and per database fetch
_CSV_COLUMNS = ("seq", "created_at", "chain", "request_id", "event", "actor", "actor_role", "channel", "question",
                "effective_classification", "tier", "model_key", "refused", "pii_present", "policy_ids", "cost",
                "prev_hash", "hash", "payload")
# A spreadsheet runs a cell starting with one of these as a formula; questions are typed
# by users, so a CSV opened in Excel could execute one (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class AuditFilter:
    """Every field narrows the result; None means "any". `since` is inclusive, `until`
    exclusive; naive datetimes are taken as UTC. `text` is a case-insensitive substring of
    the question (ASCII case only on SQLite)."""

    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    actor_role: str | None = None
    classification: str | None = None
    tier: int | None = None
    model_key: str | None = None
    refused: bool | None = None
    pii_present: bool | None = None
    policy_id: str | None = None
    text: str | None = None
    event: str | None = None


def _utc(value: datetime) -> datetime:
    # SQLite stores UTC wall time and compares text, so bounds must be UTC as well.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _conditions(flt: AuditFilter) -> list[ColumnElement[bool]]:
    r = AuditRecord
    conditions: list[ColumnElement[bool]] = []
    if flt.since is not None:
        conditions.append(r.created_at >= _utc(flt.since))
    if flt.until is not None:
        conditions.append(r.created_at < _utc(flt.until))
    exact = ((r.actor, flt.actor), (r.actor_role, flt.actor_role), (r.effective_classification, flt.classification),
             (r.tier, flt.tier), (r.model_key, flt.model_key), (r.refused, flt.refused),
             (r.pii_present, flt.pii_present), (r.event, flt.event))
    conditions += [column == value for column, value in exact if value is not None]
    if flt.policy_id is not None:
        # policy_ids is space-separated: pad both sides so "KYC-1" does not match "KYC-10".
        padded = literal(" ") + r.policy_ids + literal(" ")
        conditions.append(padded.contains(f" {flt.policy_id} ", autoescape=True))
    if flt.text:
        conditions.append(func.lower(r.question).contains(flt.text.lower(), autoescape=True))
    return conditions


def list_records(session: Session, flt: AuditFilter, limit: int = 50,
                 offset: int = 0) -> tuple[list[AuditRecord], int]:
    """One page of matching records, newest first, and how many match in all."""
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset must not be negative")
    conditions = _conditions(flt)
    total = session.scalar(select(func.count()).select_from(AuditRecord).where(*conditions))
    # Newest first in chain order: the primary key (chain, seq) read backwards, so a page uses the
    # index and follows seq exactly (server clocks may disagree; seq does not). Chains are grouped.
    page = session.scalars(select(AuditRecord).where(*conditions)
                           .order_by(AuditRecord.chain.desc(), AuditRecord.seq.desc())
                           .limit(limit).offset(offset)).all()
    return list(page), int(total or 0)


def get_by_request_id(session: Session, request_id: str) -> AuditRecord | None:
    """The first record a request left (a request may leave several, e.g. publish + supersede)."""
    return session.scalars(select(AuditRecord).where(AuditRecord.request_id == request_id)
                           .order_by(AuditRecord.seq).limit(1)).first()


def iter_records(session: Session, flt: AuditFilter) -> Iterator[AuditRecord]:
    """Matching records in chain order, one chain after another (the primary key's order),
    fetched in batches (a server-side cursor on PostgreSQL)."""
    stmt = (select(AuditRecord).where(*_conditions(flt)).order_by(AuditRecord.chain, AuditRecord.seq)
            .execution_options(yield_per=_EXPORT_BATCH))
    yield from session.scalars(stmt)


def record_to_dict(rec: AuditRecord, include_payload: bool = True) -> dict:
    data = {
        "seq": rec.seq, "chain": rec.chain, "request_id": rec.request_id, "event": rec.event,
        "created_at": iso_utc(rec.created_at), "actor": rec.actor, "actor_role": rec.actor_role,
        "channel": rec.channel, "question": rec.question, "effective_classification": rec.effective_classification,
        "tier": rec.tier, "model_key": rec.model_key, "refused": rec.refused, "pii_present": rec.pii_present,
        "policy_ids": rec.policy_ids.split() if rec.policy_ids else [], "cost": rec.cost,
        "prev_hash": rec.prev_hash, "hash": rec.hash,
    }
    if include_payload:
        data["payload"] = json.loads(rec.payload)
    return data


_LINE_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def export_jsonl(records: Iterable[AuditRecord]) -> Iterator[str]:
    """One JSON object per record, payload last and exactly as stored (the hashed text),
    yielded in chunks of many lines. Every hashed field is in the line, so the export can
    be verified without the database: record_hash(prev_hash, the line without `hash` and
    with policy_ids joined by spaces) == hash, and each prev_hash is the hash of the line
    before it in the same chain."""
    lines: list[str] = []
    for rec in records:
        head = _LINE_ENCODER.encode(record_to_dict(rec, include_payload=False))
        lines.append(head[:-1] + ',"payload":' + rec.payload + "}\n")
        if len(lines) >= _EXPORT_BATCH:
            yield "".join(lines)
            lines.clear()
    if lines:
        yield "".join(lines)


def _csv_cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def export_csv(records: Iterable[AuditRecord]) -> Iterator[str]:
    """A header and one row per record. Text cells that a spreadsheet would run as a
    formula get a leading apostrophe; the JSON lines export is the exact one."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(_CSV_COLUMNS)
    rows = 0
    for rec in records:
        data = record_to_dict(rec, include_payload=False)
        data["policy_ids"] = rec.policy_ids
        data["payload"] = rec.payload
        writer.writerow([_csv_cell(data[column]) for column in _CSV_COLUMNS])
        rows += 1
        if rows % _EXPORT_BATCH == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()
