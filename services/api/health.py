"""Service status for operators."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.deps import AnyUser, RuntimeDep

router = APIRouter(prefix="/v1", tags=["health"])


@router.get("/health")
def health(principal: AnyUser, runtime: RuntimeDep) -> dict:
    """Status of the running hub: embedding model, index and approved generation models."""
    return {"status": "ok", "embedding_model": runtime.identity.key,
            "fingerprint": runtime.identity.fingerprint, "index": runtime.identity.index_name,
            "generation_models": sorted(runtime.query.generators)}
