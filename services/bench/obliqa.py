"""The ObliQA dataset (real ADGM/FSRA regulations with clause-level question labels)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


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
