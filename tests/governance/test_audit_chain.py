"""The audit store's happy path: canonical JSON, hashing, appends, verification,
checkpoints, and compliance's queries and exports — on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from datetime import UTC, date, datetime, timedelta, timezone
from enum import Enum
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from governance.audit import (
    GENESIS_HASH,
    AuditEntry,
    Checkpoint,
    append,
    canonical_json,
    hashed_content,
    load_checkpoints,
    make_checkpoint,
    record_hash,
    save_checkpoint,
    verify_chain,
    verify_checkpoint_signature,
)
from governance.audit_query import (
    AuditFilter,
    export_csv,
    export_jsonl,
    get_by_request_id,
    iter_records,
    list_records,
    record_to_dict,
)
from governance.records.audit import AuditRecord

KEY = b"test-checkpoint-key"


def entry(i: int, **overrides) -> AuditEntry:
    fields = dict(request_id=f"req-{i}", event="ask", actor=f"user{i % 3}", actor_role="staff", channel="api",
                  payload={"trace": {"i": i, "score": 0.5 + i / 1000}, "answer": f"answer {i} ✓"},
                  question=f"Question number {i}?", effective_classification="internal", tier=1,
                  model_key="smollm2@1", policy_ids=("KYC-1",), cost=0.001 * i)
    fields.update(overrides)
    return AuditEntry(**fields)


def append_committed(factory, *entries: AuditEntry) -> list[AuditRecord]:
    with factory.begin() as session:
        return [append(session, e) for e in entries]


# -- canonical JSON (pure) ------------------------------------------------------------

class Colour(Enum):
    RED = "red"


@pytest.mark.unit
def test_canonical_json_is_sorted_compact_utf8_and_utc():
    ist = timezone(timedelta(hours=5, minutes=30))
    value = {"b": 1, "a": [1.5, "é", None, True], "when": datetime(2026, 1, 2, 9, 0, 0, 250, tzinfo=ist),
             "naive": datetime(2026, 1, 2, 3, 4, 5), "day": date(2026, 1, 2), "t": (1, 2), "c": Colour.RED,
             "id": UUID(int=1), 10: "ten", 9: "nine"}
    assert canonical_json(value) == (
        '{"10":"ten","9":"nine","a":[1.5,"é",null,true],"b":1,"c":"red","day":"2026-01-02",'
        '"id":"00000000-0000-0000-0000-000000000001","naive":"2026-01-02T03:04:05.000000Z","t":[1,2],'
        '"when":"2026-01-02T03:30:00.000250Z"}')


@pytest.mark.unit
@pytest.mark.parametrize("bad, error", [
    ({"x": math.nan}, ValueError), ({"x": math.inf}, ValueError), ({"x": {1, 2}}, TypeError),
    ({"x": b"bytes"}, TypeError), ({1: "a", "1": "b"}, ValueError), ({(1, 2): "tuple key"}, TypeError),
])
def test_canonical_json_refuses_what_it_cannot_write_stably(bad, error):
    with pytest.raises(error):
        canonical_json(bad)


@pytest.mark.unit
def test_floats_are_written_by_repr():
    assert canonical_json([0.1, 1e16, -0.0, 1.0, 2.5e-308]) == "[0.1,1e+16,-0.0,1.0,2.5e-308]"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@pytest.mark.unit
@given(JSON_VALUES)
def test_canonical_json_is_a_fixed_point_of_parsing(value):
    # The store hashes the payload as parsed back from its canonical text; that is only
    # sound if writing, reading and writing again changes nothing.
    once = canonical_json(value)
    assert canonical_json(json.loads(once)) == once


@pytest.mark.unit
def test_record_hash_is_sha256_of_prev_hash_and_canonical_content():
    content = {"seq": 1, "b": "é"}
    expected = hashlib.sha256(("f" * 64 + '{"b":"é","seq":1}').encode()).hexdigest()
    assert record_hash("f" * 64, content) == expected
    assert record_hash("e" * 64, content) != expected


STORED_ROWS = st.fixed_dictionaries({
    "actor": st.text(min_size=1), "actor_role": st.text(), "chain": st.just("main"), "channel": st.text(),
    "cost": st.floats(allow_nan=False, allow_infinity=False),
    "created_at": st.datetimes(timezones=st.none() | st.just(UTC) | st.timezones()),
    "effective_classification": st.none() | st.text(), "event": st.text(), "model_key": st.none() | st.text(),
    "payload": JSON_VALUES, "pii_present": st.booleans(), "policy_ids": st.text(), "prev_hash": st.text(),
    "question": st.none() | st.text(), "refused": st.booleans(), "request_id": st.text(),
    "seq": st.integers(min_value=1, max_value=2**62), "tier": st.none() | st.integers(),
})


@pytest.mark.unit
@given(STORED_ROWS)
def test_the_verifiers_fast_hash_equals_record_hash(row):
    # verify_chain hashes rows without parsing payloads (governance.audit._row_digest);
    # it must agree with the definition for every row the store can write.
    from governance.audit import HASHED_FIELDS, _row_digest

    stored = dict(row, payload=canonical_json(row["payload"]))
    content = dict(row, payload=json.loads(stored["payload"]))
    assert _row_digest([stored[name] for name in HASHED_FIELDS]) == record_hash(row["prev_hash"], content)


@pytest.mark.unit
def test_the_fast_hash_rejects_a_value_of_the_wrong_type():
    from governance.audit import HASHED_FIELDS, _row_digest

    row = {"actor": "a", "actor_role": "staff", "chain": "main", "channel": "api", "cost": 0.0,
           "created_at": datetime(2026, 1, 1), "effective_classification": None, "event": "ask", "model_key": None,
           "payload": "{}", "pii_present": False, "policy_ids": "", "prev_hash": GENESIS_HASH, "question": None,
           "refused": False, "request_id": "r", "seq": 1, "tier": 1}
    reference = _row_digest([row[name] for name in HASHED_FIELDS])
    # SQLite will store the text '1' in an integer column; it must not pass for the number 1.
    assert _row_digest([dict(row, tier="1")[name] for name in HASHED_FIELDS]) != reference
    with pytest.raises(TypeError):
        _row_digest([dict(row, tier=b"1")[name] for name in HASHED_FIELDS])


# -- appending -----------------------------------------------------------------------

@pytest.mark.integration
def test_appends_form_a_chain_from_genesis(session_factory):
    before = datetime.now(UTC)
    records = append_committed(session_factory, *(entry(i) for i in range(1, 6)))
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev_hash == GENESIS_HASH
    assert [r.prev_hash for r in records[1:]] == [r.hash for r in records[:-1]]
    with session_factory() as session:
        stored = session.scalars(select(AuditRecord).order_by(AuditRecord.seq)).all()
        for rec in stored:
            # recomputed from nothing but the stored row: every field is covered
            assert rec.hash == record_hash(rec.prev_hash, hashed_content(rec))
            assert set(hashed_content(rec)) == {c.name for c in AuditRecord.__table__.columns} - {"hash"}
        first = stored[0]
        assert (first.chain, first.request_id, first.actor, first.policy_ids, first.tier) == (
            "main", "req-1", "user1", "KYC-1", 1)
        assert json.loads(first.payload) == {"trace": {"i": 1, "score": 0.501}, "answer": "answer 1 ✓"}
        assert first.payload == canonical_json(json.loads(first.payload))
        created = first.created_at if first.created_at.tzinfo else first.created_at.replace(tzinfo=UTC)
        assert before - timedelta(seconds=1) <= created <= datetime.now(UTC)
        result = verify_chain(session)
    assert (result.ok, result.records, result.head_seq, result.head_hash) == (True, 5, 5, records[-1].hash)


@pytest.mark.integration
def test_append_does_not_commit_and_a_rollback_leaves_no_gap(session_factory):
    append_committed(session_factory, entry(1))
    session = session_factory()
    append(session, entry(2))
    session.rollback()
    session.close()
    [third] = append_committed(session_factory, entry(3))
    assert third.seq == 2
    with session_factory() as s:
        assert verify_chain(s).ok


@pytest.mark.integration
def test_the_action_and_its_audit_record_commit_together(session_factory):
    from services.db.models import Document

    with pytest.raises(RuntimeError), session_factory.begin() as session:
        session.add(Document(policy_id="POL-1"))
        append(session, entry(1, event="document.published"))
        raise RuntimeError("the action failed after auditing")
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(AuditRecord)) == 0
        assert session.get(Document, "POL-1") is None
    with session_factory.begin() as session:
        session.add(Document(policy_id="POL-1"))
        append(session, entry(1, event="document.published"))
        append(session, entry(2, event="document.superseded"))
    with session_factory() as session:
        assert [r.event for r in session.scalars(select(AuditRecord).order_by(AuditRecord.seq))] == [
            "document.published", "document.superseded"]
        assert verify_chain(session).ok


@pytest.mark.integration
@pytest.mark.parametrize("bad", [
    dict(actor="x" * 201), dict(request_id="r" * 65), dict(policy_ids=("KYC 1",)), dict(policy_ids="KYC-1"),
    dict(cost=math.nan), dict(payload={"score": math.inf}), dict(payload={"raw": b"bytes"}),
])
def test_an_entry_the_store_cannot_record_faithfully_is_refused(session_factory, bad):
    with pytest.raises((ValueError, TypeError)), session_factory.begin() as session:
        append(session, entry(1, **bad))
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(AuditRecord)) == 0


@pytest.mark.integration
def test_an_empty_chain_verifies_with_the_genesis_head(session_factory):
    with session_factory() as session:
        result = verify_chain(session)
    assert (result.ok, result.records, result.first_bad_seq, result.head_seq, result.head_hash) == (
        True, 0, None, 0, GENESIS_HASH)


@pytest.mark.integration
def test_verify_accepts_a_connection_and_ignores_other_chains(engine, session_factory):
    append_committed(session_factory, entry(1), entry(2))
    with engine.connect() as conn:
        result = verify_chain(conn)
        assert (result.ok, result.records) == (True, 2)
        assert verify_chain(conn, chain="other").records == 0


@pytest.mark.integration
def test_a_second_chain_numbers_from_1_and_verifies_on_its_own(engine, session_factory):
    append_committed(session_factory, entry(1), entry(2))
    with session_factory.begin() as session:
        other = [append(session, entry(i), chain="other") for i in (3, 4)]
    [third] = append_committed(session_factory, entry(5))
    assert ([r.seq for r in other], other[0].prev_hash, third.seq) == ([1, 2], GENESIS_HASH, 3)
    with session_factory() as session:
        checkpoints = [make_checkpoint(session, KEY), make_checkpoint(session, KEY, chain="other")]
    with engine.connect() as conn:
        main = verify_chain(conn, checkpoints=checkpoints, key=KEY)
        second = verify_chain(conn, chain="other", checkpoints=checkpoints, key=KEY)
    assert (main.ok, main.records, main.head_hash) == (True, 3, third.hash)
    assert (second.ok, second.records, second.head_hash) == (True, 2, other[-1].hash)


# -- checkpoints ---------------------------------------------------------------------

@pytest.mark.integration
def test_checkpoints_are_signed_saved_loaded_and_honoured(session_factory, tmp_path):
    append_committed(session_factory, *(entry(i) for i in range(1, 4)))
    path = tmp_path / "outside-the-db" / "checkpoints.jsonl"
    with session_factory() as session:
        first = make_checkpoint(session, KEY)
    save_checkpoint(path, first)
    append_committed(session_factory, entry(4), entry(5))
    with session_factory() as session:
        second = make_checkpoint(session, KEY, checkpoints=load_checkpoints(path))
    save_checkpoint(path, second)
    append_committed(session_factory, entry(6))

    loaded = load_checkpoints(path)
    assert loaded == [first, second]
    assert (first.seq, second.seq, first.chain) == (3, 5, "main")
    assert all(verify_checkpoint_signature(cp, KEY) for cp in loaded)
    assert not verify_checkpoint_signature(first, b"another key")
    for field, value in (("seq", 4), ("head_hash", "0" * 64), ("time", "2020-01-01T00:00:00.000000Z"),
                         ("chain", "other")):
        assert not verify_checkpoint_signature(Checkpoint(**{**first.__dict__, field: value}), KEY)
    with session_factory() as session:
        result = verify_chain(session, checkpoints=loaded, key=KEY)
    assert (result.ok, result.records, result.head_seq) == (True, 6, 6)


@pytest.mark.integration
def test_a_forged_checkpoint_is_reported_when_the_key_is_given(session_factory):
    append_committed(session_factory, entry(1), entry(2))
    with session_factory() as session:
        real = make_checkpoint(session, KEY)
        forged = Checkpoint(seq=2, head_hash="a" * 64, time=real.time, chain="main", signature=real.signature)
        result = verify_chain(session, checkpoints=[real, forged], key=KEY)
    assert not result.ok
    assert result.first_bad_seq is None  # the chain itself is intact
    assert "invalid signature" in result.reason


@pytest.mark.unit
def test_loading_checkpoints(tmp_path):
    assert load_checkpoints(tmp_path / "none-yet.jsonl") == []
    path = tmp_path / "cp.jsonl"
    path.write_text('{"seq": 1, "head_hash": "ab", "time": "t", "chain": "main", "signature": "s"}\n\nnot json\n')
    with pytest.raises(ValueError, match=r"cp.jsonl:3: not a checkpoint"):
        load_checkpoints(path)


# -- queries and exports ---------------------------------------------------------------

@pytest.fixture
def varied(session_factory):
    """Six records that differ in every filterable field."""
    entries = [
        entry(1, actor="alice", question="What is the LTV cap?", policy_ids=("KYC-1", "CR_HL")),
        entry(2, actor="bob", actor_role="compliance", question="Who approves 100% loans?", tier=2,
              model_key="cloud@3", refused=True, policy_ids=("KYC-10",)),
        entry(3, actor="alice", question="Is PAN required for KYC?", pii_present=True,
              effective_classification="confidential", policy_ids=()),
        entry(4, actor="carol", event="document.published", question=None, tier=None, model_key=None,
              policy_ids=("CRXHL",)),
        entry(5, actor="=cmd|' /C calc'!A0", question="-2+3 what is the LTV CAP", policy_ids=("KYC-1",)),
        entry(6, actor="dave", question="Escaping: 100%_done", policy_ids=("OPS-9",)),
    ]
    return append_committed(session_factory, *entries)


def seqs(session, flt: AuditFilter, **kw) -> list[int]:
    records, _ = list_records(session, flt, **kw)
    return [r.seq for r in records]


@pytest.mark.integration
def test_each_filter_narrows_the_list(session_factory, varied):
    with session_factory() as s:
        assert seqs(s, AuditFilter()) == [6, 5, 4, 3, 2, 1]  # newest first
        assert seqs(s, AuditFilter(actor="alice")) == [3, 1]
        assert seqs(s, AuditFilter(actor_role="compliance")) == [2]
        assert seqs(s, AuditFilter(classification="confidential")) == [3]
        assert seqs(s, AuditFilter(tier=2)) == [2]
        assert seqs(s, AuditFilter(model_key="cloud@3")) == [2]
        assert seqs(s, AuditFilter(refused=True)) == [2]
        assert seqs(s, AuditFilter(refused=False, actor="alice")) == [3, 1]
        assert seqs(s, AuditFilter(pii_present=True)) == [3]
        assert seqs(s, AuditFilter(event="document.published")) == [4]
        # whole ids only: KYC-1 is not KYC-10, and "_" is not a wildcard
        assert seqs(s, AuditFilter(policy_id="KYC-1")) == [5, 1]
        assert seqs(s, AuditFilter(policy_id="CR_HL")) == [1]
        assert seqs(s, AuditFilter(text="ltv cap")) == [5, 1]
        assert seqs(s, AuditFilter(text="100%_")) == [6]
        assert seqs(s, AuditFilter(text="100%")) == [6, 2]
        assert seqs(s, AuditFilter(actor="alice", text="kyc")) == [3]


@pytest.mark.integration
def test_time_filters_are_half_open_and_timezone_aware(session_factory, varied):
    third = varied[2].created_at if varied[2].created_at.tzinfo else varied[2].created_at.replace(tzinfo=UTC)
    ist = timezone(timedelta(hours=5, minutes=30))
    with session_factory() as s:
        assert seqs(s, AuditFilter(since=third)) == [6, 5, 4, 3]
        assert seqs(s, AuditFilter(until=third)) == [2, 1]
        # the same instant spelt in IST, and as a naive UTC value
        assert seqs(s, AuditFilter(since=third.astimezone(ist))) == [6, 5, 4, 3]
        assert seqs(s, AuditFilter(until=third.replace(tzinfo=None))) == [2, 1]
        assert seqs(s, AuditFilter(since=third + timedelta(days=1))) == []


@pytest.mark.integration
def test_pages_and_totals(session_factory, varied):
    with session_factory() as s:
        records, total = list_records(s, AuditFilter(), limit=2, offset=2)
        assert ([r.seq for r in records], total) == ([4, 3], 6)
        records, total = list_records(s, AuditFilter(actor="alice"), limit=1)
        assert ([r.seq for r in records], total) == ([3], 2)
        assert list_records(s, AuditFilter(), limit=5, offset=10) == ([], 6)


@pytest.mark.integration
def test_lookup_by_request_and_full_trace(session_factory, varied):
    with session_factory() as s:
        rec = get_by_request_id(s, "req-2")
        assert rec.seq == 2
        assert get_by_request_id(s, "nope") is None
        data = record_to_dict(rec)
        assert data["payload"] == {"trace": {"i": 2, "score": 0.502}, "answer": "answer 2 ✓"}
        assert data["policy_ids"] == ["KYC-10"]
        assert data["created_at"].endswith("Z")
        assert "payload" not in record_to_dict(rec, include_payload=False)


@pytest.mark.integration
def test_the_jsonl_export_can_be_verified_offline(session_factory, varied):
    # A regulator given only the export recomputes every hash and every link.
    with session_factory() as s:
        chunks = list(export_jsonl(iter_records(s, AuditFilter())))
    lines = "".join(chunks).splitlines()
    assert len(lines) == 6
    prev = GENESIS_HASH
    for number, line in enumerate(lines, start=1):
        data = json.loads(line)
        assert data["seq"] == number and data["prev_hash"] == prev
        content = {k: v for k, v in data.items() if k != "hash"}
        content["policy_ids"] = " ".join(content["policy_ids"])
        assert record_hash(data["prev_hash"], content) == data["hash"]
        prev = data["hash"]


@pytest.mark.integration
def test_with_two_chains_the_list_is_newest_first_per_chain_and_the_export_keeps_each_chain_whole(session_factory):
    for i, chain in enumerate(("main", "other", "main", "other", "other"), start=1):
        with session_factory.begin() as session:
            append(session, entry(i), chain=chain)
    with session_factory() as s:
        records, total = list_records(s, AuditFilter())
        lines = "".join(export_jsonl(iter_records(s, AuditFilter()))).splitlines()
    assert ([(r.chain, r.seq) for r in records], total) == (
        [("other", 3), ("other", 2), ("other", 1), ("main", 2), ("main", 1)], 5)
    exported = [json.loads(line) for line in lines]
    assert [(d["chain"], d["seq"]) for d in exported] == [("main", 1), ("main", 2), ("other", 1), ("other", 2),
                                                          ("other", 3)]
    prev = {}
    for data in exported:  # each line links to the one before it in its chain
        assert data["prev_hash"] == prev.get(data["chain"], GENESIS_HASH)
        content = {k: v for k, v in data.items() if k != "hash"}
        content["policy_ids"] = " ".join(content["policy_ids"])
        assert record_hash(data["prev_hash"], content) == data["hash"]
        prev[data["chain"]] = data["hash"]


@pytest.mark.integration
def test_exports_follow_the_filter_and_stream_in_chunks(session_factory, monkeypatch):
    import governance.audit_query as audit_query

    monkeypatch.setattr(audit_query, "_EXPORT_BATCH", 10)  # rows per fetch and per chunk
    append_committed(session_factory, *(entry(i, actor="alice" if i % 2 else "bob") for i in range(1, 52)))
    with session_factory() as s:
        chunks = list(export_jsonl(iter_records(s, AuditFilter(actor="alice"))))
        csv_chunks = list(export_csv(iter_records(s, AuditFilter(actor="bob"))))
    assert [line.count("\n") for line in chunks] == [10, 10, 6]
    assert [json.loads(line)["seq"] for line in "".join(chunks).splitlines()] == list(range(1, 52, 2))
    rows = list(csv.reader(io.StringIO("".join(csv_chunks))))
    assert len(csv_chunks) == 3 and len(rows) == 1 + 25


@pytest.mark.integration
def test_the_csv_export_is_complete_and_safe_to_open_in_a_spreadsheet(session_factory, varied):
    with session_factory() as s:
        text_out = "".join(export_csv(iter_records(s, AuditFilter())))
    rows = list(csv.DictReader(io.StringIO(text_out)))
    assert [int(r["seq"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[0]["policy_ids"] == "KYC-1 CR_HL"
    assert json.loads(rows[1]["payload"])["answer"] == "answer 2 ✓"
    assert rows[1]["hash"] == varied[1].hash
    # a cell a spreadsheet would execute is defused; the JSON lines export keeps it exact
    assert rows[4]["actor"] == "'=cmd|' /C calc'!A0"
    assert rows[4]["question"] == "'-2+3 what is the LTV CAP"


def test_negative_zero_cost_and_lone_surrogates_are_stored_so_that_they_verify(tmp_path):
    # Found by the property test below: SQLite reads -0.0 back as 0.0, and "\ud800" (legal
    # in JSON) cannot be encoded as UTF-8 at all.
    from services.db.session import make_engine, make_session_factory, upgrade

    url = f"sqlite:///{tmp_path / 'a.db'}"
    upgrade(url)
    factory = make_session_factory(make_engine(url))
    entry = AuditEntry(request_id="r\ud800", event="ask", actor="a", actor_role="staff", channel="api",
                       payload={"q\udc00": "x\ud800"}, question="LTV?\ud800", policy_ids=["P\ud800"], cost=-0.0)
    (record,) = append_committed(factory, entry)
    with factory() as session:
        assert verify_chain(session).ok
        stored = session.get(AuditRecord, (record.chain, record.seq))
        assert stored.question == "LTV?\ufffd" and stored.request_id == "r\ufffd"
        assert stored.payload == '{"q\ufffd":"x\ufffd"}' and stored.policy_ids == "P\ufffd"


# -- a property test through the real store ------------------------------------------

@pytest.fixture(scope="module")
def shared_sqlite_factory(tmp_path_factory):
    from services.db.session import make_engine, make_session_factory, upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('audit-prop') / 'audit.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


ENTRIES = st.builds(
    AuditEntry,
    request_id=st.text(min_size=1, max_size=64), event=st.text(max_size=64), actor=st.text(min_size=1, max_size=200),
    actor_role=st.text(max_size=32), channel=st.text(max_size=32), payload=st.dictionaries(st.text(), JSON_VALUES),
    question=st.none() | st.text(), effective_classification=st.none() | st.text(max_size=32),
    tier=st.none() | st.integers(min_value=-(2**31), max_value=2**31 - 1), model_key=st.none() | st.text(max_size=200),
    refused=st.booleans(), pii_present=st.booleans(),
    policy_ids=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Zs", "Cc", "Zl", "Zp")), min_size=1,
                                max_size=12).filter(lambda s: not any(c.isspace() for c in s)), max_size=3),
    cost=st.floats(allow_nan=False, allow_infinity=False),
)


@pytest.mark.integration
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(ENTRIES, min_size=1, max_size=5))
def test_whatever_is_appended_verifies(shared_sqlite_factory, entries):
    # Hashing at append (parsed payload, canonical_json) and at verify (stored text,
    # fast path) must agree on any text, number and structure a caller can send.
    records = append_committed(shared_sqlite_factory, *entries)
    with shared_sqlite_factory() as session:
        result = verify_chain(session)
        assert result.ok, result.reason
        assert result.head_seq == records[-1].seq
        for sent, rec in zip(entries, records, strict=True):
            stored = session.get(AuditRecord, (rec.chain, rec.seq))
            assert stored.payload == canonical_json(sent.payload)
            assert (stored.question, stored.tier, stored.cost) == (sent.question, sent.tier, sent.cost)
