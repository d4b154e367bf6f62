"""Writers on two chains at once: each chain is serialised on its own lock and numbered on its
own, so each stays gap-free, duplicate-free and verifiable — on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from governance.audit import AuditEntry, append, verify_chain
from governance.records.audit import AuditRecord

pytestmark = pytest.mark.integration

CHAINS = ("main", "second")
THREADS_PER_CHAIN = 6
TRANSACTIONS_PER_THREAD = 4  # alternately one and two appends, committed each time
SEEDED = 3  # records "second" holds before the writers start: its numbering goes on from them


def entry(chain: str, thread: int, txn: int, part: int) -> AuditEntry:
    return AuditEntry(request_id=f"{chain}-t{thread}-x{txn}", event=f"part-{part}", actor=f"user{thread}",
                      actor_role="staff", channel="api", question=f"{chain}: thread {thread} asks {txn}",
                      payload={"chain": chain, "thread": thread, "txn": txn, "part": part}, tier=1,
                      policy_ids=(f"POL-{thread}",), cost=thread / 3)


def test_concurrent_appends_to_two_chains_keep_each_chain_whole(session_factory):
    with session_factory.begin() as session:
        for n in range(SEEDED):
            append(session, entry("second", -1, n, 0), chain="second")

    workers = [(chain, thread) for chain in CHAINS for thread in range(THREADS_PER_CHAIN)]
    start = threading.Barrier(len(workers))

    def writer(chain: str, thread: int) -> int:
        start.wait()
        appended = 0
        for txn in range(TRANSACTIONS_PER_THREAD):
            with session_factory.begin() as session:  # its own session and transaction each time
                for part in range(1 + txn % 2):
                    append(session, entry(chain, thread, txn, part), chain=chain)
                    appended += 1
        return appended

    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        futures = {(chain, thread): pool.submit(writer, chain, thread) for chain, thread in workers}
        appended = {chain: sum(f.result(timeout=600) for (c, _), f in futures.items() if c == chain)
                    for chain in CHAINS}

    per_chain = THREADS_PER_CHAIN * sum(1 + txn % 2 for txn in range(TRANSACTIONS_PER_THREAD))
    assert appended == dict.fromkeys(CHAINS, per_chain)
    expected_total = {"main": per_chain, "second": SEEDED + per_chain}
    with session_factory() as session:
        for chain in CHAINS:
            records = session.scalars(select(AuditRecord).where(AuditRecord.chain == chain)
                                      .order_by(AuditRecord.seq)).all()
            assert [r.seq for r in records] == list(range(1, expected_total[chain] + 1)), chain  # no gaps or dups
            # every append landed once, in its own chain and in no other
            seeded = [(f"second-t-1-x{n}", "part-0") for n in range(SEEDED)] if chain == "second" else []
            assert sorted((r.request_id, r.event) for r in records) == sorted(seeded + [
                (f"{chain}-t{t}-x{x}", f"part-{p}") for t in range(THREADS_PER_CHAIN)
                for x in range(TRANSACTIONS_PER_THREAD) for p in range(1 + x % 2)]), chain
            by_request: dict[str, list[int]] = {}
            for r in records:
                by_request.setdefault(r.request_id, []).append(r.seq)
            assert all(seqs == list(range(seqs[0], seqs[0] + len(seqs))) for seqs in by_request.values()), chain
            result = verify_chain(session, chain)
            assert (result.ok, result.records, result.head_seq) == (True, expected_total[chain],
                                                                    expected_total[chain]), result.reason
