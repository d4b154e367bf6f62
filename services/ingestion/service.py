"""Ingestion: a policy document becomes an immutable, version-locked, clause-aligned index entry.

Visibility protocol (why a killed process never leaves a half-visible version):
1. a `pending` version row is committed first, so a crash leaves a marker;
2. points are written to the vector index tagged with that version id — queries only
   ever filter on versions whose row is `active`/`superseded`, so these are invisible;
3. one transaction inserts the clause and chunk rows, flips the version to `active`,
   marks the previous active version `superseded` and appends the audit events.
`recover_pending()` discards a pending version left by a crash (its points first). Another
process may be indexing a pending version right now (the API server while `policyhub ingest`
runs), so each pending row names its process and carries a heartbeat, and only versions
whose process is gone are discarded.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from governance.audit import AuditEntry, append
from governance.policy import GovernancePolicy
from services.db.models import Chunk, Clause as ClauseRow, Document, DocumentVersion
from services.db.session import transaction
from services.embedding.sentence import Embedder
from services.errors import DocumentConflict, DocumentRejected, PolicyHubError
from services.ingestion.chunker import ClauseChunk, chunk_clauses
from services.ingestion.metadata import DocumentMetadata, load_sidecar, resolve_metadata
from services.ingestion.parsers import SUPPORTED_SUFFIXES, parse_document
from services.ingestion.segmenter import segment
from services.users.service import Principal
from services.vectors.base import IndexPoint, VectorIndex
from services.vectors.sparse import encode_document

log = structlog.get_logger()

UPSERT_BATCH = 256
# Deterministic point ids: the same version and chunk ordinal always get the same id.
POINT_NAMESPACE = uuid.UUID("6f1c7a52-8d0b-4b0e-9a57-0d1f5c3e2a10")
# A live ingestion refreshes its pending row's heartbeat this often. A row whose heartbeat is
# older than STALE_PENDING_AFTER is taken as left by a crash when its process cannot be checked
# (another host); the gap is wide so a slow database or a busy machine never trips it.
HEARTBEAT_SECONDS = 30.0
STALE_PENDING_AFTER = timedelta(minutes=15)


# An owner's token records its process's start time, so that a pid taken over by an unrelated
# process is told from the owner. Tokens written before start times were recorded are random.
START_TOKEN = re.compile(r"start:(\d+)")


@dataclass(frozen=True)
class IngestOwner:
    """The process indexing a pending version."""

    host: str  # the hostname, the pid namespace and the boot: where its pid means one process
    pid: int
    token: str  # tells this process from any other that had, or will have, its pid

    @property
    def start_time(self) -> int | None:
        """When its process started (clock ticks after boot); None for owners recorded without it."""
        match = START_TOKEN.fullmatch(self.token)
        return int(match.group(1)) if match else None


def this_process() -> IngestOwner:
    pid = os.getpid()
    return IngestOwner(_host_key(), pid, _process_token(pid))


@functools.cache
def _process_token(pid: int) -> str:
    """Its start time where /proc can tell its processes apart, else random (keyed by pid, so a forked
    child gets its own)."""
    started = _start_time(pid) if _proc_shows_own_pids(pid) else None
    return f"start:{started}" if started is not None else uuid.uuid4().hex


def _proc_shows_own_pids(pid: int) -> bool:
    """Whether /proc numbers processes as this process sees pids (its pid namespace), and the boot is known."""
    try:
        return os.readlink("/proc/self") == str(pid) and _boot_id() is not None
    except OSError:
        return False


def _host_key() -> str:
    """The hostname, the pid namespace (containers sharing a hostname do not share pids) and the
    boot (a start time counts from it; machines cloned with one hostname differ in it)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return socket.gethostname()
    key = f"{socket.gethostname()}/pidns:{namespace}"
    boot = _boot_id()
    return f"{key}/boot:{boot}" if boot else key


def _legacy_host_key(host: str) -> str:
    """The host key as owners recorded without a start time wrote it."""
    return host.partition("/boot:")[0]


@functools.cache
def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """The start time of the process with this pid (field 22 of /proc/<pid>/stat); None when there is
    no such process or its entry cannot be read (another user's process under hidepid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces and ")".
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[22 - 3])


def _pid_running(pid: int) -> bool:
    if os.name != "posix":
        return True  # no safe probe (os.kill would end the process): the heartbeat decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # e.g. another user's process: it exists
    return True


def owner_is_gone(owner: IngestOwner | None, heartbeat_at: datetime | None, now: datetime, me: IngestOwner,
                  pid_running: Callable[[int], bool] = _pid_running,
                  start_time: Callable[[int], int | None] = _start_time) -> bool:
    """Whether a pending version's process has stopped, so that recovery may discard it."""
    if owner is None or heartbeat_at is None:
        return True  # reserved before owners were recorded (migration 0004): only a crash leaves those
    if owner == me:
        return False  # another thread of this very process is indexing it
    if heartbeat_at.tzinfo is None:
        heartbeat_at = heartbeat_at.replace(tzinfo=UTC)  # SQLite returns what it stored, without the zone
    stale = now - heartbeat_at > STALE_PENDING_AFTER
    if owner.start_time is None:
        return _legacy_owner_is_gone(owner, stale, me, pid_running)
    if owner.host != me.host or me.start_time is None:
        return stale  # its process cannot be checked from here
    running_since = start_time(owner.pid)
    if running_since is not None:
        # Its own process, however long its heartbeat has been silent; or another that took its pid.
        return running_since != owner.start_time
    if not pid_running(owner.pid):
        return True
    return stale  # a process has the pid but its start time cannot be read: only the heartbeat tells


def _legacy_owner_is_gone(owner: IngestOwner, stale: bool, me: IngestOwner,
                          pid_running: Callable[[int], bool]) -> bool:
    """The rule for owners recorded without a start time: a process with its pid may be another one."""
    if stale:
        return True  # also covers a dead process whose pid was reused
    if owner.host != _legacy_host_key(me.host):
        return False  # its process cannot be checked from here; its heartbeat is recent
    if owner.pid == me.pid:
        return True  # an earlier process that had this pid
    return not pid_running(owner.pid)


@dataclass
class IngestResult:
    source: str
    status: str  # published | unchanged | rejected
    policy_id: str | None = None
    version: str | None = None
    clauses: int = 0
    chunks: int = 0
    error: str | None = None
    seconds: float = 0.0


@dataclass
class IngestSummary:
    results: list[IngestResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def published(self) -> list[IngestResult]:
        return [r for r in self.results if r.status == "published"]

    @property
    def rejected(self) -> list[IngestResult]:
        return [r for r in self.results if r.status == "rejected"]

    @property
    def clauses(self) -> int:
        return sum(r.clauses for r in self.published)

    @property
    def chunks(self) -> int:
        return sum(r.chunks for r in self.published)


@dataclass(frozen=True)
class PreparedDocument:
    """Everything computed from the file before anything is stored."""

    metadata: DocumentMetadata
    content_sha256: str
    source: str
    chunks: list[ClauseChunk]


def iter_document_paths(paths: Iterable[Path]) -> list[Path]:
    """Files named directly, and supported files inside folders (sidecar metadata files excluded)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES and ".meta." not in p.name
            )
        else:
            found.append(path)
    return found


class IngestionService:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        index: VectorIndex,
        embedder: Embedder,
        policy: GovernancePolicy,
        index_name: str,
        max_bytes: int,
        owner: IngestOwner | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.index = index
        self.embedder = embedder
        self.policy = policy
        self.index_name = index_name
        self.max_bytes = max_bytes
        self._owner = owner  # None: this process, looked up when a version is reserved

    @property
    def owner(self) -> IngestOwner:
        return self._owner or this_process()

    # -- preparation (pure of storage) -------------------------------------------------

    def prepare(self, filename: str, data: bytes, overrides: dict, sidecar: dict | None = None) -> PreparedDocument:
        parsed = parse_document(filename, data, max_bytes=self.max_bytes)
        metadata = resolve_metadata(filename, parsed.metadata, sidecar, overrides)
        if metadata.classification not in self.policy.classifications:
            raise DocumentRejected(f"{filename}: classification {metadata.classification!r} is not in the policy file")
        clauses = segment(parsed.text)
        if not clauses:
            raise DocumentRejected(f"{filename}: no text found to index")
        chunks = chunk_clauses(clauses, self.embedder.count_tokens)
        return PreparedDocument(metadata, hashlib.sha256(data).hexdigest(), filename, chunks)

    # -- storage ----------------------------------------------------------------------

    def ingest_bytes(self, filename: str, data: bytes, overrides: dict | None = None,
                     sidecar: dict | None = None, actor: Principal | None = None,
                     request_id: str | None = None) -> IngestResult:
        """Ingest one document; a rejected document stores nothing and raises."""
        started = time.perf_counter()
        prepared = self.prepare(filename, data, overrides or {}, sidecar)
        meta = prepared.metadata
        version_id = self._reserve_version(prepared)
        if version_id is None:
            return IngestResult(filename, "unchanged", meta.policy_id, meta.version,
                                seconds=time.perf_counter() - started)
        try:
            with _Heartbeat(self.session_factory, version_id):
                rows = self._index_chunks(version_id, prepared)
            self._publish(version_id, prepared, rows, actor, request_id or uuid.uuid4().hex)
        except BaseException:
            self._discard(version_id)
            raise
        n_clauses = sum(len(c.clauses) for c in prepared.chunks)
        log.info("ingest.published", policy_id=meta.policy_id, version=meta.version,
                 clauses=n_clauses, chunks=len(prepared.chunks))
        return IngestResult(filename, "published", meta.policy_id, meta.version, n_clauses,
                            len(prepared.chunks), seconds=time.perf_counter() - started)

    def ingest_paths(self, paths: Sequence[Path], overrides: dict | None = None,
                     actor: Principal | None = None,
                     on_progress: Callable[[IngestResult], None] | None = None) -> IngestSummary:
        """Ingest files and folders; each bad file is reported and skipped, the rest still land."""
        started = time.perf_counter()
        self.recover_pending()
        summary = IngestSummary()
        for path in iter_document_paths(paths):
            try:
                data = _read_bounded(path, self.max_bytes)
                result = self.ingest_bytes(path.name, data, overrides, load_sidecar(path), actor)
            except PolicyHubError as exc:
                result = IngestResult(str(path), "rejected", error=exc.detail)
                log.warning("ingest.rejected", source=str(path), reason=exc.detail)
            summary.results.append(result)
            if on_progress:
                on_progress(result)
        summary.seconds = time.perf_counter() - started
        return summary

    def _reserve_version(self, prepared: PreparedDocument) -> int | None:
        """Commit a pending row (the crash marker); None when this exact content is already stored."""
        meta = prepared.metadata
        with transaction(self.session_factory) as session:
            existing = session.scalars(select(DocumentVersion).where(
                DocumentVersion.policy_id == meta.policy_id, DocumentVersion.version == meta.version)).first()
            if existing is not None:
                if existing.content_sha256 == prepared.content_sha256 and existing.status != "pending":
                    return None
                if existing.status == "pending":
                    raise DocumentConflict(
                        f"{prepared.source}: {meta.policy_id} version {meta.version} is being ingested by another process")
                raise DocumentConflict(
                    f"{prepared.source}: {meta.policy_id} version {meta.version} already exists with different "
                    "content; versions are immutable — publish a new version number")
            if session.get(Document, meta.policy_id) is None:
                session.add(Document(policy_id=meta.policy_id))
                session.flush()
            row = DocumentVersion(
                policy_id=meta.policy_id, version=meta.version, title=meta.title, owner=meta.owner,
                classification=meta.classification, effective_date=meta.effective_date,
                content_sha256=prepared.content_sha256, source_name=prepared.source,
                index_name=self.index_name, status="pending", clause_count=0, chunk_count=0,
                ingest_host=self.owner.host, ingest_pid=self.owner.pid, ingest_token=self.owner.token,
                heartbeat_at=_now(),
            )
            session.add(row)
            session.flush()
            return row.id

    def _index_chunks(self, version_id: int, prepared: PreparedDocument) -> list[tuple[str, ClauseChunk]]:
        """Embed every clause window of the document in one batch, then upsert the chunk points."""
        meta = prepared.metadata
        ids = [str(uuid.uuid5(POINT_NAMESPACE, f"{version_id}:{ordinal}")) for ordinal in range(len(prepared.chunks))]
        base = {"version_id": version_id, "policy_id": meta.policy_id, "version": meta.version,
                "classification": meta.classification, "effective_date": meta.effective_date.isoformat(),
                "title": meta.title}
        points = build_points(self.embedder, base,
                              [PointSource(i, c.text, c.heading_path, c.clauses) for i, c in zip(ids, prepared.chunks)])
        for start in range(0, len(points), UPSERT_BATCH):
            self.index.upsert(self.index_name, points[start : start + UPSERT_BATCH])
        return list(zip(ids, prepared.chunks))

    def _publish(self, version_id: int, prepared: PreparedDocument, rows: list[tuple[str, ClauseChunk]],
                 actor: Principal | None, request_id: str) -> None:
        meta = prepared.metadata
        with transaction(self.session_factory) as session:
            session.connection(execution_options={"immediate": True})
            version = session.get(DocumentVersion, version_id, with_for_update=True)
            if version is None or version.status != "pending":
                raise DocumentConflict(
                    f"{prepared.source}: {meta.policy_id} version {meta.version} was discarded while it was being "
                    "indexed (recovery in another process took it for a crashed run); nothing was published — "
                    "ingest it again")
            ordinal = 0
            for chunk_ordinal, (point_id, chunk) in enumerate(rows):
                session.add(Chunk(id=point_id, version_id=version_id, ordinal=chunk_ordinal,
                                  token_count=chunk.token_count, clause_numbers=list(chunk.clause_numbers),
                                  heading_path=list(chunk.heading_path), text=chunk.text))
                for clause in chunk.clauses:
                    session.add(ClauseRow(version_id=version_id, ordinal=ordinal, number=clause.number,
                                          heading_path=list(clause.heading_path), text=clause.text,
                                          chunk_id=point_id))
                    ordinal += 1
            version.clause_count = ordinal
            version.chunk_count = len(rows)
            superseded = _apply_supersession(session, version)
            now = _now()
            version.published_at = now
            actor_name, actor_role = (actor.name, actor.role) if actor else ("cli", "admin")
            append(session, AuditEntry(
                request_id=request_id, event="document.published", actor=actor_name, actor_role=actor_role,
                channel="ingest", policy_ids=(meta.policy_id,),
                payload={"policy_id": meta.policy_id, "version": meta.version, "title": meta.title,
                         "classification": meta.classification, "effective_date": meta.effective_date.isoformat(),
                         "content_sha256": prepared.content_sha256, "source": prepared.source,
                         "index": self.index_name, "clauses": ordinal, "chunks": len(rows),
                         "status": version.status}))
            for old in superseded:
                append(session, AuditEntry(
                    request_id=request_id, event="document.superseded", actor=actor_name, actor_role=actor_role,
                    channel="ingest", policy_ids=(meta.policy_id,),
                    payload={"policy_id": old.policy_id, "version": old.version, "superseded_by": meta.version}))

    def _discard(self, version_id: int) -> None:
        """Remove a pending version: its points first, then its marker row."""
        try:
            self.index.delete_versions(self.index_name, [version_id])
        except PolicyHubError:
            log.error("ingest.discard_failed", version_id=version_id)
            return  # the pending marker stays, so recover_pending() retries later
        with transaction(self.session_factory) as session:
            row = session.get(DocumentVersion, version_id)
            if row is not None and row.status == "pending":
                session.query(ClauseRow).filter(ClauseRow.version_id == version_id).delete()
                session.query(Chunk).filter(Chunk.version_id == version_id).delete()
                _delete_pending_row(session, row)

    def recover_pending(self) -> int:
        """Discard versions a killed process left pending; returns how many.

        A version another live process is still indexing is left alone.
        """
        now, me = _now(), this_process()
        with transaction(self.session_factory) as session:
            pending = []
            for v in session.scalars(select(DocumentVersion).where(DocumentVersion.status == "pending")):
                owner = IngestOwner(v.ingest_host, v.ingest_pid, v.ingest_token) if v.ingest_host else None
                if owner_is_gone(owner, v.heartbeat_at, now, me):
                    pending.append((v.id, v.index_name))
                else:
                    log.info("ingest.pending_in_progress", version_id=v.id, host=v.ingest_host, pid=v.ingest_pid)
        for version_id, index_name in pending:
            if self.index.collection_exists(index_name):
                self.index.delete_versions(index_name, [version_id])
            with transaction(self.session_factory) as session:
                # Locked, so a version published meanwhile is seen as published and kept.
                session.connection(execution_options={"immediate": True})
                row = session.get(DocumentVersion, version_id, with_for_update=True)
                if row is not None and row.status == "pending":
                    _delete_pending_row(session, row)
            log.warning("ingest.pending_discarded", version_id=version_id)
        return len(pending)


class _Heartbeat:
    """Refreshes a pending version's heartbeat while this process indexes it, so recovery
    elsewhere can tell a long ingestion from a crashed one."""

    def __init__(self, session_factory: sessionmaker[Session], version_id: int) -> None:
        self.session_factory = session_factory
        self.version_id = version_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ingest-heartbeat-{version_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                with transaction(self.session_factory) as session:
                    session.execute(update(DocumentVersion).where(
                        DocumentVersion.id == self.version_id, DocumentVersion.status == "pending")
                        .values(heartbeat_at=_now()))
            except Exception:  # noqa: BLE001 - a missed beat is retried; publishing checks the row itself
                log.warning("ingest.heartbeat_failed", version_id=self.version_id, exc_info=True)


def _delete_pending_row(session: Session, row: DocumentVersion) -> None:
    """Delete a pending version, and its policy's row if the reservation created it."""
    session.delete(row)
    session.flush()
    others = session.scalars(select(DocumentVersion.id).where(DocumentVersion.policy_id == row.policy_id)).first()
    if others is None:
        document = session.get(Document, row.policy_id)
        if document is not None:
            session.delete(document)


def _apply_supersession(session: Session, version: DocumentVersion) -> list[DocumentVersion]:
    """The version with the latest effective date is active; an older one arrives already superseded."""
    current = session.scalars(select(DocumentVersion).where(
        DocumentVersion.policy_id == version.policy_id, DocumentVersion.status == "active",
        DocumentVersion.id != version.id)).all()
    newest = max(current, key=lambda v: (v.effective_date, v.id), default=None)
    if newest is not None and newest.effective_date > version.effective_date:
        version.status = "superseded"
        version.superseded_at = _now()
        return []
    version.status = "active"
    for old in current:
        old.status = "superseded"
        old.superseded_at = _now()
    return list(current)


SUB_ITEM = re.compile(r"^(?P<parent>.+)\.\([0-9A-Za-z]+\)$")


@dataclass(frozen=True)
class PointSource:
    """One chunk to index: its point id, text, heading path and clauses (number, text, heading_path)."""

    id: str
    text: str
    heading_path: Sequence[str]
    clauses: Sequence


def build_points(embedder: Embedder, base_payload: dict, sources: Sequence[PointSource]) -> list[IndexPoint]:
    """The index points of one version: every clause window embedded in one batch, one point per chunk.

    Used by ingestion and by re-embedding on model activation, so both write the same payload.
    """
    by_number = {c.number: c.text for source in sources for c in source.clauses}
    window_texts: list[str] = []
    layout: list[list[int]] = []  # per chunk: rows (windows) per clause
    for source in sources:
        per_clause = []
        for clause in source.clauses:
            pieces = embedder.windows(_embedding_text(clause, by_number))
            window_texts += pieces
            per_clause.append(len(pieces))
        layout.append(per_clause)
    vectors = embedder.embed(window_texts)
    points, cursor = [], 0
    for ordinal, (source, per_clause) in enumerate(zip(sources, layout, strict=True)):
        n_rows = sum(per_clause)
        dense = vectors[cursor : cursor + n_rows]
        cursor += n_rows
        payload = {
            **base_payload,
            "chunk_ordinal": ordinal,
            "heading_path": list(source.heading_path),
            "clauses": [{"number": c.number, "text": c.text, "heading_path": list(c.heading_path)}
                        for c in source.clauses],
            "row_clause": [i for i, count in enumerate(per_clause) for _ in range(count)],
        }
        points.append(IndexPoint(id=source.id, dense=dense.tolist(), sparse=encode_document(source.text),
                                 payload=payload))
    return points


def _embedding_text(clause, by_number: dict[str, str] | None = None) -> str:  # noqa: ANN001
    """The text a clause is embedded with: its own, plus the context that gives it a topic.

    The innermost heading gives a bare clause its subject ("4.2 The cap is 80%" under
    "Loan-to-value limits"); a sub-item "(a) at any branch" gets its parent's lead-in
    ("4.1 Customers may raise a complaint through:").
    """
    parts = []
    context = clause.heading_path[-1] if clause.heading_path else ""
    if context and context not in clause.text:
        parts.append(context)
    match = SUB_ITEM.match(clause.number)
    while match:  # nested sub-items: (i) under (a) under 4.1
        parent = (by_number or {}).get(match.group("parent"))
        if parent:
            parts.append(parent[:300])
            break
        match = SUB_ITEM.match(match.group("parent"))
    parts.append(clause.text)
    return "\n".join(parts)


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DocumentRejected(f"{path}: cannot read: {exc.strerror}") from exc
    if size > max_bytes:
        raise DocumentRejected(f"{path.name}: file is {size:,} bytes, over the {max_bytes:,}-byte limit")
    return path.read_bytes()


def _now():  # noqa: ANN202
    from governance.records.base import utcnow

    return utcnow()


def effective_on(versions: Sequence[DocumentVersion], as_of: date) -> DocumentVersion | None:
    """The version of one policy in effect on a date: the latest effective date not after it."""
    eligible = [v for v in versions if v.status in ("active", "superseded") and v.effective_date <= as_of]
    return max(eligible, key=lambda v: (v.effective_date, v.id), default=None)
