"""The metadata every published policy version carries, and where it comes from.

Three sources, strongest first: fields given with the ingest request (CLI options or API
form fields), a sidecar file next to the document, and metadata inside the document
(YAML front matter, DOCX properties, HTML <meta> tags). A document missing any field is
rejected with every problem named at once, so the author fixes it in one pass.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.errors import DocumentRejected
from services.ingestion.parsers import load_yaml_as_text, scalar_fields

Classification = Literal["public", "internal", "confidential"]

# Sidecar names tried in order, for a document "home-loans.md":
# home-loans.md.meta.yaml, home-loans.md.meta.yml, home-loans.md.meta.json,
# home-loans.meta.yaml, home-loans.meta.yml, home-loans.meta.json, home-loans.yaml, home-loans.yml
_SIDECAR_SUFFIXES = (".meta.yaml", ".meta.yml", ".meta.json")
_MAX_SIDECAR_BYTES = 64 * 1024


class DocumentMetadata(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)

    policy_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,200}$")
    title: str = Field(min_length=1, max_length=500)
    version: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    effective_date: date
    classification: Classification
    owner: str = Field(min_length=1, max_length=200)

    @field_validator("classification", mode="before")
    @classmethod
    def _lower_case_classification(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


FIELDS = tuple(DocumentMetadata.model_fields)


def load_sidecar(path: Path) -> dict[str, str] | None:
    """Metadata from the sidecar file next to a document, or None if there is none."""
    candidates = [path.with_name(path.name + suffix) for suffix in _SIDECAR_SUFFIXES]
    candidates += [path.with_name(path.stem + suffix) for suffix in (*_SIDECAR_SUFFIXES, ".yaml", ".yml")]
    for candidate in candidates:
        if candidate != path and candidate.is_file():
            return _read_sidecar(path.name, candidate)
    return None


def _read_sidecar(document: str, sidecar: Path) -> dict[str, str]:
    if sidecar.stat().st_size > _MAX_SIDECAR_BYTES:
        raise DocumentRejected(f"{document}: sidecar {sidecar.name} is larger than {_MAX_SIDECAR_BYTES} bytes")
    raw = sidecar.read_text(encoding="utf-8-sig")
    try:
        # Numbers are kept as written, so that version 2.10 is not read as 2.1.
        if sidecar.suffix == ".json":
            loaded = json.loads(raw, parse_float=str, parse_int=str)
        else:
            loaded = load_yaml_as_text(raw)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise DocumentRejected(f"{document}: sidecar {sidecar.name} cannot be read: {exc}") from exc
    if not isinstance(loaded, dict):
        raise DocumentRejected(f"{document}: sidecar {sidecar.name} must be a mapping of field: value")
    return scalar_fields(loaded)


def resolve_metadata(
    filename: str, embedded: dict, sidecar: dict | None, overrides: dict
) -> DocumentMetadata:
    """Merge the sources (overrides > sidecar > embedded) and validate the result."""
    merged: dict[str, Any] = {}
    for source in (embedded, sidecar or {}, overrides):
        for key, value in source.items():
            if value is None or (isinstance(value, str) and not value.strip()):
                continue  # an unset form field does not erase a value from a weaker source
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)  # version: 2.0 in YAML is a float; the version is "2.0"
            merged[_field_name(key)] = value
    try:
        return DocumentMetadata(**{name: merged[name] for name in FIELDS if name in merged})
    except ValidationError as exc:
        raise DocumentRejected(f"{filename}: {_describe(exc)}") from exc


def _field_name(key: str) -> str:
    return str(key).strip().lower().replace("-", "_").replace(" ", "_")


def _describe(exc: ValidationError) -> str:
    missing: list[str] = []
    invalid: list[str] = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"])
        if error["type"] == "missing":
            missing.append(name)
        else:
            invalid.append(f"{name} ({error['msg']}; got {error.get('input')!r})")
    parts = []
    if missing:
        parts.append(f"missing metadata: {', '.join(missing)}")
    if invalid:
        parts.append(f"invalid metadata: {'; '.join(invalid)}")
    return "; ".join(parts) + " (give them in front matter, a sidecar file or with the ingest request)"
