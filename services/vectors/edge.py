"""VectorIndex on Qdrant Edge (qdrant-edge-py 0.9.0): an embedded on-disk shard, no server.

One shard directory per collection under ``shard_dir/<name>``. Shards are opened
on first use and kept open; ``close()`` releases them.

Concurrency, as measured on 0.9.0: one EdgeShard serves queries from several
threads at once, and updates may run while queries do. Closing a shard under a
running query makes that query fail ("Shard is not initialized"), and only one
EdgeShard may be open per directory. Hence two locks:

* ``_lifecycle`` (readers-writer): every data call holds it shared; opening,
  creating, dropping and closing shards hold it exclusive, so no query ever
  sees a shard vanish;
* ``_writes`` (mutex): upserts, deletes and optimisation are serialised, so a
  flush never races another writer's half-applied batch.

Edge has no background optimiser: new points land in a plain (brute-force,
float32) segment, and only ``optimize()`` merges segments, builds HNSW and the
int8 quantized copies that make search fast at scale. EdgeShard methods hold
the GIL while they run (measured on 0.9.0: a 24 s optimize() froze every other
Python thread for 24 s; queries also run GIL-held, so concurrent readers are
safe but serialised). So ``upsert`` never optimises on its own; ingestion calls
``optimize(name)`` once after publishing a batch, from a worker or CLI process
where a pause of seconds to minutes (about 5 min for 100k chunks on 2 cores)
does not stall request handling.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import qdrant_edge as edge
import structlog

from services.errors import IndexUnavailable, NotFound, ReembeddingRequired
from services.vectors.base import (
    DENSE_VECTOR,
    SPARSE_VECTOR,
    VERSION_FIELD,
    IndexPoint,
    SearchHit,
    SparseVector,
    matches_nothing,
    validate_collection_name,
    validate_points,
)

log = structlog.get_logger()

_CONFIG_FILE = "edge_config.json"  # written by EdgeShard.create; marks a directory as a shard
_UPSERT_BATCH = 512

# HNSW for the multivector field: Qdrant's defaults (m=16, ef_construct=100),
# recall@10 0.96 at 100k chunks in services.vectors.bench. full_scan_threshold
# (KB of vectors, ~3,300 chunks of 4 x 384 floats) decides when a filtered
# search scans the matching points instead of walking the graph: a question
# scoped to a few policy versions matches a few thousand chunks, which a scan
# of int8 vectors does in about a millisecond, with exact recall.
_HNSW = edge.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=20_000)
# Segments smaller than this (KB of vectors) stay plain: a scan of them costs
# about a millisecond, less than a graph build.
_INDEXING_THRESHOLD_KB = 20_000
# version_id only answers "IN (versions in force)" lookups. enable_hnsw=False:
# no extra per-version graph links, which Qdrant would otherwise build for every
# version with more chunks than full_scan_threshold, lengthening optimize() for
# filters we never run on one version alone.
_VERSION_INDEX = edge.IntegerIndexParams(lookup=True, range=False, enable_hnsw=False)
# int8 copies of the rows, kept in RAM, are what the graph walk scores (original
# float32 rows rescore the top hits): 4x less memory traffic per query and a
# ~35% faster HNSW build than float32 in our measurements; recall is reported
# by services.vectors.bench.
_QUANTIZATION = edge.ScalarQuantizationConfig(edge.ScalarType.Int8, quantile=0.99, memory=edge.Memory.Pinned)


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers so it cannot starve."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _shard_config(dim: int) -> edge.EdgeConfig:
    return edge.EdgeConfig(
        vectors={
            DENSE_VECTOR: edge.EdgeVectorParams(
                size=dim,
                distance=edge.Distance.Cosine,
                multivector_config=edge.MultiVectorConfig(edge.MultiVectorComparator.MaxSim),
            )
        },
        sparse_vectors={SPARSE_VECTOR: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)},
        hnsw_config=_HNSW,
        quantization_config=_QUANTIZATION,
        optimizers=edge.EdgeOptimizersConfig(indexing_threshold=_INDEXING_THRESHOLD_KB),
        # Payload is read for every hit (version, clause, classification);
        # keep it cached in RAM rather than read cold from disk per query.
        payload_memory=edge.Memory.Cached,
    )


def _version_filter(version_ids: Sequence[int] | None) -> edge.Filter | None:
    if version_ids is None:
        return None
    return edge.Filter(must=[edge.FieldCondition(VERSION_FIELD, match=edge.MatchAny([int(v) for v in version_ids]))])


def _to_edge_point(point: IndexPoint) -> edge.Point:
    return edge.Point(
        uuid.UUID(point.id),
        {
            DENSE_VECTOR: [list(map(float, row)) for row in point.dense],
            SPARSE_VECTOR: edge.SparseVector(list(point.sparse.indices), list(map(float, point.sparse.values))),
        },
        dict(point.payload),
    )


def _dense_rows(vector: object) -> list[list[float]] | None:
    if isinstance(vector, dict):
        rows = vector.get(DENSE_VECTOR)
        return [list(row) for row in rows] if rows is not None else None
    return None


def _to_hit(point: edge.ScoredPoint | edge.Record, score: float) -> SearchHit:
    return SearchHit(
        id=str(point.id),
        score=float(score),
        payload=dict(point.payload or {}),
        dense=_dense_rows(point.vector),
    )


class EdgeVectorIndex:
    """Collections as Qdrant Edge shards under one directory."""

    def __init__(self, shard_dir: Path) -> None:
        # Cheap on purpose: shards open on first use (the lifespan may warm them).
        self._root = Path(shard_dir)
        self._shards: dict[str, edge.EdgeShard] = {}
        self._lifecycle = _ReadWriteLock()
        self._writes = threading.Lock()
        self._open_lock = threading.Lock()

    # -- collections -------------------------------------------------------

    def ensure_collection(self, name: str, dim: int) -> None:
        path = self._path(name)
        with self._lifecycle.exclusive():
            if (path / _CONFIG_FILE).exists():
                shard = self._open_locked(name)
                existing = shard_dense_dim(path)
                if existing is not None and existing != dim:
                    raise ReembeddingRequired(
                        f"collection {name!r} holds {existing}-dim vectors, the embedder makes {dim}: "
                        "re-embed into a new collection"
                    )
                self._ensure_version_index(shard)
                return
            if path.exists() and any(path.iterdir()):
                # Not ours to delete: could be a half-created shard or someone's data. The path is
                # for the operator's log; the 503 reaches clients, who must not learn the layout.
                log.error("vectors.not_a_shard", collection=name, path=str(path), missing=_CONFIG_FILE)
                raise IndexUnavailable(f"vector index unavailable: collection {name!r} is not a Qdrant Edge shard")
            path.parent.mkdir(parents=True, exist_ok=True)
            shard = edge.EdgeShard.create(str(path), _shard_config(dim))
            self._ensure_version_index(shard)
            shard.flush()
            self._shards[name] = shard

    def collection_exists(self, name: str) -> bool:
        return (self._path(name) / _CONFIG_FILE).exists()

    def list_collections(self) -> list[str]:
        if not self._root.is_dir():
            return []
        return sorted(p.name for p in self._root.iterdir() if (p / _CONFIG_FILE).exists())

    def drop_collection(self, name: str) -> None:
        path = self._path(name)
        with self._lifecycle.exclusive():
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            if path.exists():
                shutil.rmtree(path)

    def close(self) -> None:
        with self._lifecycle.exclusive():
            shards, self._shards = self._shards, {}
            for shard in shards.values():
                shard.flush()
                shard.close()

    # -- writes ------------------------------------------------------------

    def upsert(self, name: str, points: Sequence[IndexPoint]) -> None:
        validate_points(points)
        with self._lifecycle.shared():
            shard = self._shard(name)
            with self._writes:
                for start in range(0, len(points), _UPSERT_BATCH):
                    batch = [_to_edge_point(p) for p in points[start : start + _UPSERT_BATCH]]
                    shard.update(edge.UpdateOperation.upsert_points(batch))
                shard.flush()  # durable when we return, not only in the WAL

    def delete_versions(self, name: str, version_ids: Sequence[int]) -> None:
        if matches_nothing(version_ids):
            return
        with self._lifecycle.shared():
            shard = self._shard(name)
            with self._writes:
                shard.update(edge.UpdateOperation.delete_points_by_filter(_version_filter(version_ids)))
                shard.flush()

    def optimize(self, name: str) -> None:
        """Merge segments, build HNSW + quantization, vacuum deletions; blocks, holding the GIL.

        Returns at once when nothing needs work (e.g. fewer new points than the
        indexing threshold). Readers are not locked out by us, but the GIL is
        held throughout, so call it where a pause is acceptable.
        """
        with self._lifecycle.shared():
            shard = self._shard(name)
            with self._writes:
                shard.optimize()
                shard.flush()

    # -- reads -------------------------------------------------------------

    def search_dense(
        self,
        name: str,
        vector: list[float],
        limit: int,
        version_ids: Sequence[int] | None = None,
        with_vectors: bool = False,
        with_payload: bool = True,
    ) -> list[SearchHit]:
        if matches_nothing(version_ids):
            return []
        with self._lifecycle.shared():
            shard = self._shard(name)
            request = edge.QueryRequest(
                limit=limit,
                # A one-row multivector: MaxSim then is the best cosine over the point's rows.
                query=edge.Query.Nearest([list(map(float, vector))], using=DENSE_VECTOR),
                filter=_version_filter(version_ids),
                with_payload=with_payload,
                with_vector=[DENSE_VECTOR] if with_vectors else False,
            )
            return [_to_hit(p, p.score) for p in shard.query(request)]

    def search_sparse(
        self,
        name: str,
        vector: SparseVector,
        limit: int,
        version_ids: Sequence[int] | None = None,
        with_payload: bool = True,
    ) -> list[SearchHit]:
        if matches_nothing(version_ids) or not vector.indices:
            return []
        with self._lifecycle.shared():
            shard = self._shard(name)
            request = edge.QueryRequest(
                limit=limit,
                query=edge.Query.Nearest(
                    edge.SparseVector(list(vector.indices), list(map(float, vector.values))), using=SPARSE_VECTOR
                ),
                filter=_version_filter(version_ids),
                with_payload=with_payload,
                with_vector=False,
            )
            return [_to_hit(p, p.score) for p in shard.query(request)]

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[SearchHit]:
        if not ids:
            return []
        with self._lifecycle.shared():
            shard = self._shard(name)
            records = shard.retrieve(
                [uuid.UUID(i) for i in ids],
                with_payload=True,
                with_vector=[DENSE_VECTOR] if with_vectors else False,
            )
        by_id = {str(r.id): _to_hit(r, 0.0) for r in records}
        return [by_id[str(uuid.UUID(i))] for i in ids if str(uuid.UUID(i)) in by_id]

    def count(self, name: str, version_ids: Sequence[int] | None = None) -> int:
        if matches_nothing(version_ids):
            return 0
        with self._lifecycle.shared():
            shard = self._shard(name)
            return int(shard.count(edge.CountRequest(exact=True, filter=_version_filter(version_ids))))

    # -- shard handles -----------------------------------------------------

    def _path(self, name: str) -> Path:
        return self._root / validate_collection_name(name)

    def _shard(self, name: str) -> edge.EdgeShard:
        """The open shard for a collection; caller holds the lifecycle lock shared."""
        shard = self._shards.get(name)
        if shard is not None:
            return shard
        if not self.collection_exists(name):
            raise NotFound(f"vector collection {name!r} does not exist")
        # First use after start (or after close()): opening needs the lifecycle
        # lock exclusive, which a shared holder cannot take, so open under a
        # separate lock and publish the handle; concurrent openers re-check.
        with self._open_lock:
            shard = self._shards.get(name)
            if shard is None:
                shard = _load_shard(self._path(name))
                self._shards[name] = shard
            return shard

    def _open_locked(self, name: str) -> edge.EdgeShard:
        """The open shard; caller holds the lifecycle lock exclusive."""
        shard = self._shards.get(name)
        if shard is None:
            shard = _load_shard(self._path(name))
            self._shards[name] = shard
        return shard

    @staticmethod
    def _ensure_version_index(shard: edge.EdgeShard) -> None:
        if VERSION_FIELD not in shard.info().payload_schema:
            shard.update(edge.UpdateOperation.create_field_index(VERSION_FIELD, _VERSION_INDEX))



def _load_shard(path: Path) -> edge.EdgeShard:
    try:
        return edge.EdgeShard.load(str(path))
    except Exception as exc:  # qdrant_edge raises bare Exception
        # The WAL is file-locked: a second process (or a second EdgeVectorIndex)
        # on the same shard fails with WouldBlock. That is an availability
        # problem for this caller, not a bug in its request.
        if "WouldBlock" in str(exc):
            log.error("vectors.shard_locked", path=str(path))  # the path for the operator, not the client
            raise IndexUnavailable("vector index unavailable: the shard is open in another process") from exc
        raise


def shard_dense_dim(path: Path) -> int | None:
    """The dense vector size a shard was created with, from its persisted config."""
    try:
        config = json.loads((path / _CONFIG_FILE).read_text())
        return int(config["vectors"][DENSE_VECTOR]["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
