"""`policyhub models|drift` through the CLI runner, on a fresh migrated database (no embedding model loaded)."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from services.benchmark.cli import drift_app, models_app
from services.config import get_settings
from services.db.session import upgrade

pytestmark = pytest.mark.integration

SMOLLM = "smollm2-135m-instruct@q4_1"


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("POLICYHUB_ENV", "test")
    monkeypatch.setenv("POLICYHUB_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    upgrade(get_settings().sqlalchemy_url)
    app = typer.Typer()
    app.add_typer(models_app, name="models")
    app.add_typer(drift_app, name="drift")
    runner = CliRunner()
    yield lambda *args: runner.invoke(app, list(args), env={"COLUMNS": "400"})
    get_settings.cache_clear()


def test_generation_model_lifecycle_from_the_cli(cli):
    assert json.loads(cli("models", "list", "--json").stdout) == []
    registered = cli("models", "register", SMOLLM, "--kind", "generation")
    assert registered.exit_code == 0, registered.output
    assert f"{SMOLLM} (generation) is proposed" in registered.stdout
    refused = cli("models", "approve", SMOLLM, "--role", "model_risk")
    assert refused.exit_code == 1
    assert "invalid_transition" in refused.output and "benchmark it first" in refused.output
    unknown = cli("models", "register", "nope@1", "--kind", "generation")
    assert unknown.exit_code == 1 and "not a model of the policy file" in unknown.output
    rejected = cli("models", "reject", SMOLLM, "--role", "information_security", "--reason", "not evaluated")
    assert rejected.exit_code == 0 and "status rejected" in rejected.stdout
    rows = json.loads(cli("models", "list", "--json").stdout)
    assert [(r["key"], r["kind"], r["status"]) for r in rows] == [(SMOLLM, "generation", "rejected")]
    assert rows[0]["pending_signoffs"] == ["enterprise_architecture", "information_security", "model_risk"]
    table = cli("models", "list")
    assert table.exit_code == 0, table.output
    assert SMOLLM in table.stdout and "enterprise_architecture, information_security, model_risk" in table.stdout
    assert cli("models", "retire", SMOLLM, "--reason", "superseded").exit_code == 0
    assert json.loads(cli("models", "list", "--json").stdout)[0]["status"] == "retired"


def test_drift_sample_and_label(cli, tmp_path):
    out = tmp_path / "sample.jsonl"
    sampled = cli("drift", "sample", "--n", "5", "--out", str(out))
    assert sampled.exit_code == 0 and "0 questions written" in sampled.stdout and out.read_text() == ""
    out.write_text(json.dumps({"request_id": "nope", "gold": []}) + "\n")
    labelled = cli("drift", "label", str(out))
    assert labelled.exit_code == 1 and "no audited question with request id 'nope'" in labelled.output
