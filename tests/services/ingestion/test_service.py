"""Immutable versions, atomic supersession, crash recovery, bad input in a batch — on the real stack."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.bench.obliqa import DEFAULT_OBLIQA_DIR
from services.db.session import upgrade
from services.errors import DocumentConflict, DocumentRejected
from services.query.retrieval import visible_versions
from tests.services.conftest import FIXTURE_CORPUS, make_settings

pytestmark = pytest.mark.integration
OBLIQA = DEFAULT_OBLIQA_DIR / "documents_txt"


@pytest.fixture
def fresh(tmp_path, stack):
    """A new database and shard, sharing the session's loaded embedding model."""
    from services.runtime import build_runtime

    settings = make_settings(tmp_path / "data")
    upgrade(settings.sqlalchemy_url)
    runtime = build_runtime(settings)
    yield runtime
    runtime.close()


def versions(runtime, policy_id):
    from sqlalchemy import select

    from services.db.models import DocumentVersion

    with runtime.session_factory() as s:
        return {v.version: (v.status, v.chunk_count) for v in s.scalars(
            select(DocumentVersion).where(DocumentVersion.policy_id == policy_id))}


def test_new_version_supersedes_and_old_version_is_unchanged(fresh):
    v1 = (FIXTURE_CORPUS / "expenses-v1.md").read_bytes()
    v2 = (FIXTURE_CORPUS / "expenses-v2.md").read_bytes()
    first = fresh.ingestion.ingest_bytes("expenses-v1.md", v1)
    assert first.status == "published"
    count_v1 = fresh.index.count(fresh.identity.index_name)
    fresh.ingestion.ingest_bytes("expenses-v2.md", v2)
    assert versions(fresh, "TEST-EXP") == {"1.0": ("superseded", 1), "2.0": ("active", 1)}
    assert fresh.index.count(fresh.identity.index_name) == count_v1 + 1  # v1's points untouched
    with fresh.session_factory() as s:
        active = visible_versions(s, "confidential", fresh.policy)
        assert [v.version for v in active.values() if v.policy_id == "TEST-EXP"] == ["2.0"]


def test_same_content_is_a_noop_and_changed_content_same_version_is_rejected(fresh):
    data = (FIXTURE_CORPUS / "complaints.md").read_bytes()
    assert fresh.ingestion.ingest_bytes("complaints.md", data).status == "published"
    points = fresh.index.count(fresh.identity.index_name)
    assert fresh.ingestion.ingest_bytes("complaints.md", data).status == "unchanged"
    tampered = data.replace(b"2 business days", b"5 business days")
    with pytest.raises(DocumentConflict, match="already exists with different content"):
        fresh.ingestion.ingest_bytes("complaints.md", tampered)
    assert fresh.index.count(fresh.identity.index_name) == points
    assert versions(fresh, "TEST-CMP") == {"3.1": ("active", 1)}


def test_a_bad_file_in_a_batch_stores_nothing_and_the_rest_lands(fresh, tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "good.md").write_bytes((FIXTURE_CORPUS / "complaints.md").read_bytes())
    (batch / "no-meta.md").write_text("# A policy\n1.1 Something without metadata\n")
    (batch / "empty.txt").write_bytes(b"")
    (batch / "junk.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    summary = fresh.ingestion.ingest_paths([batch])
    assert [r.status for r in summary.results if r.source.endswith("good.md")] == ["published"]
    rejected = {Path(r.source).name: r.error for r in summary.rejected}
    assert set(rejected) == {"no-meta.md", "empty.txt", "junk.pdf"}
    assert all(name in error for name, error in rejected.items())
    assert "policy_id" in rejected["no-meta.md"]
    with fresh.session_factory() as s:
        assert len(visible_versions(s, "confidential", fresh.policy)) == 1
    assert fresh.index.count(fresh.identity.index_name) == 1


def test_rejected_document_raises_naming_the_file(fresh):
    with pytest.raises(DocumentRejected, match="policy.exe"):
        fresh.ingestion.ingest_bytes("policy.exe", b"MZ\x90\x00")


def stored_rows(runtime) -> dict[str, int]:
    from sqlalchemy import func, select

    from governance.records.audit import AuditRecord
    from services.db.models import Chunk, Clause, Document, DocumentVersion

    with runtime.session_factory() as s:
        return {table.__tablename__: s.scalar(select(func.count()).select_from(table))
                for table in (Document, DocumentVersion, Clause, Chunk, AuditRecord)}


@pytest.mark.parametrize("failing", ["embedder", "index"])
def test_a_failure_after_parsing_stores_nothing_and_names_the_problem(fresh, monkeypatch, failing):
    from services.errors import IndexUnavailable

    data = (FIXTURE_CORPUS / "complaints.md").read_bytes()
    before, points = stored_rows(fresh), fresh.index.count(fresh.identity.index_name)
    if failing == "embedder":
        def embed(texts):
            raise IndexUnavailable("embedding model crashed")
        monkeypatch.setattr(fresh.ingestion.embedder, "embed", embed)
    else:
        upsert = fresh.index.upsert

        def upsert_then_fail(name, batch):
            upsert(name, batch)  # the points are written, then the index fails
            raise IndexUnavailable("qdrant went away")
        monkeypatch.setattr(fresh.index, "upsert", upsert_then_fail)
    with pytest.raises(IndexUnavailable, match="embedding model crashed|qdrant went away"):
        fresh.ingestion.ingest_bytes("complaints.md", data)
    assert stored_rows(fresh) == before  # not even the policy's documents row
    assert fresh.index.count(fresh.identity.index_name) == points
    monkeypatch.undo()
    assert fresh.ingestion.ingest_bytes("complaints.md", data).status == "published"


@pytest.mark.slow
def test_killed_ingestion_leaves_no_visible_version_and_next_run_recovers(tmp_path, stack):
    doc = OBLIQA / "AML_VER09.211223.txt"
    assert doc.exists(), doc
    settings = make_settings(tmp_path / "data")
    upgrade(settings.sqlalchemy_url)
    env = {**os.environ, "POLICYHUB_DATA_DIR": str(settings.data_dir), "POLICYHUB_ENV": "test",
           "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "services.cli", "ingest", str(doc), "--policy-id", "ADGM-AML",
           "--title", "AML Rules", "--version", "9", "--effective-date", "2021-12-23",
           "--classification", "public", "--owner", "FSRA"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = settings.data_dir / "policyhub.db"
    deadline = time.time() + 120
    pending = False
    while time.time() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(db) as conn:
                pending = conn.execute("select count(*) from document_versions where status='pending'").fetchone()[0] > 0
        except sqlite3.OperationalError:
            pending = False
        if pending:
            time.sleep(1.0)  # let it index part of the document
            break
        time.sleep(0.05)
    assert pending, "ingestion finished or failed before it could be killed: " + proc.stderr.read().decode()[-500:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    from services.runtime import build_runtime

    runtime = build_runtime(settings)
    try:
        with runtime.session_factory() as s:
            assert visible_versions(s, "confidential", runtime.policy) == {}
        assert versions(runtime, "ADGM-AML") == {"9": ("pending", 0)}
        runtime.close()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        runtime = build_runtime(settings)
        status, chunks = versions(runtime, "ADGM-AML")["9"]
        assert status == "active" and chunks > 0
        with runtime.session_factory() as s:
            (vid,) = visible_versions(s, "confidential", runtime.policy)
        assert runtime.index.count(runtime.identity.index_name, [vid]) == chunks
        assert runtime.index.count(runtime.identity.index_name) == chunks  # the killed run's points are gone
    finally:
        runtime.close()
