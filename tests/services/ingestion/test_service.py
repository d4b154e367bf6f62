"""Immutable versions, atomic supersession, crash recovery, bad input in a batch — on the real stack."""

from __future__ import annotations

import base64
import io
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docx
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


@pytest.fixture
def fresh_db(tmp_path, stack, db_url):
    """Like `fresh`, on SQLite and on PostgreSQL: for what two processes do to one database."""
    from services.runtime import build_runtime

    runtime = build_runtime(make_settings(tmp_path / "data", database_url=db_url))
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


def test_a_docx_over_the_xml_limit_is_refused_and_stores_nothing(fresh):
    from services.ingestion.parsers import _DOCX_XML_PARTS, _MAX_DOCX_XML_BYTES

    document = docx.Document()
    document.add_paragraph("1.1 The maximum loan-to-value ratio is 90%.")
    saved = io.BytesIO()
    document.save(saved)
    with zipfile.ZipFile(saved) as source:
        parts = {info.filename: source.read(info.filename) for info in source.infolist()}
    xml_bytes = sum(len(parts.get(name, b"")) for name in _DOCX_XML_PARTS)
    # A comment of random text (no zip bomb: it hardly compresses) takes the XML one byte over the limit.
    filler = _MAX_DOCX_XML_BYTES + 1 - xml_bytes - len(b"<!---->")
    padding = b"<!--" + base64.b64encode(random.Random(1).randbytes(filler))[:filler] + b"-->"
    parts["word/document.xml"] = parts["word/document.xml"].replace(b"</w:body>", padding + b"</w:body>", 1)
    padded = io.BytesIO()
    with zipfile.ZipFile(padded, "w", zipfile.ZIP_DEFLATED) as target:
        for name, content in parts.items():
            target.writestr(name, content)
    overrides = {"policy_id": "CRD-BIG", "title": "Big", "version": "1", "effective_date": "2026-01-01",
                 "classification": "public", "owner": "Credit"}
    before = stored_rows(fresh)
    with pytest.raises(DocumentRejected, match=r"^big\.docx: the DOCX text .* bytes of XML, over the limit of"):
        fresh.ingestion.ingest_bytes("big.docx", padded.getvalue(), overrides)
    assert stored_rows(fresh) == before
    assert fresh.index.count(fresh.identity.index_name) == 0


def test_html_declaring_utf8_with_a_bad_byte_is_refused_naming_where_and_stores_nothing(fresh):
    html = (b'<html><head><meta charset="utf-8"><meta name="policy_id" content="CRD-HTML"></head>\n'
            b"<body><p>1.1 The limit is \xe2\x82\xb950 lakh.</p>\n<p>1.2 Caf\xe9 rule.</p></body></html>")
    overrides = {"title": "Limits", "version": "1", "effective_date": "2026-01-01", "classification": "public",
                 "owner": "Credit"}
    before = stored_rows(fresh)
    offset = html.index(b"\xe9")
    with pytest.raises(DocumentRejected, match=rf"^limits\.html: not valid UTF-8: .* line 3 at byte offset {offset} "):
        fresh.ingestion.ingest_bytes("limits.html", html, overrides)
    assert stored_rows(fresh) == before
    assert fresh.index.count(fresh.identity.index_name) == 0
    # The same page with the byte mended is published: nothing else was wrong with it.
    mended = html.replace(b"\xe9", "é".encode())
    assert fresh.ingestion.ingest_bytes("limits.html", mended, overrides).status == "published"


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


class PausedIndex:
    """The live ingestion's index: it writes its points, then waits until the test lets it go on."""

    def __init__(self, index) -> None:  # noqa: ANN001
        self.index = index
        self.written = threading.Event()
        self.go_on = threading.Event()

    def upsert(self, name, points) -> None:  # noqa: ANN001
        self.index.upsert(name, points)
        self.written.set()
        assert self.go_on.wait(60), "the test never let the ingestion go on"

    def __getattr__(self, name):  # noqa: ANN001, ANN204
        return getattr(self.index, name)


def start_live_ingestion(runtime, data: bytes, **service_options):  # noqa: ANN001, ANN201
    """A second IngestionService on the same database and index, stopped mid-ingestion (pending)."""
    from services.ingestion.service import IngestionService

    paused = PausedIndex(runtime.index)
    live = IngestionService(runtime.session_factory, paused, runtime.embedder, runtime.policy,
                            runtime.identity.index_name, runtime.settings.max_upload_bytes, **service_options)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = live.ingest_bytes("complaints.md", data)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    assert paused.written.wait(60), outcome
    return paused, thread, outcome


def started_at(pid: int) -> int:
    """A process's start time, in clock ticks after boot: field 22 of /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def owner_of(pid: int, started: int | None = None):  # noqa: ANN201
    """The owner a process with this pid on this host records; by default, the one running now."""
    from services.ingestion.service import IngestOwner, this_process

    return IngestOwner(this_process().host, pid, f"start:{started_at(pid) if started is None else started}")


def live_owners():  # noqa: ANN201
    # This process (the API server's own threads), and another running process on this host.
    return [None, owner_of(os.getppid())]


@pytest.mark.parametrize("owner", live_owners(), ids=["this-process", "another-live-process"])
def test_recovery_leaves_a_live_ingestion_alone_and_it_publishes(fresh_db, owner):
    # `policyhub ingest` run while the server ingested used to delete the server's pending
    # version, whose ingestion then failed with "'NoneType' object has no attribute ...".
    data = (FIXTURE_CORPUS / "complaints.md").read_bytes()
    paused, thread, outcome = start_live_ingestion(fresh_db, data, **({"owner": owner} if owner else {}))
    try:
        assert fresh_db.ingestion.recover_pending() == 0
        assert versions(fresh_db, "TEST-CMP") == {"3.1": ("pending", 0)}
    finally:
        paused.go_on.set()
        thread.join(60)
    assert "error" not in outcome, outcome
    assert outcome["result"].status == "published"
    assert versions(fresh_db, "TEST-CMP") == {"3.1": ("active", 1)}
    assert fresh_db.index.count(fresh_db.identity.index_name) == 1


def age_every_heartbeat_past_stale(db) -> None:  # noqa: ANN001
    """Every pending row's heartbeat a minute older than STALE_PENDING_AFTER."""
    from sqlalchemy import update

    from services.db.models import DocumentVersion
    from services.ingestion.service import STALE_PENDING_AFTER

    with db.session_factory.begin() as s:
        s.execute(update(DocumentVersion).values(
            heartbeat_at=datetime.now(UTC) - STALE_PENDING_AFTER - timedelta(minutes=1)))


def test_recovery_leaves_a_live_ingestion_on_this_host_alone_however_old_its_heartbeat(fresh_db):
    # Its process is seen running (the same pid and start time): a stalled heartbeat (a suspended
    # process, a database that refused the beats) used to be enough to discard its version.
    data = (FIXTURE_CORPUS / "complaints.md").read_bytes()
    paused, thread, outcome = start_live_ingestion(fresh_db, data, owner=owner_of(os.getppid()))
    try:
        age_every_heartbeat_past_stale(fresh_db)
        assert fresh_db.ingestion.recover_pending() == 0
    finally:
        paused.go_on.set()
        thread.join(60)
    assert "error" not in outcome, outcome
    assert outcome["result"].status == "published"


def test_an_ingestion_whose_pending_row_was_discarded_fails_naming_why_and_stores_nothing(fresh_db):
    from services.ingestion.service import IngestOwner

    data = (FIXTURE_CORPUS / "complaints.md").read_bytes()
    before = stored_rows(fresh_db)
    elsewhere = IngestOwner("bank-app-2/pidns:4026531836/boot:0f7d", 4242, "start:1000")
    paused, thread, outcome = start_live_ingestion(fresh_db, data, owner=elsewhere)
    try:
        # On another host, whose processes cannot be seen, a heartbeat this old is taken for a crashed run.
        age_every_heartbeat_past_stale(fresh_db)
        assert fresh_db.ingestion.recover_pending() == 1
    finally:
        paused.go_on.set()
        thread.join(60)
    assert isinstance(outcome.get("error"), DocumentConflict), outcome
    assert "TEST-CMP version 3.1 was discarded while it was being indexed" in outcome["error"].detail
    assert "ingest it again" in outcome["error"].detail
    assert stored_rows(fresh_db) == before
    assert fresh_db.index.count(fresh_db.identity.index_name) == 0  # the points written after recovery are gone
    assert fresh_db.ingestion.ingest_bytes("complaints.md", data).status == "published"


def reserve_as(runtime, owner) -> None:  # noqa: ANN001
    """Leave complaints.md pending under another owner, as a process killed mid-ingestion would."""
    from services.ingestion.service import IngestionService

    crashed = IngestionService(runtime.session_factory, runtime.index, runtime.embedder, runtime.policy,
                               runtime.identity.index_name, runtime.settings.max_upload_bytes, owner=owner)
    data = (FIXTURE_CORPUS / "complaints.md").read_bytes()
    crashed._reserve_version(crashed.prepare("complaints.md", data, {}))
    assert versions(runtime, "TEST-CMP") == {"3.1": ("pending", 0)}


def test_recovery_discards_a_pending_version_whose_process_has_exited(fresh_db):
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    reserve_as(fresh_db, owner_of(int(exited.stdout), started=1))
    assert fresh_db.ingestion.recover_pending() == 1
    assert versions(fresh_db, "TEST-CMP") == {}
    data = (FIXTURE_CORPUS / "complaints.md").read_bytes()
    assert fresh_db.ingestion.ingest_bytes("complaints.md", data).status == "published"


def test_recovery_discards_a_pending_version_whose_pid_an_unrelated_process_now_has(fresh_db):
    # The pid runs, but it is another process (it started at another time): the owner is gone.
    # Recovery used to wait for the heartbeat to go stale (15 minutes).
    unrelated = subprocess.Popen(["sleep", "60"])
    try:
        reserve_as(fresh_db, owner_of(unrelated.pid, started=started_at(unrelated.pid) - 1))
        assert fresh_db.ingestion.recover_pending() == 1
    finally:
        unrelated.kill()
        unrelated.wait()
    assert versions(fresh_db, "TEST-CMP") == {}


def test_the_heartbeat_of_a_live_ingestion_moves(fresh, monkeypatch):
    from sqlalchemy import select

    from services.db.models import DocumentVersion
    from services.ingestion import service

    monkeypatch.setattr(service, "HEARTBEAT_SECONDS", 0.05)

    def heartbeat():  # noqa: ANN202
        with fresh.session_factory() as s:
            return s.scalars(select(DocumentVersion.heartbeat_at)).one()

    paused, thread, outcome = start_live_ingestion(fresh, (FIXTURE_CORPUS / "complaints.md").read_bytes())
    try:
        first = heartbeat()
        deadline = time.time() + 10
        while heartbeat() == first and time.time() < deadline:
            time.sleep(0.05)
        assert heartbeat() > first
    finally:
        paused.go_on.set()
        thread.join(60)
    assert outcome["result"].status == "published"


HOST = "bank-app-1/pidns:4026531836"
BOOT = "/boot:db7d855d-67ae-4383-bd49-36d9577e1fe1"


@pytest.mark.parametrize(("case", "gone"), [
    ("this process", False),
    ("this process, heartbeat stale", False),
    ("another running process on this host", False),
    ("another running process on this host, heartbeat stale", False),
    ("an exited process on this host", True),
    ("a pid now held by an unrelated process", True),
    ("an earlier process that had this pid", True),
    ("a running pid whose start time cannot be read", False),
    ("a running pid whose start time cannot be read, heartbeat stale", True),
    ("another host, heartbeat recent", False),
    ("another host, heartbeat stale", True),
    ("a host of the same name and pid namespace, another boot", False),
    ("recorded without a start time: another running process on this host", False),
    ("recorded without a start time: an exited process on this host", True),
    ("recorded without a start time: an earlier process that had this pid", True),
    ("recorded without a start time: running, heartbeat stale", True),
    ("recorded without a start time: another host, heartbeat recent", False),
    ("no owner (pending before migration 0004)", True),
])
def test_which_pending_versions_recovery_may_discard(case, gone):
    from services.ingestion.service import STALE_PENDING_AFTER, IngestOwner, owner_is_gone

    me = IngestOwner(HOST + BOOT, 4242, "start:1000")
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    recent, stale = now - timedelta(seconds=40), now - STALE_PENDING_AFTER - timedelta(seconds=1)
    started = {4242: 1000, 77: 500, 79: 900}  # pid 80 runs, but as another user under hidepid

    def here(pid: int, start: int = 500) -> IngestOwner:
        return IngestOwner(me.host, pid, f"start:{start}")

    def unstamped(pid: int, host: str = HOST) -> IngestOwner:  # a row written before start times were recorded
        return IngestOwner(host, pid, "b" * 32)

    elsewhere = IngestOwner("bank-app-2/pidns:4026531836" + BOOT, 77, "start:500")
    owner, heartbeat = {
        "this process": (me, recent),
        "this process, heartbeat stale": (me, stale),  # this process knows it is at work
        "another running process on this host": (here(77), recent),
        "another running process on this host, heartbeat stale": (here(77), stale),
        "an exited process on this host": (here(78), recent),
        "a pid now held by an unrelated process": (here(79), recent),
        "an earlier process that had this pid": (here(me.pid, 400), recent),
        "a running pid whose start time cannot be read": (here(80), recent),
        "a running pid whose start time cannot be read, heartbeat stale": (here(80), stale),
        "another host, heartbeat recent": (elsewhere, recent),
        "another host, heartbeat stale": (elsewhere, stale),
        "a host of the same name and pid namespace, another boot":
            (IngestOwner(HOST + "/boot:5e8b1c0a-0000-4000-8000-000000000000", 78, "start:500"), recent),
        "recorded without a start time: another running process on this host": (unstamped(77), recent),
        "recorded without a start time: an exited process on this host": (unstamped(78), recent),
        "recorded without a start time: an earlier process that had this pid": (unstamped(me.pid), recent),
        "recorded without a start time: running, heartbeat stale": (unstamped(77), stale),
        "recorded without a start time: another host, heartbeat recent":
            (unstamped(78, "bank-app-2/pidns:4026531836"), recent),
        "no owner (pending before migration 0004)": (None, None),
    }[case]
    # SQLite hands the heartbeat back without its zone: both forms must compare.
    for stored in (heartbeat, heartbeat and heartbeat.replace(tzinfo=None)):
        assert owner_is_gone(owner, stored, now, me, pid_running=lambda pid: pid in (4242, 77, 79, 80),
                             start_time=started.get) is gone


def test_this_process_records_its_start_time_and_boot():
    from services.ingestion.service import this_process

    me = this_process()
    assert me.start_time == started_at(os.getpid())
    assert me.host.endswith("/boot:" + Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    assert len(me.token) <= 32 and len(me.host) <= 300  # the columns of migration 0004
