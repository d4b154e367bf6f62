"""Migration 0006 (audit records keyed by (chain, seq)) on a database that already holds
an audit trail, on SQLite and PostgreSQL: every stored value, hash and checkpoint survives,
the append-only protection survives, and the way back refuses to drop a second chain."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from alembic.util import CommandError
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.exc import DBAPIError

from governance import audit
from governance.audit import AuditEntry, Checkpoint, append, make_checkpoint, verify_chain
from governance.records.audit import AuditRecord
from services.db.session import alembic_config, current_revision, make_engine, make_session_factory, upgrade

pytestmark = pytest.mark.integration

BEFORE = "0005"
KEY = b"checkpoint-key-kept-by-compliance"
N = 8
T = AuditRecord.__table__
TYPED = select(*(T.c[name] for name in audit.HASHED_FIELDS), T.c.hash).order_by(T.c.seq)


def entry(i: int) -> AuditEntry:
    # The values whose stored form a copy could change: -0.0 and whole-number costs (REAL
    # in SQLite), NULLs, non-ASCII text, both booleans.
    return AuditEntry(request_id=f"req-{i}", event="ask", actor=f"user{i % 3}", actor_role="staff", channel="api",
                      payload={"answer": f"Antwort {i} ✓ — 75%", "scores": [0.5, i / 3], "none": None},
                      question=None if i == 4 else f"Frage {i}? 🙂", effective_classification="internal",
                      tier=i % 3 or None, model_key="m@1" if i % 2 else None, refused=bool(i % 2),
                      pii_present=not i % 2, policy_ids=("KYC-1",) if i % 2 else (),
                      cost=(-0.0, 2.0)[i % 2] if i < 3 else i / 7)


@pytest.fixture
def engine_at_0005(empty_db_url) -> Iterator[Engine]:
    """A database at 0005 holding N records on the main chain, appended by the store."""
    upgrade(empty_db_url, BEFORE)
    engine = make_engine(empty_db_url)
    factory = make_session_factory(engine)
    for i in range(1, N + 1):
        with factory.begin() as session:
            append(session, entry(i))
    yield engine
    engine.dispose()


def stored_rows(engine: Engine) -> list[tuple[str, ...]]:
    """Every row as the driver returns it, each value by repr: 2.0 stored as the integer 2
    would compare equal, but not spell the same."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT * FROM audit_records ORDER BY chain, seq").all()
    return [tuple(map(repr, row)) for row in rows]


def checkpoint(engine: Engine, chain: str = "main") -> Checkpoint:
    with make_session_factory(engine)() as session:
        return make_checkpoint(session, KEY, chain=chain)


def assert_verifies(engine: Engine, checkpoints: list[Checkpoint], records: int, head_hash: str,
                    chain: str = "main") -> None:
    """verify holds, with the signed checkpoints, and every row takes the fast digest to its stored hash."""
    with engine.connect() as conn:
        result = verify_chain(conn, chain, checkpoints, key=KEY)
        assert (result.ok, result.records, result.head_hash) == (True, records, head_hash), result.reason
        with audit._StoredChain(conn, chain) as stored:
            assert [stored.fast_digest(raw) == raw[-1] for raw in stored] == [True] * records
        typed = [list(row) for row in conn.execute(TYPED.where(T.c.chain == chain))]
        assert list(audit._stored_rows(conn, chain)) == typed


def assert_append_only(engine: Engine) -> None:
    tampering = [update(T).where(T.c.seq == 2).values(question="edited"), delete(T).where(T.c.seq == 2), delete(T)]
    if engine.dialect.name == "sqlite":
        # REPLACE deletes the row it collides with without firing the delete trigger.
        tampering.append("INSERT OR REPLACE INTO audit_records SELECT * FROM audit_records WHERE seq = 2")
    else:
        tampering.append("TRUNCATE audit_records")
    for statement in tampering:
        with engine.connect() as conn, pytest.raises(DBAPIError, match="append-only"):
            if isinstance(statement, str):
                conn.exec_driver_sql(statement)
            else:
                conn.execute(statement)


def test_upgrade_keeps_every_record_hash_checkpoint_and_protection(engine_at_0005):
    engine = engine_at_0005
    url = engine.url.render_as_string(hide_password=False)
    rows, before = stored_rows(engine), checkpoint(engine)
    assert before.seq == N

    upgrade(url, "0006")  # this revision's test: later ones do not touch audit_records
    assert current_revision(engine) == "0006"
    assert stored_rows(engine) == rows  # every value, as stored
    assert_verifies(engine, [before], N, before.head_hash)
    assert_append_only(engine)

    factory = make_session_factory(engine)
    with factory.begin() as session:
        main = append(session, entry(N + 1))
        other = append(session, entry(N + 2), chain="other")
    assert (main.seq, main.prev_hash) == (N + 1, before.head_hash)
    assert (other.seq, other.prev_hash) == (1, audit.GENESIS_HASH)
    checkpoints = [before, checkpoint(engine), checkpoint(engine, "other")]
    assert_verifies(engine, checkpoints, N + 1, main.hash)
    assert_verifies(engine, checkpoints, 1, other.hash, chain="other")


def test_downgrade_keeps_a_single_chain_as_it_was(engine_at_0005):
    engine = engine_at_0005
    url = engine.url.render_as_string(hide_password=False)
    upgrade(url)
    with make_session_factory(engine).begin() as session:
        append(session, entry(N + 1))
    rows, head = stored_rows(engine), checkpoint(engine)

    command.downgrade(alembic_config(url), BEFORE)
    assert current_revision(engine) == BEFORE
    assert stored_rows(engine) == rows
    assert_verifies(engine, [head], N + 1, head.head_hash)
    assert_append_only(engine)
    with make_session_factory(engine).begin() as session:
        assert append(session, entry(N + 2)).seq == N + 2  # 0005's store appends as before

    upgrade(url)
    with make_session_factory(engine).begin() as session:
        assert append(session, entry(N + 3), chain="other").seq == 1
    assert_append_only(engine)


def test_downgrade_is_refused_while_a_second_chain_shares_seqs(engine_at_0005):
    engine = engine_at_0005
    url = engine.url.render_as_string(hide_password=False)
    upgrade(url, "0006")
    with make_session_factory(engine).begin() as session:
        other = append(session, entry(1), chain="other")
    rows = stored_rows(engine)

    with pytest.raises(CommandError, match=r"seq 1 is in chain 'main' and in chain 'other'.*0005 keys audit records "
                                           r"by seq alone"):
        command.downgrade(alembic_config(url), BEFORE)
    assert current_revision(engine) == "0006"
    assert stored_rows(engine) == rows
    assert_verifies(engine, [], 1, other.hash, chain="other")
    assert_append_only(engine)


def test_a_sqlite_rebuild_that_fails_part_way_changes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'policyhub.db'}"
    upgrade(url, BEFORE)
    engine = make_engine(url)
    try:
        with make_session_factory(engine).begin() as session:
            for i in range(1, N + 1):
                append(session, entry(i))
        rows = stored_rows(engine)
        with engine.begin() as conn:  # in the way of the rebuild, after the triggers are dropped
            conn.exec_driver_sql("CREATE TABLE audit_records_rebuild (x INTEGER)")

        with pytest.raises(DBAPIError, match="audit_records_rebuild already exists"):
            upgrade(url)
        assert current_revision(engine) == BEFORE
        assert stored_rows(engine) == rows
        assert_append_only(engine)
    finally:
        engine.dispose()
