"""`policyhub` through the CLI runner: what it prints, and what it leaves on disk."""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from governance.policy import DEFAULT_POLICY_PATH
from governance.records.audit import AuditRecord

from tests.services.conftest import run_cli as run

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"


@pytest.mark.unit
@pytest.mark.parametrize("name", ["[bold]p[/bold]", "[/x]", "[1]"])
def test_an_error_message_with_brackets_is_printed_as_written(tmp_path, name):
    # Rich markup would swallow "[bold]" or raise a MarkupError on "[/x]" instead of showing the error.
    missing = tmp_path / f"{name}.yaml"
    result = run("policy", "check", str(missing))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"error: {missing}: cannot read the governance policy" in result.output


@pytest.mark.integration
def test_demo_creates_the_keys_file_private_from_the_start(tmp_path, monkeypatch, data_dir):
    # Written first and narrowed after, the keys file would be readable by every local user for a
    # moment (under a permissive umask): it must never exist with a wider mode than 0600.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(CORPUS / "complaints.md", corpus)
    keys_file = tmp_path / "keys" / "demo-keys.json"
    keys_file.parent.mkdir()
    keys_file.write_text(json.dumps({"someone-earlier": "phk_old"}))
    keys_file.chmod(0o644)  # left by an older version: the new keys must not be written into it as it is
    narrowed = []
    real_chmod = os.chmod

    def recording_chmod(path, mode, **kwargs):
        narrowed.append(Path(path))
        return real_chmod(path, mode, **kwargs)

    monkeypatch.setattr(os, "chmod", recording_chmod)  # Path.chmod calls it too
    previous = os.umask(0)
    try:
        result = run("demo", "--corpus", str(corpus), "--keys-file", str(keys_file))
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert keys_file not in narrowed  # created 0600, not created wider and narrowed afterwards
    keys = json.loads(keys_file.read_text())
    assert set(keys) == {"someone-earlier", "demo-staff", "demo-compliance", "demo-model-risk", "demo-admin"}
    assert not [p for p in keys_file.parent.iterdir() if p != keys_file]  # no temporary file left behind


@pytest.mark.unit
def test_policy_check_refuses_an_undeclared_classification_that_is_not_one_with_line_and_reason(tmp_path):
    text = DEFAULT_POLICY_PATH.read_text()
    assert "undeclared_classification: internal\n" in text
    bad = tmp_path / "policy.yaml"
    bad.write_text(text.replace("undeclared_classification: internal\n", "undeclared_classification: Internal\n"))
    line = next(i for i, ln in enumerate(bad.read_text().splitlines(), start=1)
                if ln == "undeclared_classification: Internal")
    result = run("policy", "check", str(bad))
    assert result.exit_code == 1
    assert f"policy.yaml:{line}: undeclared_classification: " in result.output
    assert "'Internal' is not a classification" in result.output
    assert run("policy", "check", str(DEFAULT_POLICY_PATH)).exit_code == 0


@pytest.mark.integration
def test_ask_with_a_bad_as_of_date_is_refused_and_audited(stack, monkeypatch):
    import services.cli

    monkeypatch.setattr(services.cli, "_runtime", lambda with_models=True: stack.runtime)  # the shared real stack
    question = f"What is the meal allowance? ({uuid.uuid4().hex})"
    result = run("ask", question, "--as-of", "2025-13-01", "--user", "staff")
    assert result.exit_code == 1
    assert "error (invalid_request): --as-of '2025-13-01' is not a date (YYYY-MM-DD)" in result.output
    with stack.runtime.session_factory() as db:
        [record] = db.scalars(select(AuditRecord).where(AuditRecord.question == question)).all()
    assert (record.actor, record.channel, record.event, record.refused) == ("staff", "cli", "ask", False)
    trace = json.loads(record.payload)["trace"]
    assert trace["error"] == {"error": "invalid_request", "detail": "--as-of '2025-13-01' is not a date (YYYY-MM-DD)",
                              "status": 422}
    assert json.loads(record.payload)["response"] is None


BRACKETED_TITLE = "Travel [bold]rules[/bold] and [/x] limits"


@pytest.mark.integration
def test_documents_list_prints_a_title_with_brackets_as_written(tmp_path, data_dir):
    # A title is the document's own text: as Rich markup "[bold]" would vanish and "[/x]" raise a MarkupError.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    text = (CORPUS / "complaints.md").read_text(encoding="utf-8")
    (corpus / "travel.md").write_text(text.replace("title: Customer Complaints Handling Policy",
                                                   f'title: "{BRACKETED_TITLE}"'), encoding="utf-8")
    assert run("db", "upgrade").exit_code == 0
    ingested = run("ingest", str(corpus))
    assert ingested.exit_code == 0, ingested.output
    listed = run("documents", "list")
    assert listed.exit_code == 0, listed.output
    assert BRACKETED_TITLE in listed.output


@pytest.mark.integration
def test_users_add_prints_a_name_with_brackets_as_written(data_dir):
    # Not only tables: every console line prints outside text (names, ids, paths) as written.
    name = "ops [/x] [bold]team[/bold]"
    assert run("db", "upgrade").exit_code == 0
    added = run("users", "add", name, "--role", "staff")
    assert added.exit_code == 0, added.output
    assert f"user {name} (staff, clearance internal) added" in added.output
