"""The `policyhub` command through the CLI runner."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from governance.policy import DEFAULT_POLICY_PATH
from governance.records.audit import AuditRecord
from services.cli import app


def run(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})


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
