"""VectorIndex on a Qdrant server or cluster through qdrant-client (REST).

qdrant-client API used, and nothing else:
``collection_exists``, ``get_collection``, ``create_collection``,
``create_payload_index``, ``get_collections``, ``delete_collection``,
``upsert(wait=True)``, ``query_points(query=..., using="dense" | "bm25")``,
``retrieve``, ``delete(points_selector=FilterSelector)``, ``count(exact=True)``.

Tests run the same code against qdrant-client's local mode
(``QdrantClient(path=...)`` / ``":memory:"``), which implements these calls
in-process and stands in for a server.

Failures to reach the server (refused connection, timeout, 5xx, rejected API
key) become ``IndexUnavailable`` (503): retrieval cannot proceed, and the
caller should say so rather than answer without sources.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from governance.redaction import redact_urls
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

_UPSERT_BATCH = 256  # ~4 MB of JSON at 4 rows x 384 dims; well under the server's 32 MB request cap
_TIMEOUT_SECONDS = 10


def _version_filter(version_ids: Sequence[int] | None) -> models.Filter | None:
    if version_ids is None:
        return None
    return models.Filter(
        must=[models.FieldCondition(key=VERSION_FIELD, match=models.MatchAny(any=[int(v) for v in version_ids]))]
    )


def _to_point_struct(point: IndexPoint) -> models.PointStruct:
    return models.PointStruct(
        id=str(uuid.UUID(point.id)),
        vector={
            DENSE_VECTOR: [list(map(float, row)) for row in point.dense],
            SPARSE_VECTOR: models.SparseVector(
                indices=list(point.sparse.indices), values=list(map(float, point.sparse.values))
            ),
        },
        payload=dict(point.payload),
    )


def _to_hit(point: models.ScoredPoint | models.Record, score: float) -> SearchHit:
    dense = None
    if isinstance(point.vector, dict) and DENSE_VECTOR in point.vector:
        dense = [list(row) for row in point.vector[DENSE_VECTOR]]
    return SearchHit(id=str(point.id), score=float(score), payload=dict(point.payload or {}), dense=dense)


@contextmanager
def _translate_errors(name: str | None = None) -> Iterator[None]:
    try:
        yield
    except (ResponseHandlingException, httpx.TransportError) as exc:
        raise IndexUnavailable(f"vector index unavailable: {redact_urls(str(exc))}") from exc
    except UnexpectedResponse as exc:
        status = exc.status_code or 0
        if status == 404 and name is not None:
            raise NotFound(f"vector collection {name!r} does not exist") from exc
        if status >= 500 or status in (401, 403):
            raise IndexUnavailable(f"vector index unavailable: HTTP {status} {exc.reason_phrase}") from exc
        raise
    except ValueError as exc:
        # Local mode (tests) reports a missing collection as ValueError rather than HTTP 404.
        if name is not None and str(exc) == f"Collection {name} not found":
            raise NotFound(f"vector collection {name!r} does not exist") from exc
        raise


class ServerVectorIndex:
    """Collections on a Qdrant server/cluster (or qdrant-client local mode in tests)."""

    def __init__(self, client: QdrantClient) -> None:
        self._client = client

    @classmethod
    def connect(cls, url: str, api_key: str | None) -> ServerVectorIndex:
        # check_compatibility=False: the version probe is a network call at
        # construction time, which must stay cheap and must not fail when the
        # server is briefly down at start-up; real calls report unavailability.
        return cls(QdrantClient(url=url, api_key=api_key, timeout=_TIMEOUT_SECONDS, check_compatibility=False))

    # -- collections -------------------------------------------------------

    def ensure_collection(self, name: str, dim: int) -> None:
        validate_collection_name(name)
        with _translate_errors(name):
            if self._client.collection_exists(name):
                existing = self._dense_dim(name)
                if existing is not None and existing != dim:
                    raise ReembeddingRequired(
                        f"collection {name!r} holds {existing}-dim vectors, the embedder makes {dim}: "
                        "re-embed into a new collection"
                    )
            else:
                try:
                    self._client.create_collection(
                        collection_name=name,
                        vectors_config={
                            DENSE_VECTOR: models.VectorParams(
                                size=dim,
                                distance=models.Distance.COSINE,
                                multivector_config=models.MultiVectorConfig(
                                    comparator=models.MultiVectorComparator.MAX_SIM
                                ),
                            )
                        },
                        sparse_vectors_config={SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                    )
                except UnexpectedResponse as exc:
                    if exc.status_code != 409:  # another worker created it between our check and create
                        raise
            self._client.create_payload_index(
                collection_name=name,
                field_name=VERSION_FIELD,
                field_schema=models.PayloadSchemaType.INTEGER,
                wait=True,
            )

    def _dense_dim(self, name: str) -> int | None:
        vectors = self._client.get_collection(name).config.params.vectors
        if isinstance(vectors, dict) and DENSE_VECTOR in vectors:
            return int(vectors[DENSE_VECTOR].size)
        return None

    def collection_exists(self, name: str) -> bool:
        validate_collection_name(name)
        with _translate_errors():
            return bool(self._client.collection_exists(name))

    def list_collections(self) -> list[str]:
        with _translate_errors():
            return sorted(c.name for c in self._client.get_collections().collections)

    def drop_collection(self, name: str) -> None:
        validate_collection_name(name)
        with _translate_errors():
            if self._client.collection_exists(name):
                self._client.delete_collection(name)

    def close(self) -> None:
        self._client.close()

    # -- writes ------------------------------------------------------------

    def upsert(self, name: str, points: Sequence[IndexPoint]) -> None:
        validate_points(points)
        with _translate_errors(name):
            for start in range(0, len(points), _UPSERT_BATCH):
                self._client.upsert(
                    collection_name=name,
                    points=[_to_point_struct(p) for p in points[start : start + _UPSERT_BATCH]],
                    wait=True,  # applied (and in the server's WAL) before we return
                )

    def delete_versions(self, name: str, version_ids: Sequence[int]) -> None:
        if matches_nothing(version_ids):
            return
        with _translate_errors(name):
            self._client.delete(
                collection_name=name,
                points_selector=models.FilterSelector(filter=_version_filter(version_ids)),
                wait=True,
            )

    def optimize(self, name: str) -> None:
        """No-op: the server's optimizers index new segments in the background."""

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
        with _translate_errors(name):
            response = self._client.query_points(
                collection_name=name,
                # A one-row multivector: MaxSim then is the best cosine over the point's rows.
                query=[list(map(float, vector))],
                using=DENSE_VECTOR,
                query_filter=_version_filter(version_ids),
                limit=limit,
                with_payload=with_payload,
                with_vectors=[DENSE_VECTOR] if with_vectors else False,
            )
        return [_to_hit(p, p.score) for p in response.points]

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
        with _translate_errors(name):
            response = self._client.query_points(
                collection_name=name,
                query=models.SparseVector(indices=list(vector.indices), values=list(map(float, vector.values))),
                using=SPARSE_VECTOR,
                query_filter=_version_filter(version_ids),
                limit=limit,
                with_payload=with_payload,
                with_vectors=False,
            )
        return [_to_hit(p, p.score) for p in response.points]

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[SearchHit]:
        if not ids:
            return []
        wanted = [str(uuid.UUID(i)) for i in ids]
        with _translate_errors(name):
            records = self._client.retrieve(
                collection_name=name,
                ids=wanted,
                with_payload=True,
                with_vectors=[DENSE_VECTOR] if with_vectors else False,
            )
        by_id = {str(r.id): _to_hit(r, 0.0) for r in records}
        return [by_id[i] for i in wanted if i in by_id]

    def count(self, name: str, version_ids: Sequence[int] | None = None) -> int:
        if matches_nothing(version_ids):
            return 0
        with _translate_errors(name):
            return int(
                self._client.count(collection_name=name, count_filter=_version_filter(version_ids), exact=True).count
            )
