"""The server's checkpoint rounds, on SQLite and PostgreSQL: the incremental verify they
rely on (tampering after the last checkpoint refused, before it left to the full verify),
every chain covered, and writers racing on one file never signing a (chain, seq) twice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from governance.audit import (
    AuditChainBroken,
    append,
    checkpoint_moved_chains,
    hashed_content,
    load_checkpoints,
    make_checkpoint,
    record_hash,
    save_checkpoint,
    verify_chain,
)
from tests.governance.test_audit_tamper import (
    KEY,
    T,
    as_db_owner,
    entry,
    recompute_from,
    stored,
)

pytestmark = pytest.mark.integration


def append_records(session_factory, first: int, last: int, chain: str = "main") -> None:
    for i in range(first, last + 1):
        with session_factory.begin() as session:
            append(session, entry(i), chain)


@pytest.fixture
def checkpointed_at_10(session_factory) -> list:
    """20 records on the main chain, the last signed checkpoint at seq 10."""
    append_records(session_factory, 1, 10)
    with session_factory() as session:
        checkpoints = [make_checkpoint(session, KEY)]
    append_records(session_factory, 11, 20)
    return checkpoints


def edit_and_rehash(conn, seq: int) -> None:
    conn.execute(update(T).where(T.c.seq == seq).values(question="edited"))
    row = stored(conn, seq)
    conn.execute(update(T).where(T.c.seq == seq).values(hash=record_hash(row.prev_hash, hashed_content(row))))


def rewrite_from(conn, seq: int) -> None:
    """The full cover-up: edit a record and re-chain everything after it."""
    edit_and_rehash(conn, seq)
    recompute_from(conn, seq + 1)


def verify(session_factory, checkpoints, incremental: bool):
    with session_factory() as session:
        return verify_chain(session, checkpoints=checkpoints, key=KEY, after_last_checkpoint=incremental)


def test_the_incremental_walk_reads_only_the_records_after_the_checkpoint(session_factory, checkpointed_at_10):
    result = verify(session_factory, checkpointed_at_10, incremental=True)
    assert (result.ok, result.records, result.head_seq) == (True, 10, 20)
    assert result.head_hash == verify(session_factory, checkpointed_at_10, incremental=False).head_hash
    with session_factory() as session:
        cp = make_checkpoint(session, KEY, checkpoints=checkpointed_at_10, incremental=True)
    assert (cp.seq, cp.head_hash) == (20, result.head_hash)


@pytest.mark.parametrize("tamper, first_bad", [
    (lambda conn: conn.execute(update(T).where(T.c.seq == 15).values(question="edited")), 15),
    (lambda conn: conn.execute(update(T).where(T.c.seq == 11).values(prev_hash="f" * 64)), 11),
    (lambda conn: conn.execute(delete(T).where(T.c.seq == 15)), 15),
    (lambda conn: edit_and_rehash(conn, 15), 15),
], ids=["edited", "relinked", "deleted", "edited-and-rehashed"])
def test_an_edit_after_the_checkpoint_is_refused(engine, session_factory, checkpointed_at_10, tamper, first_bad):
    with as_db_owner(engine) as conn:
        tamper(conn)
    result = verify(session_factory, checkpointed_at_10, incremental=True)
    assert (result.ok, result.first_bad_seq) == (False, first_bad), result.reason
    with session_factory() as session, pytest.raises(AuditChainBroken, match=f"seq {first_bad}"):
        make_checkpoint(session, KEY, checkpoints=checkpointed_at_10, incremental=True)


@pytest.mark.parametrize("seq", [5, 10])
def test_an_edit_before_the_checkpoint_is_left_to_the_full_verify(engine, session_factory, checkpointed_at_10, seq):
    """The incremental walk trusts what the last checkpoint covered (seq 10's row is compared by
    its stored hash only); `policyhub audit verify` walks it all and still names the record."""
    with as_db_owner(engine) as conn:
        conn.execute(update(T).where(T.c.seq == seq).values(question="edited"))
    assert verify(session_factory, checkpointed_at_10, incremental=True).ok
    full = verify(session_factory, checkpointed_at_10, incremental=False)
    assert (full.ok, full.first_bad_seq) == (False, seq)


@pytest.mark.parametrize("tamper", [
    lambda conn: rewrite_from(conn, 5),  # the head signed at seq 10 no longer matches
    lambda conn: conn.execute(delete(T).where(T.c.seq > 8)),  # cut below the checkpoint
    lambda conn: conn.execute(delete(T).where(T.c.seq == 10)),
], ids=["recomputed", "cut", "checkpointed-record-deleted"])
def test_when_the_checkpointed_record_differs_the_whole_chain_is_walked(engine, session_factory,
                                                                      checkpointed_at_10, tamper):
    with as_db_owner(engine) as conn:
        tamper(conn)
    incremental = verify(session_factory, checkpointed_at_10, incremental=True)
    assert not incremental.ok
    assert incremental == verify(session_factory, checkpointed_at_10, incremental=False)


def test_a_checkpoint_with_a_bad_signature_is_no_anchor(session_factory, checkpointed_at_10):
    head = verify(session_factory, checkpointed_at_10, incremental=True)
    forged = replace(checkpointed_at_10[0], seq=20, head_hash=head.head_hash)  # the right head, unsigned
    result = verify(session_factory, checkpointed_at_10 + [forged], incremental=True)
    assert not result.ok and "invalid signature" in result.reason
    assert result.records == 10  # walked from the genuine checkpoint at seq 10, not skipped to 20


# -- rounds -------------------------------------------------------------------------------


def test_a_round_signs_every_moved_chain_once(session_factory, tmp_path):
    path = tmp_path / "audit-checkpoints.jsonl"
    append_records(session_factory, 1, 3)
    append_records(session_factory, 1, 2, chain="drift")
    first = checkpoint_moved_chains(session_factory, KEY, path)
    assert sorted((cp.chain, cp.seq) for cp in first.written) == [("drift", 2), ("main", 3)]
    assert not first.refused
    assert checkpoint_moved_chains(session_factory, KEY, path).written == []  # nothing moved
    append_records(session_factory, 3, 4, chain="drift")
    second = checkpoint_moved_chains(session_factory, KEY, path)
    assert [(cp.chain, cp.seq) for cp in second.written] == [("drift", 4)]
    assert [(cp.chain, cp.seq) for cp in load_checkpoints(path)] == [("drift", 2), ("main", 3), ("drift", 4)]


def test_a_tampered_chain_is_refused_and_the_others_still_signed(engine, session_factory, tmp_path):
    path = tmp_path / "audit-checkpoints.jsonl"
    append_records(session_factory, 1, 5)
    append_records(session_factory, 1, 3, chain="drift")
    checkpoint_moved_chains(session_factory, KEY, path)
    append_records(session_factory, 6, 7)
    append_records(session_factory, 4, 5, chain="drift")
    with as_db_owner(engine) as conn:
        conn.execute(update(T).where(T.c.chain == "main", T.c.seq == 6).values(question="edited"))
    result = checkpoint_moved_chains(session_factory, KEY, path)
    assert [(cp.chain, cp.seq) for cp in result.written] == [("drift", 5)]
    assert list(result.refused) == ["main"] and "seq 6 does not match its hash" in result.refused["main"]
    assert ("main", 7) not in {(cp.chain, cp.seq) for cp in load_checkpoints(path)}


def test_a_chain_deleted_whole_is_refused_not_forgotten(engine, session_factory, tmp_path):
    path = tmp_path / "audit-checkpoints.jsonl"
    append_records(session_factory, 1, 3, chain="drift")
    checkpoint_moved_chains(session_factory, KEY, path)
    with as_db_owner(engine) as conn:
        conn.execute(delete(T).where(T.c.chain == "drift"))
    result = checkpoint_moved_chains(session_factory, KEY, path)
    assert not result.written
    assert "records 1..3 were deleted" in result.refused["drift"]


def test_a_manual_checkpoint_counts_as_the_last_one(session_factory, tmp_path):
    path = tmp_path / "audit-checkpoints.jsonl"
    append_records(session_factory, 1, 3)
    with session_factory() as session:
        save_checkpoint(path, make_checkpoint(session, KEY))
    assert checkpoint_moved_chains(session_factory, KEY, path).written == []


# -- racing writers -----------------------------------------------------------------------


def assert_no_duplicates(path: Path) -> list:
    checkpoints = load_checkpoints(path)
    counts = Counter((cp.chain, cp.seq) for cp in checkpoints)
    assert [key for key, n in counts.items() if n > 1] == []
    return checkpoints


def test_threads_racing_on_one_file_sign_each_head_once(session_factory, tmp_path):
    path = tmp_path / "audit-checkpoints.jsonl"
    start, errors = threading.Barrier(5), []

    def checkpointer() -> None:
        start.wait()
        try:
            for _ in range(15):
                assert not checkpoint_moved_chains(session_factory, KEY, path).refused
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    def appender(chain: str) -> None:
        start.wait()
        append_records(session_factory, 1, 15, chain)

    threads = [threading.Thread(target=checkpointer) for _ in range(3)]
    threads += [threading.Thread(target=appender, args=(chain,)) for chain in ("main", "drift")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    checkpoint_moved_chains(session_factory, KEY, path)
    checkpoints = assert_no_duplicates(path)
    assert {cp.chain: cp.seq for cp in checkpoints} == {"main": 15, "drift": 15}  # file order: last wins
    with session_factory() as session:
        assert verify_chain(session, checkpoints=checkpoints, key=KEY).ok


ROUNDS_IN_A_PROCESS = textwrap.dedent("""
    import sys
    from governance.audit import checkpoint_moved_chains
    from services.db.session import make_engine, make_session_factory

    engine = make_engine(sys.argv[1])
    factory = make_session_factory(engine)
    print("ready", flush=True)
    sys.stdin.readline()  # go
    for _ in range(int(sys.argv[3])):
        assert not checkpoint_moved_chains(factory, sys.argv[4].encode(), sys.argv[2]).refused
    engine.dispose()
""")


def test_processes_racing_on_one_file_sign_each_head_once(db_url, session_factory, tmp_path):
    """As uvicorn --workers would: separate processes, one data dir."""
    path = tmp_path / "audit-checkpoints.jsonl"
    workers = [subprocess.Popen([sys.executable, "-c", ROUNDS_IN_A_PROCESS, db_url, str(path), "30", KEY.decode()],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                cwd=Path(__file__).resolve().parents[2])
               for _ in range(3)]
    append_records(session_factory, 1, 20)  # a moved head for every worker's first round at once
    try:
        for worker in workers:
            assert worker.stdout.readline() == "ready\n"
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        append_records(session_factory, 21, 40)
        for worker in workers:
            assert worker.wait(timeout=120) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    checkpoint_moved_chains(session_factory, KEY, path)
    checkpoints = assert_no_duplicates(path)
    assert checkpoints[-1].seq == 40
