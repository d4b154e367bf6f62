"""verify_chain's fast path against the definitions it replaces, on SQLite and PostgreSQL.

verify reads the chain untyped and converts only the columns that need it
(governance.audit._stored_rows), then hashes each row with one formatting call for the
column types the store writes (_row_digest). Both must give exactly what the typed
select and the general encoder gave, for rows the store wrote and for rows edited by hand.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, select

from governance import audit
from governance.audit import (
    HASHED_FIELDS,
    AuditEntry,
    append,
    canonical_json,
    record_hash,
    verify_chain,
)
from governance.records.audit import AuditRecord

T = AuditRecord.__table__
TYPED = select(*(T.c[name] for name in HASHED_FIELDS), T.c.hash).where(T.c.chain == "main").order_by(T.c.seq)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
OPTIONAL_TEXT = st.none() | st.text()
# Any instant in any zone, naive ones taken as UTC (a day clear of datetime's limits, where
# converting to UTC overflows on both paths alike).
DATETIMES = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                         timezones=st.none() | st.just(UTC) | st.timezones())
# Every type the database can hand back for a column, right or wrong for it.
ANY_VALUE = (st.none() | st.booleans() | st.integers() | st.floats() | st.binary() | DATETIMES
             | st.text(st.characters(exclude_categories=())))  # lone surrogates too

# Rows of the types the store writes, as a typed select returns them.
STORE_ROWS = st.fixed_dictionaries({
    "actor": st.text(min_size=1), "actor_role": st.text(), "chain": st.just("main"), "channel": st.text(),
    "cost": st.floats(allow_nan=False, allow_infinity=False),
    "created_at": DATETIMES,
    "effective_classification": OPTIONAL_TEXT, "event": st.text(), "model_key": OPTIONAL_TEXT,
    "payload": JSON_VALUES.map(canonical_json), "pii_present": st.booleans(), "policy_ids": st.text(),
    "prev_hash": st.text(), "question": OPTIONAL_TEXT, "refused": st.booleans(), "request_id": st.text(),
    "seq": st.integers(min_value=1, max_value=2**63 - 1), "tier": st.none() | st.integers(),
})


def outcome(digest, values: list) -> tuple:
    try:
        return "hash", digest(values)
    except Exception as exc:  # noqa: BLE001 - comparing which error each path raises
        return "error", type(exc)


@pytest.mark.unit
@given(STORE_ROWS)
def test_the_fast_path_alone_equals_record_hash(row):
    # Not the general encoder in disguise: with it disabled, every row of the store's
    # types still hashes to the definition (payload parsed, canonical_json, SHA-256).
    values = [row[name] for name in HASHED_FIELDS]
    content = dict(row, payload=json.loads(row["payload"]))
    with patch.object(audit, "_general_row_digest", side_effect=AssertionError("left the fast path")):
        assert audit._row_digest(values) == record_hash(row["prev_hash"], content)


@pytest.mark.unit
@given(STORE_ROWS, st.dictionaries(st.sampled_from(HASHED_FIELDS), ANY_VALUE, max_size=3))
def test_the_fast_path_and_the_general_encoder_agree_on_any_values(row, replaced):
    # Hand-edited rows: text in an integer column, NaN or infinity, bytes, a bool for
    # an integer, lone surrogates, -0.0 ... the same hash or the same error either way.
    values = [dict(row, **replaced)[name] for name in HASHED_FIELDS]
    assert outcome(audit._row_digest, values) == outcome(audit._general_row_digest, values)


@pytest.mark.unit
@pytest.mark.parametrize("created_at", [
    datetime(2026, 1, 2, 3, 4, 5),  # no fraction: isoformat would omit it
    datetime(2026, 1, 2, 3, 4, 5, 1),
    datetime(2026, 1, 2, 9, 4, 5, 250, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),  # another day and year in UTC
    datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
])
@pytest.mark.parametrize("cost", [0.0, -0.0, 1e16, 2.5e-308, 0.1])
def test_the_fast_path_on_timestamp_and_float_edge_cases(created_at, cost):
    row = dict(actor="ä\"\\\n\u2028", actor_role="staff", chain="main", channel="api", cost=cost,
               created_at=created_at, effective_classification=None, event="ask", model_key=None,
               payload=canonical_json({"é": [None, -0.0, {"b": 1, "a": "\x00"}]}), pii_present=True,
               policy_ids="", prev_hash="0" * 64, question="\U0001f600", refused=False, request_id="r", seq=2**62,
               tier=None)
    content = dict(row, payload=json.loads(row["payload"]))
    assert audit._row_digest([row[name] for name in HASHED_FIELDS]) == record_hash(row["prev_hash"], content)


# -- reading rows: untyped and converted equals typed --------------------------------

def typed_rows(conn: Connection) -> list[list]:
    return [list(row) for row in conn.execute(TYPED)]


def entry(i: int, **overrides) -> AuditEntry:
    fields = dict(request_id=f"req-{i}", event="ask", actor=f"user{i}", actor_role="staff", channel="api",
                  payload={"answer": f"Antwort {i} ✓ — 75%", "nested": {"z": [1, 2.5, None], "a": True}},
                  question=f"Frage {i}? 🙂", effective_classification="internal", tier=i % 3 or None,
                  model_key="m@1" if i % 2 else None, refused=bool(i % 2), pii_present=not i % 2,
                  policy_ids=("KYC-1",), cost=-0.0 if i == 1 else i / 7)
    fields.update(overrides)
    return AuditEntry(**fields)


@pytest.fixture
def records(session_factory) -> list[AuditRecord]:
    stored = []
    for i in range(1, 8):
        with session_factory.begin() as session:
            stored.append(append(session, entry(i)))
    return stored


@pytest.mark.integration
def test_stored_rows_are_what_a_typed_select_returns(engine, session_factory, records):
    with engine.connect() as conn:
        untyped = list(audit._stored_rows(conn, "main"))
        assert untyped == typed_rows(conn)
    assert [values[-1] for values in untyped] == [r.hash for r in records]
    with session_factory() as session:
        result = verify_chain(session)
    assert (result.ok, result.records, result.head_hash) == (True, 7, records[-1].hash)


def as_owner(engine: Engine, *statements: str) -> None:
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            for name in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                             "AND tbl_name = 'audit_records'").scalars().all():
                conn.exec_driver_sql(f"DROP TRIGGER {name}")
        else:
            conn.exec_driver_sql("ALTER TABLE audit_records DISABLE TRIGGER USER")
        for statement in statements:
            conn.exec_driver_sql(statement)


SQLITE_EDITS = [
    "UPDATE audit_records SET refused = 2 WHERE seq = 1",
    "UPDATE audit_records SET pii_present = 'yes' WHERE seq = 2",
    "UPDATE audit_records SET created_at = '2026-01-02 03:04:05' WHERE seq = 3",
    "UPDATE audit_records SET created_at = '2026-01-02T08:34:05.000001+05:30' WHERE seq = 4",
    "UPDATE audit_records SET tier = 'one', cost = 'a lot' WHERE seq = 5",
    "UPDATE audit_records SET payload = X'7B7D', question = 42 WHERE seq = 6",
]
POSTGRES_EDITS = [
    "UPDATE audit_records SET created_at = '2026-01-02 08:34:05+05:30' WHERE seq = 3",
    "UPDATE audit_records SET created_at = '2026-01-02 03:04:05.000001-11:00' WHERE seq = 4",
    "UPDATE audit_records SET tier = NULL, cost = 'NaN', question = NULL WHERE seq = 5",
    "UPDATE audit_records SET refused = NOT refused, cost = '-Infinity' WHERE seq = 6",
]


@pytest.mark.integration
def test_hand_edited_rows_read_as_a_typed_select_reads_them(engine, session_factory, records):
    as_owner(engine, *(SQLITE_EDITS if engine.dialect.name == "sqlite" else POSTGRES_EDITS))
    with engine.connect() as conn:
        untyped = list(audit._stored_rows(conn, "main"))
        typed = typed_rows(conn)
    # NaN is not equal to itself: compare it by spelling.
    assert [[repr(v) if isinstance(v, float) and math.isnan(v) else v for v in row] for row in untyped] == [
        [repr(v) if isinstance(v, float) and math.isnan(v) else v for v in row] for row in typed]
    first_bad = None
    for values in untyped:
        stored_hash = values.pop()
        assert outcome(audit._row_digest, values) == outcome(audit._general_row_digest, values)
        if first_bad is None and outcome(audit._general_row_digest, values) != ("hash", stored_hash):
            first_bad = values[HASHED_FIELDS.index("seq")]
    assert audit._row_digest(untyped[-1]) == records[-1].hash  # the untouched record
    with session_factory() as session:
        result = verify_chain(session)
    # Some edits only respell a value (2 and 'yes' both read as True), so the first bad
    # record is the first whose content, as read, no longer matches its hash.
    assert first_bad is not None
    assert (result.ok, result.first_bad_seq, result.records) == (False, first_bad, 7)


@pytest.mark.integration
def test_a_value_no_typed_select_could_read_is_an_error_here_too(sqlite_url):
    from services.db.session import make_engine, make_session_factory

    engine = make_engine(sqlite_url)
    try:
        with make_session_factory(engine).begin() as session:
            append(session, entry(1))
        as_owner(engine, "UPDATE audit_records SET created_at = 'yesterday' WHERE seq = 1")
        with engine.connect() as conn:
            with pytest.raises(ValueError):
                typed_rows(conn)
            with pytest.raises(ValueError):
                list(audit._stored_rows(conn, "main"))
    finally:
        engine.dispose()


# -- whatever is appended verifies, on both databases ----------------------------------

ENTRIES = st.builds(
    AuditEntry,
    request_id=st.text(min_size=1, max_size=64), event=st.text(max_size=64), actor=st.text(min_size=1, max_size=200),
    actor_role=st.text(max_size=32), channel=st.text(max_size=32), payload=st.dictionaries(st.text(), JSON_VALUES),
    question=OPTIONAL_TEXT, effective_classification=st.none() | st.text(max_size=32),
    tier=st.none() | st.integers(min_value=-(2**31), max_value=2**31 - 1), model_key=st.none() | st.text(max_size=200),
    refused=st.booleans(), pii_present=st.booleans(),
    cost=st.floats(allow_nan=False, allow_infinity=False),
)


@pytest.mark.integration
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(ENTRIES, min_size=1, max_size=4))
def test_whatever_is_appended_verifies_through_the_fast_path(session_factory, entries):
    # PostgreSQL text columns cannot hold NUL, so such entries are left out on both
    # databases (inside the payload NUL is escaped and fine).
    entries = [e for e in entries
               if not any("\x00" in (text or "") for text in (e.request_id, e.event, e.actor, e.actor_role, e.channel,
                                                             e.question, e.effective_classification, e.model_key))]
    with session_factory.begin() as session:
        for e in entries:
            append(session, e)
    with session_factory() as session:
        result = verify_chain(session)
    assert result.ok, result.reason
