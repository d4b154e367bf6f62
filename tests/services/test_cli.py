"""The `policyhub` command through the CLI runner."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from governance.policy import DEFAULT_POLICY_PATH
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
