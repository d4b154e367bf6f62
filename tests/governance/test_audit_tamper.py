"""Tampering with the audit trail, as the application and as an attacker holding the
database owner's credentials — on SQLite and PostgreSQL.

The application is stopped outright (triggers, privileges). The owner can switch the
triggers off; then the hash chain names the first record that can no longer be
trusted, and signed checkpoints kept outside the database catch what the chain alone
cannot: a cut-off tail and a chain recomputed from some record on.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from governance.audit import (
    AuditChainBroken,
    AuditEntry,
    Checkpoint,
    append,
    canonical_json,
    hashed_content,
    make_checkpoint,
    record_hash,
    verify_chain,
)
from governance.records.audit import AuditRecord
from services.db.session import alembic_config, make_engine, make_session_factory, upgrade

pytestmark = pytest.mark.integration

KEY = b"checkpoint-key-kept-by-compliance"
N = 20
T = AuditRecord.__table__


def entry(i: int) -> AuditEntry:
    return AuditEntry(request_id=f"req-{i}", event="ask", actor=f"user{i % 4}", actor_role="staff", channel="api",
                      payload={"answer": f"Answer {i}: the LTV cap is 75% [CR-HL-LTV 4.2].", "scores": [0.7, 0.6]},
                      question=f"Question {i}?", effective_classification="internal", tier=1, model_key="m@1",
                      policy_ids=("CR-HL-LTV",), cost=0.0001 * i)


@pytest.fixture
def chain(session_factory) -> list[AuditRecord]:
    records = []
    for i in range(1, N + 1):
        with session_factory.begin() as session:
            records.append(append(session, entry(i)))
    return records


@contextmanager
def as_db_owner(engine: Engine):
    """What an insider with the owner's credentials does first: switch the protection off."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            triggers = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_records'").scalars().all()
            for name in triggers:
                conn.exec_driver_sql(f"DROP TRIGGER {name}")
        else:
            conn.exec_driver_sql("ALTER TABLE audit_records DISABLE TRIGGER USER")
        yield conn


def stored(conn: Connection, seq: int):
    return conn.execute(select(T).where(T.c.seq == seq)).one()


def recompute_from(conn: Connection, start: int) -> None:
    """The attacker's full cover-up: re-chain every record from `start` to the head."""
    prev = stored(conn, start - 1).hash if start > 1 else "0" * 64
    for row in conn.execute(select(T).where(T.c.seq >= start).order_by(T.c.seq)).all():
        content = dict(hashed_content(row), prev_hash=prev)
        new_hash = record_hash(prev, content)
        conn.execute(update(T).where(T.c.seq == row.seq).values(prev_hash=prev, hash=new_hash))
        prev = new_hash


def verify(session_factory, checkpoints=()):
    with session_factory() as session:
        return verify_chain(session, checkpoints=checkpoints, key=KEY)


def checkpoint(session_factory) -> Checkpoint:
    with session_factory() as session:
        return make_checkpoint(session, KEY)


# -- the application cannot change the record ------------------------------------------

def attempts(dialect: str) -> list:
    def orm_edit(session):
        session.get(AuditRecord, ("main", 3)).question = "edited"
        session.flush()

    def orm_delete(session):
        session.delete(session.get(AuditRecord, ("main", 3)))
        session.flush()

    common = [
        ("update", lambda s: s.execute(update(AuditRecord).where(AuditRecord.seq == 3).values(question="x"))),
        ("delete", lambda s: s.execute(delete(AuditRecord).where(AuditRecord.seq == 3))),
        ("delete all", lambda s: s.execute(delete(AuditRecord))),
        ("orm edit", orm_edit),
        ("orm delete", orm_delete),
    ]
    if dialect == "sqlite":
        # REPLACE deletes the old row without firing delete triggers: refused on insert.
        copy = ("INSERT OR REPLACE INTO audit_records SELECT seq, chain, request_id, 'login', created_at, actor, "
                "actor_role, channel, question, effective_classification, tier, model_key, refused, pii_present, "
                "policy_ids, cost, payload, prev_hash, hash FROM audit_records WHERE seq = 3")
        return common + [("insert or replace", lambda s: s.connection().exec_driver_sql(copy))]
    upsert = ("INSERT INTO audit_records SELECT * FROM audit_records WHERE seq = 3 "
              "ON CONFLICT (chain, seq) DO UPDATE SET event = 'login'")
    return common + [("truncate", lambda s: s.connection().exec_driver_sql("TRUNCATE audit_records")),
                     ("upsert", lambda s: s.connection().exec_driver_sql(upsert))]


def test_the_application_cannot_update_delete_or_overwrite_records(engine, session_factory, chain):
    for name, attempt in attempts(engine.dialect.name):
        session = session_factory()
        try:
            attempt(session)
        except DBAPIError as exc:
            assert "append-only" in str(exc), name
        else:
            pytest.fail(f"{name} was allowed")
        finally:
            session.rollback()
            session.close()
    result = verify(session_factory)
    assert (result.ok, result.records, result.head_hash) == (True, N, chain[-1].hash)


def test_protection_survives_a_downgrade_and_upgrade(db_url, chain):
    command.downgrade(alembic_config(db_url), "0001")
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as session, pytest.raises(DBAPIError, match="append-only"):
            session.execute(delete(AuditRecord))
    finally:
        engine.dispose()


# -- the owner edits, deletes, inserts, reorders: the chain names the first bad seq ----

EDITS = [
    ("question", "Question 12? (as the bank would now prefer it)"),
    ("actor", "mallory"),
    ("actor_role", "compliance"),
    ("refused", True),
    ("tier", 3),
    ("cost", 999.0),
    ("created_at", datetime(2020, 1, 1, tzinfo=UTC)),
    ("payload", canonical_json({"answer": "Answer 12: the LTV cap is 90%.", "scores": [0.7, 0.6]})),
    # the same JSON value, written differently: the stored text is the record
    ("payload", '{"answer": "Answer 12: the LTV cap is 75% [CR-HL-LTV 4.2].", "scores": [0.7, 0.6]}'),
    ("policy_ids", "OTHER-POLICY"),
    ("event", "login"),
    ("request_id", "req-999"),
    ("model_key", None),
    ("prev_hash", "f" * 64),
    ("hash", "e" * 64),
    ("chain", "elsewhere"),  # moved out of the chain: a gap
]


@pytest.mark.parametrize("field, value", EDITS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(EDITS)])
def test_an_edited_record_is_the_first_bad_seq(engine, session_factory, chain, field, value):
    with as_db_owner(engine) as conn:
        conn.execute(update(T).where(T.c.seq == 12).values({field: value}))
    result = verify(session_factory)
    assert (result.ok, result.first_bad_seq) == (False, 12), result.reason
    assert result.head_seq == N


def test_an_edit_with_its_hash_recomputed_is_caught_at_the_edited_record(engine, session_factory, chain):
    with as_db_owner(engine) as conn:
        conn.execute(update(T).where(T.c.seq == 12).values(question="edited"))
        row = stored(conn, 12)
        conn.execute(update(T).where(T.c.seq == 12).values(hash=record_hash(row.prev_hash, hashed_content(row))))
    result = verify(session_factory)
    assert (result.ok, result.first_bad_seq) == (False, 12)
    assert "recomputed" in result.reason


@pytest.mark.parametrize("deleted, first_bad", [({12}, 12), ({1}, 1), ({12, 13, 14}, 12), ({2, 7}, 2)])
def test_a_deleted_record_leaves_a_gap(engine, session_factory, chain, deleted, first_bad):
    with as_db_owner(engine) as conn:
        conn.execute(delete(T).where(T.c.seq.in_(deleted)))
    result = verify(session_factory)
    assert (result.ok, result.first_bad_seq, result.records) == (False, first_bad, N - len(deleted))
    assert "missing" in result.reason


def test_a_record_inserted_mid_chain_breaks_it_where_the_records_were_shifted(engine, session_factory, chain):
    with as_db_owner(engine) as conn:
        for seq in range(N, 11, -1):  # make room at 12, top down so the primary key never collides
            conn.execute(update(T).where(T.c.seq == seq).values(seq=seq + 1))
        forged = dict(hashed_content(stored(conn, 13)), seq=12, request_id="req-forged",
                      question="A question nobody asked", prev_hash=stored(conn, 11).hash)
        conn.execute(insert(T).values(dict(forged, payload=canonical_json(forged["payload"]),
                                           hash=record_hash(forged["prev_hash"], forged))))
    result = verify(session_factory)
    # The forged record chains perfectly to 11; the record it displaced no longer does.
    assert (result.ok, result.first_bad_seq, result.records) == (False, 13, N + 1)


@pytest.mark.parametrize("prev_hash, good_hash, first_bad", [
    (None, False, N + 1),  # chained to the head, but its hash is made up
    ("f" * 64, False, N + 1),  # neither link nor hash
    # Self-consistent but chained to a hash the head does not have: from the data alone
    # this is indistinguishable from "N edited and rehashed", so the earlier one is named.
    ("f" * 64, True, N),
])
def test_a_record_appended_behind_the_stores_back_is_caught(engine, session_factory, chain, prev_hash, good_hash,
                                                            first_bad):
    with as_db_owner(engine) as conn:
        content = dict(hashed_content(stored(conn, N)), seq=N + 1, prev_hash=prev_hash or stored(conn, N).hash)
        digest = record_hash(content["prev_hash"], content) if good_hash else "a" * 64
        conn.execute(insert(T).values(dict(content, payload=canonical_json(content["payload"]), hash=digest)))
    result = verify(session_factory)
    assert (result.ok, result.first_bad_seq, result.head_seq) == (False, first_bad, N + 1)
    assert f"seq {N + 1}" in result.reason


def test_a_duplicate_seq_is_refused_by_the_primary_key(engine, chain):
    with pytest.raises(IntegrityError), as_db_owner(engine) as conn:
        row = stored(conn, 5)
        conn.execute(insert(T).values(dict(row._mapping)))


def test_reordered_records_are_caught_at_the_first_moved_one(engine, session_factory, chain):
    with as_db_owner(engine) as conn:
        conn.execute(update(T).where(T.c.seq == 12).values(seq=-1))
        conn.execute(update(T).where(T.c.seq == 17).values(seq=12))
        conn.execute(update(T).where(T.c.seq == -1).values(seq=17))
    result = verify(session_factory)
    assert (result.ok, result.first_bad_seq, result.records) == (False, 12, N)


def test_a_row_the_driver_cannot_read_is_reported_not_raised(sqlite_url):
    engine = make_engine(sqlite_url)
    factory = make_session_factory(engine)
    for i in range(1, 6):
        with factory.begin() as session:
            append(session, entry(i))
    with as_db_owner(engine) as conn:
        # text in an integer column (SQLite keeps it: no number to convert it to)
        conn.exec_driver_sql("UPDATE audit_records SET tier = 'one' WHERE seq = 2")
        conn.exec_driver_sql("UPDATE audit_records SET created_at = 'yesterday' WHERE seq = 4")
    assert verify(factory).first_bad_seq == 2
    with as_db_owner(engine) as conn:
        conn.exec_driver_sql("UPDATE audit_records SET tier = 1 WHERE seq = 2")
    result = verify(factory)
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert "cannot be read" in result.reason
    engine.dispose()


# -- what only the checkpoints catch ---------------------------------------------------

def test_a_cut_off_tail_is_caught_only_with_a_checkpoint(engine, session_factory, chain):
    cp = checkpoint(session_factory)
    with as_db_owner(engine) as conn:
        conn.execute(delete(T).where(T.c.seq > 15))
    without = verify(session_factory)
    assert (without.ok, without.records, without.head_seq) == (True, 15, 15)  # a shorter chain is a valid chain
    result = verify(session_factory, [cp])
    assert (result.ok, result.first_bad_seq, result.head_seq) == (False, 16, 15)
    assert "deleted" in result.reason


def test_a_recomputed_chain_is_caught_only_with_a_checkpoint(engine, session_factory, chain):
    at_head = checkpoint(session_factory)
    assert at_head.seq == N
    with as_db_owner(engine) as conn:
        conn.execute(update(T).where(T.c.seq == 12).values(question="rewritten"))
        recompute_from(conn, 12)
    assert verify(session_factory).ok  # internally perfect
    result = verify(session_factory, [at_head])
    assert (result.ok, result.first_bad_seq) == (False, 1)  # nothing before 20 is vouched for
    assert "recomputed" in result.reason


def test_earlier_checkpoints_narrow_down_where_a_rewrite_began(engine, session_factory):
    checkpoints = []
    for i in range(1, N + 1):
        with session_factory.begin() as session:
            append(session, entry(i))
        if i in (5, 10, 15):
            checkpoints.append(checkpoint(session_factory))
    with as_db_owner(engine) as conn:
        conn.execute(update(T).where(T.c.seq == 12).values(question="rewritten"))
        recompute_from(conn, 12)
    result = verify(session_factory, checkpoints)
    assert (result.ok, result.first_bad_seq) == (False, 11)  # 10 still matches, 15 does not


def test_a_checkpoint_file_rewritten_without_the_key_is_caught(engine, session_factory, chain):
    with as_db_owner(engine) as conn:
        conn.execute(update(T).where(T.c.seq == 12).values(question="rewritten"))
        recompute_from(conn, 12)
    with session_factory() as session:
        forged = make_checkpoint(session, b"the attacker's guess")
    result = verify(session_factory, [forged])
    assert not result.ok and "invalid signature" in result.reason


def test_no_checkpoint_is_signed_over_a_broken_chain(engine, session_factory, chain):
    with as_db_owner(engine) as conn:
        conn.execute(delete(T).where(T.c.seq == 3))
    with session_factory() as session, pytest.raises(AuditChainBroken, match="seq 3 missing"):
        make_checkpoint(session, KEY)
