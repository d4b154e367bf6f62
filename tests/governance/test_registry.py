"""Fingerprints, the determinism check, and the version lock."""

from __future__ import annotations

import numpy as np
import pytest

from governance.errors import ModelRejected, ReembeddingRequired
from governance.registry import (
    check_determinism,
    hash_model_files,
    index_name_for,
    model_fingerprint,
    register_embedding_model,
    require_version_lock,
)
from services.db.session import make_engine, make_session_factory, transaction, upgrade


def test_fingerprint_changes_with_any_weight_byte(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights-a")
    (tmp_path / "config.json").write_text("{}")
    a = hash_model_files(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"weights-b")
    b = hash_model_files(tmp_path)
    assert set(a) == {"model.safetensors", "config.json"}
    assert model_fingerprint("m", "1", a, 8, 16) != model_fingerprint("m", "1", b, 8, 16)
    assert model_fingerprint("m", "1", a, 8, 16) == model_fingerprint("m", "1", dict(a), 8, 16)
    assert index_name_for(model_fingerprint("m", "1", a, 8, 16)).startswith("ph_")


def test_a_nondeterministic_model_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    assert check_determinism(lambda texts: rng.normal(size=(len(texts), 4))) > 0
    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(url)
    factory = make_session_factory(make_engine(url))
    (tmp_path / "w.safetensors").write_bytes(b"x")
    with pytest.raises(ModelRejected, match="not deterministic"), transaction(factory) as s:
        register_embedding_model(s, name="noisy", version="1", path=tmp_path, dimension=4, max_seq_length=8,
                                 embed=lambda texts: rng.normal(size=(len(texts), 4)))


@pytest.mark.integration
def test_loading_a_different_model_than_the_active_index_needs_reembedding(tmp_path):
    from services.runtime import build_runtime
    from tests.services.conftest import make_settings

    settings = make_settings(tmp_path / "data")
    upgrade(settings.sqlalchemy_url)
    runtime = build_runtime(settings)  # first run: registers and activates the default model
    fingerprint = runtime.identity.fingerprint
    runtime.close()
    with transaction(make_session_factory(make_engine(settings.sqlalchemy_url))) as s:
        assert require_version_lock(s, fingerprint, "all-MiniLM-L6-v2@1").fingerprint == fingerprint
        with pytest.raises(ReembeddingRequired, match="re-embedding required"):
            require_version_lock(s, "f" * 64, "other@2")
    # the same weights under another version label are a different model to the registry
    other = make_settings(tmp_path / "data", embedding_model_version="2")
    with pytest.raises(ReembeddingRequired, match="re-embedding required"):
        build_runtime(other)
