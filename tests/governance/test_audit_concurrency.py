"""Many writers at once: the chain stays gap-free, duplicate-free and verifiable —
on SQLite and PostgreSQL, with compliance verifying while staff keep asking."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from governance.audit import AuditEntry, append, verify_chain
from governance.records.audit import AuditRecord

pytestmark = [pytest.mark.integration, pytest.mark.slow]

THREADS = 32
TRANSACTIONS_PER_THREAD = 6  # alternately one and two appends (a request; a publish + supersede)


def entry(thread: int, txn: int, part: int) -> AuditEntry:
    return AuditEntry(request_id=f"t{thread}-x{txn}", event=f"part-{part}", actor=f"user{thread}",
                      actor_role="staff", channel="api", question=f"thread {thread} asks question {txn}",
                      payload={"thread": thread, "txn": txn, "part": part, "text": "ü" * (thread + 1)}, tier=1,
                      policy_ids=(f"POL-{thread}",), cost=thread / 7)


def test_concurrent_appends_form_one_gap_free_verifiable_chain(session_factory):
    start = threading.Barrier(THREADS + 1)
    writers_done = threading.Event()

    def writer(thread: int) -> int:
        start.wait()
        appended = 0
        for txn in range(TRANSACTIONS_PER_THREAD):
            with session_factory.begin() as session:  # its own session and transaction each time
                for part in range(1 + txn % 2):
                    append(session, entry(thread, txn, part))
                    appended += 1
        return appended

    def reader() -> list:
        # Compliance verifying mid-traffic must always see a consistent chain.
        start.wait()
        results = []
        while not writers_done.is_set():
            with session_factory() as session:
                results.append(verify_chain(session))
        return results

    with ThreadPoolExecutor(max_workers=THREADS + 1) as pool:
        verifying = pool.submit(reader)
        writers = [pool.submit(writer, t) for t in range(THREADS)]
        try:
            appended = sum(w.result(timeout=600) for w in writers)
        finally:
            writers_done.set()  # a failed writer must not leave the reader looping
        midway = verifying.result(timeout=600)

    expected = THREADS * sum(1 + txn % 2 for txn in range(TRANSACTIONS_PER_THREAD))
    assert appended == expected
    with session_factory() as session:
        records = session.scalars(select(AuditRecord).order_by(AuditRecord.seq)).all()
        result = verify_chain(session)
    assert len(records) == expected
    assert [r.seq for r in records] == list(range(1, expected + 1))  # no gaps, no duplicates
    assert (result.ok, result.records, result.head_seq) == (True, expected, expected), result.reason
    # every append is there exactly once, and the two appends of one transaction are adjacent
    assert sorted((r.request_id, r.event) for r in records) == sorted(
        (f"t{t}-x{x}", f"part-{p}") for t in range(THREADS) for x in range(TRANSACTIONS_PER_THREAD)
        for p in range(1 + x % 2))
    by_request: dict[str, list[int]] = {}
    for r in records:
        by_request.setdefault(r.request_id, []).append(r.seq)
    assert all(seqs == list(range(seqs[0], seqs[0] + len(seqs))) for seqs in by_request.values())
    assert midway and all(r.ok for r in midway), [r.reason for r in midway if not r.ok]
