"""Vector index layer: the VectorIndex protocol and its two backends.

``open_vector_index`` picks the backend from settings: a Qdrant server/cluster when
a URL is configured, otherwise the embedded Qdrant Edge shards under ``shard_dir``.
Call it once (FastAPI lifespan / CLI command start) and hand the handle out.
"""

from __future__ import annotations

from pathlib import Path

from services.vectors.base import (
    DENSE_VECTOR,
    SPARSE_VECTOR,
    IndexPoint,
    SearchHit,
    SparseVector,
    VectorIndex,
)

__all__ = [
    "DENSE_VECTOR",
    "SPARSE_VECTOR",
    "IndexPoint",
    "SearchHit",
    "SparseVector",
    "VectorIndex",
    "open_vector_index",
]


def open_vector_index(shard_dir: Path, qdrant_url: str | None, api_key: str | None) -> VectorIndex:
    """The server index when ``qdrant_url`` is set, else the embedded Edge index (no I/O until first use)."""
    # Imported here so a deployment loads only the client library it uses.
    if qdrant_url:
        from services.vectors.server import ServerVectorIndex

        return ServerVectorIndex.connect(qdrant_url, api_key)
    from services.vectors.edge import EdgeVectorIndex

    return EdgeVectorIndex(shard_dir)
