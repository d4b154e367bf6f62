"""The ObliQA dataset (real ADGM/FSRA regulations with clause-level question labels)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from services.errors import InvalidRequest

# Halves of ObliQA dev in file order, so a model can be trained on one and measured on the other:
# split -> (file split, first index); every second question from there.
OBLIQA_DERIVED_SPLITS = {"dev-train": ("dev", 1), "dev-heldout": ("dev", 0)}


def find_obliqa_dir() -> Path:
    """`POLICYHUB_OBLIQA_DIR`, else `../shared/datasets/obliqa` beside the checkout, else /work/shared's."""
    if os.environ.get("POLICYHUB_OBLIQA_DIR"):
        return Path(os.environ["POLICYHUB_OBLIQA_DIR"])
    candidates = [Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "obliqa",
                  Path("/work/shared/datasets/obliqa")]
    return next((c for c in candidates if (c / "documents.json").exists()), candidates[0])


DEFAULT_OBLIQA_DIR = find_obliqa_dir()


@dataclass(frozen=True)
class ObliqaDocument:
    document_id: int
    path: Path
    policy_id: str
    title: str


def load_documents(root: Path = DEFAULT_OBLIQA_DIR) -> list[ObliqaDocument]:
    """The 40 documents with the metadata policyhub needs (the files carry none)."""
    mapping = json.loads((root / "documents.json").read_text())
    docs = []
    for doc_id, entry in sorted(mapping.items(), key=lambda kv: int(kv[0])):
        names = entry["names"]
        title = next((n for n in names[2:] if len(n) > 8), names[-1])
        docs.append(ObliqaDocument(int(doc_id), root / "documents_txt" / entry["file"], f"ADGM-{doc_id}", title))
    return docs


def ingest_overrides(doc: ObliqaDocument) -> dict[str, str]:
    return {"policy_id": doc.policy_id, "title": doc.title, "version": "1", "effective_date": "2024-01-01",
            "classification": "public", "owner": "FSRA"}


def load_questions(root: Path = DEFAULT_OBLIQA_DIR, split: str = "dev") -> list[dict]:
    return json.loads((root / f"ObliQA_{split}.json").read_text())


def obliqa_split(root: Path, split: str) -> list[dict]:
    """The questions of an ObliQA split: a file (`dev`) or a half of one (`dev-train` odd, `dev-heldout` even)."""
    source, start = OBLIQA_DERIVED_SPLITS.get(split, (split, None))
    if start is None and not (root / f"ObliQA_{split}.json").exists():
        raise InvalidRequest(f"unknown ObliQA split {split!r}; expected dev, "
                             f"{', '.join(OBLIQA_DERIVED_SPLITS)} or a file ObliQA_SPLIT.json in {root}")
    questions = load_questions(root, source)
    return questions if start is None else questions[start::2]


def obliqa_version(root: Path, split: str) -> str:
    source, _ = OBLIQA_DERIVED_SPLITS.get(split, (split, None))
    digest = hashlib.sha256((root / f"ObliQA_{source}.json").read_bytes()).hexdigest()
    return f"{split}-{digest[:12]}"


def obliqa_passages(root: Path) -> list[dict]:
    """The dataset's own passages (structured/), empty ones left out."""
    files = sorted((root / "structured").glob("*.json"), key=lambda p: int(p.stem))
    return [p for f in files for p in json.loads(f.read_text(encoding="utf-8")) if p["Passage"].strip()]
