"""Metadata precedence (request > sidecar > embedded), validation errors, sidecar discovery."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pydantic
import pytest

from services.errors import DocumentRejected
from services.ingestion.metadata import DocumentMetadata, load_sidecar, resolve_metadata
from services.ingestion.parsers import parse_document

pytestmark = pytest.mark.unit

COMPLETE = {
    "policy_id": "CRD-HL-001",
    "title": "Home Loan Credit and LTV Policy",
    "version": "2.0",
    "effective_date": "2026-04-01",
    "classification": "internal",
    "owner": "Chief Credit Officer",
}


def test_complete_embedded_metadata_is_enough() -> None:
    metadata = resolve_metadata("p.md", COMPLETE, None, {})
    assert metadata == DocumentMetadata(
        policy_id="CRD-HL-001",
        title="Home Loan Credit and LTV Policy",
        version="2.0",
        effective_date=date(2026, 4, 1),
        classification="internal",
        owner="Chief Credit Officer",
    )


def test_overrides_beat_sidecar_which_beats_embedded() -> None:
    sidecar = {"version": "2.1", "owner": "Head of Retail Credit", "classification": "confidential"}
    overrides = {"version": "3.0", "effective_date": date(2027, 1, 1)}
    metadata = resolve_metadata("p.md", COMPLETE, sidecar, overrides)
    assert metadata.version == "3.0"  # override over sidecar and embedded
    assert metadata.effective_date == date(2027, 1, 1)  # override over embedded
    assert metadata.owner == "Head of Retail Credit"  # sidecar over embedded
    assert metadata.classification == "confidential"
    assert metadata.title == COMPLETE["title"]  # embedded where nothing stronger says otherwise


def test_unset_override_fields_do_not_erase_weaker_sources() -> None:
    metadata = resolve_metadata("p.md", COMPLETE, None, {"version": "", "owner": None, "title": "  "})
    assert (metadata.version, metadata.owner, metadata.title) == ("2.0", COMPLETE["owner"], COMPLETE["title"])


def test_keys_are_matched_loosely_and_numbers_become_strings() -> None:
    metadata = resolve_metadata(
        "p.md", {}, None,
        {"Policy-ID": "KYC-AML-001", "Title": "KYC", "version": 2.0, "effective date": "2025-01-31",
         "classification": " Confidential ", "owner": "CCO"},
    )
    assert (metadata.policy_id, metadata.version, metadata.classification) == ("KYC-AML-001", "2.0", "confidential")


def test_every_missing_field_is_named_with_the_file() -> None:
    with pytest.raises(DocumentRejected) as caught:
        resolve_metadata("kyc.md", {"title": "KYC"}, None, {})
    detail = caught.value.detail
    assert detail.startswith("kyc.md: missing metadata: ")
    for name in ("policy_id", "version", "effective_date", "classification", "owner"):
        assert name in detail
    assert "title" not in detail.split(" (give")[0]


def test_every_invalid_field_is_named() -> None:
    bad = {**COMPLETE, "policy_id": "CRD HL/001", "version": "two point oh", "effective_date": "next week",
           "classification": "secret"}
    with pytest.raises(DocumentRejected) as caught:
        resolve_metadata("p.md", bad, None, {})
    detail = caught.value.detail
    assert detail.startswith("p.md: invalid metadata: ")
    for name, value in (("policy_id", "CRD HL/001"), ("version", "two point oh"), ("effective_date", "next week"),
                        ("classification", "secret")):
        assert f"{name} (" in detail and repr(value) in detail
    assert "owner" not in detail and "title" not in detail


def test_missing_and_invalid_are_reported_together() -> None:
    with pytest.raises(DocumentRejected, match=r"^p\.md: missing metadata: owner; invalid metadata: version"):
        resolve_metadata("p.md", {k: v for k, v in COMPLETE.items() if k != "owner"}, None, {"version": "1 0"})


def test_metadata_is_frozen() -> None:
    metadata = resolve_metadata("p.md", COMPLETE, None, {})
    with pytest.raises(pydantic.ValidationError):
        metadata.version = "9"  # type: ignore[misc]


def test_front_matter_through_the_parser_resolves() -> None:
    source = (Path(__file__).resolve().parents[3] / "gold_dataset" / "policies" / "credit-home-loan-ltv-v2.md")
    parsed = parse_document(source.name, source.read_bytes())
    metadata = resolve_metadata(source.name, parsed.metadata, None, {})
    assert (metadata.policy_id, metadata.version, metadata.effective_date) == ("CRD-HL-001", "2.0", date(2026, 4, 1))


# -- sidecars ----------------------------------------------------------------------------------


def test_no_sidecar_is_none(tmp_path: Path) -> None:
    document = tmp_path / "policy.md"
    document.write_text("# P\n")
    assert load_sidecar(document) is None


@pytest.mark.parametrize("name", ["policy.md.meta.yaml", "policy.md.meta.json", "policy.meta.yaml", "policy.yaml"])
def test_sidecar_names(tmp_path: Path, name: str) -> None:
    document = tmp_path / "policy.md"
    document.write_text("# P\n")
    content = {"version": "2.0", "effective_date": "2026-04-01", "owner": "CCO"}
    sidecar = tmp_path / name
    yaml_text = "version: '2.0'\neffective_date: 2026-04-01\nowner: CCO\n"
    sidecar.write_text(json.dumps(content) if name.endswith(".json") else yaml_text)
    assert load_sidecar(document) == content


@pytest.mark.parametrize(
    ("name", "content"), [("p.md.meta.yaml", "version: 2.10\n"), ("p.md.meta.json", '{"version": 2.10}')]
)
def test_sidecar_versions_are_kept_as_written(tmp_path: Path, name: str, content: str) -> None:
    (tmp_path / name).write_text(content)
    assert load_sidecar(tmp_path / "p.md") == {"version": "2.10"}


def test_front_matter_versions_are_kept_as_written() -> None:
    parsed = parse_document("p.md", b"---\nversion: 2.10\neffective_date: 2026-04-01\n---\n# T\n")
    assert parsed.metadata == {"version": "2.10", "effective_date": "2026-04-01", "title": "T"}


def test_the_most_specific_sidecar_wins(tmp_path: Path) -> None:
    document = tmp_path / "policy.md"
    document.write_text("# P\n")
    (tmp_path / "policy.yaml").write_text("owner: generic\n")
    (tmp_path / "policy.md.meta.json").write_text('{"owner": "specific"}')
    assert load_sidecar(document) == {"owner": "specific"}


@pytest.mark.parametrize(
    ("content", "message"),
    [("- just\n- a list\n", r"must be a mapping"), ("owner: [unclosed\n", r"cannot be read")],
)
def test_broken_sidecar_is_rejected_naming_both_files(tmp_path: Path, content: str, message: str) -> None:
    document = tmp_path / "policy.md"
    document.write_text("# P\n")
    (tmp_path / "policy.md.meta.yaml").write_text(content)
    with pytest.raises(DocumentRejected, match=rf"^policy\.md: sidecar policy\.md\.meta\.yaml {message}"):
        load_sidecar(document)
