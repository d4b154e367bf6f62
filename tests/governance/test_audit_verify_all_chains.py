"""verify_all_chains walks every audit chain, on SQLite and PostgreSQL: the main chain, every chain
with records and every chain a checkpoint names, so one broken chain fails the whole verify and a
chain deleted whole after it was checkpointed is reported, not silently absent."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, update

from governance.audit import (
    GENESIS_HASH,
    Checkpoint,
    append,
    audited_chains,
    make_checkpoint,
    verify_all_chains,
)
from tests.governance.test_audit_tamper import KEY, T, as_db_owner, entry

pytestmark = pytest.mark.integration


def fill(session_factory, **counts: int) -> None:
    for chain, n in counts.items():
        for i in range(1, n + 1):
            with session_factory.begin() as session:
                append(session, entry(i), chain)


def checkpoint_all(session_factory, *chains: str) -> list[Checkpoint]:
    with session_factory() as session:
        return [make_checkpoint(session, KEY, chain) for chain in chains]


def summary(verified) -> dict[str, tuple]:  # noqa: ANN001
    return {chain: (r.ok, r.records, r.head_seq, r.first_bad_seq) for chain, r in verified.chains.items()}


def test_an_empty_store_verifies_only_the_empty_main_chain(session_factory):
    with session_factory() as session:
        verified = verify_all_chains(session, key=KEY)
    assert verified.ok and verified.broken == [] and verified.records == 0
    assert summary(verified) == {"main": (True, 0, 0, None)}
    assert verified.main.head_hash == GENESIS_HASH


def test_every_chain_is_walked_main_first_with_its_own_counts(session_factory):
    fill(session_factory, zeta=2, main=3, alpha=4)
    checkpoints = checkpoint_all(session_factory, "main", "zeta", "alpha")
    with session_factory() as session:
        verified = verify_all_chains(session, checkpoints, key=KEY)
    assert verified.ok, verified
    assert summary(verified) == {"main": (True, 3, 3, None), "alpha": (True, 4, 4, None),
                                 "zeta": (True, 2, 2, None)}
    assert list(verified.chains) == ["main", "alpha", "zeta"]
    assert verified.records == 9


def test_a_tampered_second_chain_fails_the_verify_while_main_holds(engine, session_factory):
    fill(session_factory, main=3, other=4)
    with as_db_owner(engine) as conn:
        conn.execute(update(T).where(T.c.chain == "other", T.c.seq == 2).values(question="edited"))
    with session_factory() as session:
        verified = verify_all_chains(session, key=KEY)
    assert not verified.ok
    assert verified.broken == ["other"]
    assert summary(verified) == {"main": (True, 3, 3, None), "other": (False, 4, 4, 2)}
    assert "seq 2 does not match its hash" in verified.chains["other"].reason


def test_a_checkpointed_chain_whose_rows_were_all_deleted_is_reported(engine, session_factory):
    fill(session_factory, main=2, other=3)
    checkpoints = checkpoint_all(session_factory, "main", "other")
    with as_db_owner(engine) as conn:
        conn.execute(delete(T).where(T.c.chain == "other"))
    with session_factory() as session:
        assert audited_chains(session, checkpoints) == ["main", "other"]
        verified = verify_all_chains(session, checkpoints, key=KEY)
    assert verified.broken == ["other"]
    assert summary(verified) == {"main": (True, 2, 2, None), "other": (False, 0, 0, 1)}
    assert "records 1..3 were deleted" in verified.chains["other"].reason


def test_a_forged_checkpoint_naming_a_chain_that_never_existed_is_reported(session_factory):
    fill(session_factory, main=1)
    [real] = checkpoint_all(session_factory, "main")
    forged = Checkpoint(seq=5, head_hash="a" * 64, time=real.time, chain="ghost", signature=real.signature)
    with session_factory() as session:
        verified = verify_all_chains(session, [real, forged], key=KEY)
    assert verified.broken == ["ghost"]
    assert "invalid signature" in verified.chains["ghost"].reason
    assert verified.main.ok

