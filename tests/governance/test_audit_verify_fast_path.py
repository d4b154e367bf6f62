"""verify_chain's fast path against the definitions it replaces, on SQLite and PostgreSQL.

verify reads the chain straight from the driver's cursor (governance.audit._StoredChain)
and hashes each row of the types the store writes with one formatting call: on SQLite
from the raw text and integers (_sqlite_row_digest), elsewhere from the driver's typed
values (_row_digest). Any other row is converted as a typed select would convert it and
takes the general encoder. Each path must give exactly what the typed select and the
general encoder gave, for rows the store wrote and for rows edited by hand.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import OperationalError

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


# -- SQLite's raw rows: the fast digest or the typed path, never a third answer ---------

SQLITE = sqlite.dialect()
SQLITE_CONVERSIONS = {name: process for name in HASHED_FIELDS
                      if (process := T.c[name].type.dialect_impl(SQLITE).result_processor(SQLITE, None))}


def sqlite_typed(raw: list) -> list:
    """What a typed select on SQLite returns for a raw row (SQLAlchemy's own processors)."""
    return [SQLITE_CONVERSIONS[name](value) if name in SQLITE_CONVERSIONS else value
            for name, value in zip((*HASHED_FIELDS, "hash"), raw)]


def sqlite_text(moment: datetime) -> str:
    """created_at as SQLAlchemy writes it into SQLite: the UTC wall time, microseconds always."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} "
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}")


# Text that is, or nearly is, a stored timestamp: impossible dates (02-30, month 13, hour
# 24, year 0), other separators, fraction lengths and offsets, digits that are not ASCII.
NEAR_TIMESTAMPS = st.one_of(
    st.builds("{:04d}-{:02d}-{:02d}{}{:02d}:{:02d}:{:02d}.{:06d}".format, st.integers(0, 9999), st.integers(0, 13),
              st.integers(0, 32), st.sampled_from(" T"), st.integers(0, 24), st.integers(0, 60), st.integers(0, 60),
              st.integers(0, 999_999)),
    st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,7})?(Z|[+-]0[0-9]:00)?",
                  fullmatch=True),
    st.from_regex(r"[0-9\u0660-\u0669\uff10-\uff19]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}",
                  fullmatch=True),
)
ANY_SQLITE_VALUE = (st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.floats() | st.binary()
                    | st.text() | NEAR_TIMESTAMPS)
SQLITE_STORE_ROWS = STORE_ROWS.map(lambda row: dict(
    row, created_at=sqlite_text(row["created_at"]), refused=int(row["refused"]), pii_present=int(row["pii_present"]),
    seq=row["seq"], hash="0" * 64))


@pytest.mark.unit
def test_sqlalchemy_converts_exactly_what_the_sqlite_fast_digest_reproduces():
    # Another SQLAlchemy could read created_at or the booleans differently; verify would
    # then read every row typed (correct, slower), and this test says so.
    assert audit._fast_digest_for("sqlite", SQLITE_CONVERSIONS) is audit._sqlite_row_digest
    assert audit._fast_digest_for("sqlite", dict(SQLITE_CONVERSIONS, tier=int)) is audit._no_fast_digest
    assert audit._fast_digest_for("postgresql", {}) is audit._typed_row_digest


@pytest.mark.unit
@given(SQLITE_STORE_ROWS)
def test_every_row_the_store_writes_to_sqlite_takes_the_fast_digest(row):
    raw = [row[name] for name in (*HASHED_FIELDS, "hash")]
    typed = sqlite_typed(raw)
    content = dict(zip(HASHED_FIELDS, typed), payload=json.loads(row["payload"]))
    assert audit._sqlite_row_digest(raw) == record_hash(row["prev_hash"], content)


@pytest.mark.unit
@given(SQLITE_STORE_ROWS, st.dictionaries(st.sampled_from(HASHED_FIELDS), ANY_SQLITE_VALUE, max_size=3))
def test_the_sqlite_fast_digest_is_the_typed_digest_or_nothing(row, replaced):
    # Any value SQLite can hold, in any column: either the fast digest declines, or the typed
    # select reads the row without error and the general encoder gives the same hash.
    raw = [dict(row, **replaced)[name] for name in (*HASHED_FIELDS, "hash")]
    fast = audit._sqlite_row_digest(raw)
    if fast is not None:
        assert outcome(audit._general_row_digest, sqlite_typed(raw)[:-1]) == ("hash", fast)


@pytest.mark.unit
@given(SQLITE_STORE_ROWS, NEAR_TIMESTAMPS)
def test_a_timestamp_takes_the_fast_digest_only_when_the_typed_read_gives_the_same_hash(row, created_at):
    raw = [dict(row, created_at=created_at)[name] for name in (*HASHED_FIELDS, "hash")]
    fast = audit._sqlite_row_digest(raw)
    event("fast digest" if fast is not None else "declined")
    if fast is not None:
        assert outcome(audit._general_row_digest, sqlite_typed(raw)[:-1]) == ("hash", fast)
    else:
        # Declined: not the stored spelling, or no date at all.
        assert not audit._SQLITE_STORED_TIMESTAMP(created_at) or outcome(sqlite_typed, raw)[0] == "error"


# A row as the store writes it into SQLite, as the driver returns it.
SQLITE_ROW = {"actor": "user1", "actor_role": "staff", "chain": "main", "channel": "api", "cost": 0.00012,
              "created_at": "2026-01-02 03:04:05.000006", "effective_classification": "internal", "event": "ask",
              "model_key": "m@1", "payload": '{"a":1}', "pii_present": 0, "policy_ids": "KYC-1",
              "prev_hash": "0" * 64, "question": "Why?", "refused": 1, "request_id": "r-1", "seq": 1, "tier": 1,
              "hash": "0" * 64}


@pytest.mark.unit
@pytest.mark.parametrize("created_at, readable", [
    ("2026-02-28 23:59:59.999999", True),
    ("2024-02-29 00:00:00.000000", True),
    ("2026-02-29 00:00:00.000000", False),
    ("2026-04-31 12:00:00.000001", False),
    ("2026-13-01 12:00:00.000001", False),
    ("2026-01-01 24:00:00.000001", False),
    ("0000-01-01 00:00:00.000000", False),
])
def test_an_impossible_date_in_the_stored_spelling_is_left_to_the_typed_read(created_at, readable):
    raw = [dict(SQLITE_ROW, created_at=created_at)[name] for name in (*HASHED_FIELDS, "hash")]
    assert (audit._sqlite_row_digest(raw) is not None) == readable
    if not readable:
        with pytest.raises(ValueError):
            sqlite_typed(raw)


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
@pytest.mark.parametrize("created_at", ["yesterday", "2026-02-30 03:04:05.000001", "2026-01-02 24:00:00.000000"])
def test_a_value_no_typed_select_could_read_is_an_error_here_too(sqlite_url, created_at):
    # The last two are in the stored spelling, so the fast digest sees them first.
    from services.db.session import make_engine, make_session_factory

    engine = make_engine(sqlite_url)
    try:
        with make_session_factory(engine).begin() as session:
            for i in (1, 2, 3):
                append(session, entry(i))
        as_owner(engine, f"UPDATE audit_records SET created_at = '{created_at}' WHERE seq = 2")
        with engine.connect() as conn:
            with pytest.raises(ValueError):
                typed_rows(conn)
            with pytest.raises(ValueError):
                list(audit._stored_rows(conn, "main"))
            result = verify_chain(conn)
        assert (result.ok, result.first_bad_seq, result.records, result.head_seq) == (False, 2, 1, 1)
        assert "cannot be read" in result.reason
    finally:
        engine.dispose()


@pytest.mark.integration
def test_each_rows_fast_digest_is_its_typed_digest_or_nothing(engine, records):
    edits = SQLITE_EDITS if engine.dialect.name == "sqlite" else POSTGRES_EDITS
    as_owner(engine, *edits)
    taken = {}
    with engine.connect() as conn, audit._StoredChain(conn, "main") as stored:
        for raw in stored:
            fast = stored.fast_digest(raw)
            taken[raw[HASHED_FIELDS.index("seq")]] = fast is not None
            if fast is not None:
                assert fast == audit._row_digest(stored.typed(raw)[:-1])
    edited = {int(edit.rsplit("seq = ", 1)[1]) for edit in edits}
    assert {seq for seq, fast in taken.items() if fast} >= set(range(1, 8)) - edited
    assert taken[7]  # the untouched records take the fast digest on both databases


@pytest.mark.integration
def test_a_timestamp_respelled_for_the_same_instant_still_verifies(sqlite_url):
    # A typed select reads the same datetime from either spelling, so the hash still holds;
    # the fast digest leaves the unfamiliar spelling to the typed read.
    from services.db.session import make_engine, make_session_factory

    engine = make_engine(sqlite_url)
    try:
        with make_session_factory(engine).begin() as session:
            stored = [append(session, entry(i)) for i in (1, 2, 3)]
        as_owner(engine, "UPDATE audit_records SET created_at = replace(created_at, ' ', 'T') WHERE seq = 2")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT created_at FROM audit_records WHERE seq = 2").scalar()[10] == "T"
            with audit._StoredChain(conn, "main") as chain:
                assert [chain.fast_digest(raw) is not None for raw in chain] == [True, False, True]
            result = verify_chain(conn)
        assert (result.ok, result.records, result.head_hash) == (True, 3, stored[-1].hash)
    finally:
        engine.dispose()


@pytest.mark.integration
def test_verify_walks_across_many_driver_fetches(monkeypatch, engine, session_factory, records):
    # PostgreSQL's named cursor fetches _VERIFY_BATCH rows a round trip.
    monkeypatch.setattr(audit, "_VERIFY_BATCH", 2)
    with session_factory() as session:
        result = verify_chain(session)
    assert (result.ok, result.records, result.head_hash) == (True, 7, records[-1].hash)
    as_owner(engine, "UPDATE audit_records SET question = 'edited' WHERE seq = 5")
    with session_factory() as session:
        result = verify_chain(session)
    assert (result.ok, result.first_bad_seq, result.records) == (False, 5, 7)


@pytest.mark.integration
def test_verify_on_an_autocommit_connection(engine, records):
    # No transaction to hold a named cursor in: the driver's plain cursor reads the chain.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        result = verify_chain(conn)
    assert (result.ok, result.records, result.head_hash) == (True, 7, records[-1].hash)


@pytest.fixture
def sqlite_one_record(sqlite_url) -> Iterator[Engine]:
    """A SQLite database whose chain holds one record."""
    from services.db.session import make_engine, make_session_factory

    engine = make_engine(sqlite_url)
    with make_session_factory(engine).begin() as session:
        append(session, entry(1))
    yield engine
    engine.dispose()


@pytest.mark.integration
def test_verify_leaves_the_sqlite_connections_mmap_size_as_it_was(sqlite_one_record):
    with sqlite_one_record.connect() as conn:
        conn.exec_driver_sql("PRAGMA mmap_size = 65536")
        assert verify_chain(conn).ok
        assert conn.exec_driver_sql("PRAGMA mmap_size").scalar() == 65536


@pytest.mark.integration
def test_a_driver_error_is_raised_as_a_typed_select_raises_it(sqlite_one_record):
    # Not evidence about the chain either way (here, text that is not UTF-8): it propagates,
    # as the same SQLAlchemy error a typed select raises.
    as_owner(sqlite_one_record, "UPDATE audit_records SET actor = CAST(X'C3' AS TEXT) WHERE seq = 1")
    with sqlite_one_record.connect() as conn, pytest.raises(OperationalError, match="UTF-8"):
        typed_rows(conn)
    with sqlite_one_record.connect() as conn, pytest.raises(OperationalError, match="UTF-8"):
        verify_chain(conn)


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
