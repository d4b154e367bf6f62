"""The vector index contract: one narrow protocol, plain dataclasses in and out.

Every backend (embedded Qdrant Edge, Qdrant server/cluster) stores one point per
chunk with two named vectors:

* ``dense`` - a multivector (one row per clause/window of the chunk), cosine
  distance, scored by MaxSim: a query row scores a point by its best-matching row;
* ``bm25`` - the chunk's BM25 term weights (services.vectors.sparse); the backend
  multiplies query terms by IDF (Qdrant's sparse ``Modifier.IDF``).

and a payload that always carries ``version_id`` (integer, indexed) so retrieval
can be restricted to the policy versions in force.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from services.errors import InvalidRequest

DENSE_VECTOR = "dense"
SPARSE_VECTOR = "bm25"
VERSION_FIELD = "version_id"
REQUIRED_PAYLOAD_KEYS = ("version_id", "classification")

# Edge keeps one directory per collection, so a name is also a path segment:
# allow only characters that cannot climb out of the shard directory.
_COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class IndexPoint:
    id: str  # a UUID string
    dense: list[list[float]]  # one or more rows, all of the collection's dim; scored by MaxSim
    sparse: SparseVector  # BM25 term weights of the full chunk text
    payload: dict  # must contain "version_id": int and "classification": str


@dataclass(frozen=True)
class SearchHit:
    id: str
    score: float
    payload: dict
    # The point's rows when asked for with_vectors=True. Cosine backends store
    # rows L2-normalised, so these are the unit-length versions of what was upserted.
    dense: list[list[float]] | None = None


@runtime_checkable
class VectorIndex(Protocol):
    def ensure_collection(self, name: str, dim: int) -> None:
        """Create the collection if missing (idempotent); ReembeddingRequired if it exists with another dim."""

    def collection_exists(self, name: str) -> bool: ...

    def list_collections(self) -> list[str]: ...

    def drop_collection(self, name: str) -> None:
        """Remove the collection and its data; no-op if it does not exist."""

    def upsert(self, name: str, points: Sequence[IndexPoint]) -> None:
        """Insert or replace points by id; durable when it returns."""

    def search_dense(
        self,
        name: str,
        vector: list[float],
        limit: int,
        version_ids: Sequence[int] | None = None,
        with_vectors: bool = False,
        with_payload: bool = True,
    ) -> list[SearchHit]: ...

    def search_sparse(
        self,
        name: str,
        vector: SparseVector,
        limit: int,
        version_ids: Sequence[int] | None = None,
        with_payload: bool = True,
    ) -> list[SearchHit]: ...

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[SearchHit]:
        """Points by id, in the order asked; ids not present are left out."""

    def delete_versions(self, name: str, version_ids: Sequence[int]) -> None: ...

    def optimize(self, name: str) -> None:
        """Build search structures for what was written (call after an ingest batch); may block for minutes."""

    def count(self, name: str, version_ids: Sequence[int] | None = None) -> int: ...

    def close(self) -> None: ...


def validate_collection_name(name: str) -> str:
    if not _COLLECTION_NAME.fullmatch(name) or ".." in name:
        raise InvalidRequest(f"invalid collection name {name!r}: use letters, digits, '_', '-', '.'")
    return name


def validate_points(points: Sequence[IndexPoint]) -> None:
    """Reject points the index could store but retrieval could not use (no version, no rows)."""
    for point in points:
        missing = [key for key in REQUIRED_PAYLOAD_KEYS if key not in point.payload]
        if missing:
            raise InvalidRequest(f"point {point.id}: payload lacks {', '.join(missing)}")
        if not isinstance(point.payload["version_id"], int) or isinstance(point.payload["version_id"], bool):
            raise InvalidRequest(f"point {point.id}: version_id must be an integer")
        if not point.dense:
            raise InvalidRequest(f"point {point.id}: dense multivector has no rows")
        if len(point.sparse.indices) != len(point.sparse.values):
            raise InvalidRequest(f"point {point.id}: sparse indices and values differ in length")


def matches_nothing(version_ids: Sequence[int] | None) -> bool:
    """An empty version list means "no version is in scope", not "no filter"."""
    return version_ids is not None and len(version_ids) == 0
