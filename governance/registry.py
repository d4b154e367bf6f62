"""Model registry: fingerprints, determinism check at registration, the version lock, lifecycle."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from governance.errors import ModelRejected, NotFound, ReembeddingRequired
from governance.records.models import RegisteredModel

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".onnx")
# Files that change what the model computes besides the weights.
CONFIG_NAMES = ("config.json", "tokenizer.json", "vocab.txt", "modules.json", "sentence_bert_config.json")
PROBE_TEXTS = (
    "The maximum loan-to-value ratio for a home loan is set by the credit policy.",
    "Customer due diligence must be refreshed for high-risk customers every year.",
    "Incidents must be reported to the information security team within 24 hours.",
    "आधार और पैन विवरण गोपनीय हैं।",  # non-Latin text exercises the tokenizer's unknown paths
)


def hash_model_files(path: Path) -> dict[str, str]:
    """SHA-256 of every weight and configuration file of a model (a directory or a single file)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name in CONFIG_NAMES)
    )
    if not files:
        raise ModelRejected(f"{path}: no model weight files found")
    digests = {}
    for file in files:
        h = hashlib.sha256()
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        digests[str(file.relative_to(path) if path.is_dir() else file.name)] = h.hexdigest()
    return digests


def model_fingerprint(name: str, version: str, weights_sha256: dict[str, str], dimension: int | None,
                      max_seq_length: int | None) -> str:
    """Identity of a model as a computation: the same fingerprint means the same vectors."""
    parts = [name, version, str(dimension), str(max_seq_length)]
    parts += [f"{k}={v}" for k, v in sorted(weights_sha256.items())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def index_name_for(fingerprint: str) -> str:
    """Each vector index is named by the fingerprint of the model that filled it."""
    return f"ph_{fingerprint[:24]}"


def check_determinism(embed: Callable[[list[str]], np.ndarray], probes: Iterable[str] = PROBE_TEXTS) -> float:
    """Embed the probes twice; return the largest difference (0.0 for a deterministic model)."""
    texts = list(probes)
    first, second = np.asarray(embed(texts)), np.asarray(embed(texts))
    if first.shape != second.shape:
        return float("inf")
    return float(np.max(np.abs(first - second))) if first.size else 0.0


def find_model(session: Session, name: str, version: str, kind: str | None = None) -> RegisteredModel | None:
    stmt = select(RegisteredModel).where(RegisteredModel.name == name, RegisteredModel.version == version)
    if kind:
        stmt = stmt.where(RegisteredModel.kind == kind)
    return session.scalars(stmt.order_by(RegisteredModel.id.desc())).first()


def get_model_or_raise(session: Session, key: str) -> RegisteredModel:
    name, _, version = key.partition("@")
    model = find_model(session, name, version)
    if model is None:
        raise NotFound(f"model {key} is not registered")
    return model


def active_embedding_model(session: Session) -> RegisteredModel | None:
    return session.scalars(
        select(RegisteredModel).where(RegisteredModel.kind == "embedding", RegisteredModel.status == "active")
    ).first()


def register_embedding_model(
    session: Session,
    *,
    name: str,
    version: str,
    path: Path,
    dimension: int,
    max_seq_length: int,
    embed: Callable[[list[str]], np.ndarray],
    weights_sha256: dict[str, str] | None = None,
    tolerance: float = 0.0,
) -> RegisteredModel:
    """Record a model after proving it deterministic; idempotent for the same fingerprint."""
    weights = weights_sha256 or hash_model_files(path)
    fingerprint = model_fingerprint(name, version, weights, dimension, max_seq_length)
    existing = session.scalars(select(RegisteredModel).where(RegisteredModel.fingerprint == fingerprint)).first()
    if existing is not None:
        return existing
    drift = check_determinism(embed)
    if drift > tolerance:
        raise ModelRejected(
            f"embedding model {name}@{version} is not deterministic: the same probe texts gave vectors "
            f"differing by up to {drift:.3g}"
        )
    model = RegisteredModel(
        kind="embedding", name=name, version=version, path=str(path), fingerprint=fingerprint,
        weights_sha256=weights, dimension=dimension, max_seq_length=max_seq_length, status="proposed",
    )
    session.add(model)
    session.flush()
    return model


def require_version_lock(session: Session, fingerprint: str, key: str) -> RegisteredModel:
    """The loaded model must be the one the active index was built with."""
    active = active_embedding_model(session)
    if active is None:
        raise NotFound("no active embedding model")
    if active.fingerprint != fingerprint:
        raise ReembeddingRequired(
            f"embedding model {key} (fingerprint {fingerprint[:12]}) differs from the active index's model "
            f"{active.key} (fingerprint {active.fingerprint[:12]}): re-embedding required — register and "
            f"activate the new model (`policyhub models activate`) to build its index"
        )
    return active
