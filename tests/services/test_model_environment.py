"""An approved generation model starting where its approving report was not measured is flagged at start-up.

The same weights answer differently under other kernels (near-ties flip: README, Tier-1), so
the report names its environment and the query service compares it with the one it runs in.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from governance.policy import load_policy
from governance.records.models import BenchmarkReport, RegisteredModel
from services.bench.tiering import approve_generation_models
from services.db.session import transaction, upgrade
from services.runtime import build_runtime, environment_changes
from tests.services.conftest import make_settings

SMOLLM = "smollm2-135m-instruct@q4_1"


@pytest.mark.unit
def test_environment_changes_name_each_field_that_moved() -> None:
    measured = {"runtime": "llama-cpp-python 0.3.36", "cpu_features": "AVX2", "threads": 2}
    now = {"runtime": "llama-cpp-python 0.3.36", "cpu_features": "AVX2 AVX512", "threads": 2, "seed": 42}
    assert environment_changes(measured, now) == {"cpu_features": {"measured": "AVX2", "now": "AVX2 AVX512"},
                                                  "seed": {"measured": None, "now": 42}}
    assert environment_changes(now, dict(now)) == {}


def _approved_with_report(tmp_path: Path, environment: dict | None):  # noqa: ANN202
    """A data dir where SmolLM2 is approved on a stored gold report recording `environment`."""
    settings = make_settings(tmp_path / "data")
    upgrade(settings.sqlalchemy_url)
    approve_generation_models(settings, load_policy(), only={SMOLLM})
    runtime = build_runtime(settings)
    with transaction(runtime.session_factory) as session:
        model = next(m for m in session.query(RegisteredModel).all() if m.key == SMOLLM)
        body = {"kind": "generation", "model": {"key": SMOLLM}}
        if environment is not None:
            body["environment"] = environment
        session.add(BenchmarkReport(model_key=SMOLLM, fingerprint=model.fingerprint, kind="generation",
                                    dataset="gold", dataset_version="test", split="all", metrics={}, passed=True,
                                    report_json=json.dumps(body), report_html=""))
    return runtime


def _start(runtime) -> list[dict]:  # noqa: ANN001
    try:
        with capture_logs() as logs:
            assert SMOLLM in runtime.query.generators  # the approval still stands: a warning, not a refusal
        return [e for e in logs if e["event"].startswith("model.environment")]
    finally:
        runtime.close()


@pytest.mark.integration
def test_a_model_measured_on_other_kernels_is_flagged_at_start_up(tmp_path: Path) -> None:
    from services.generation.llama import LlamaCppGenerator

    here = LlamaCppGenerator(load_policy().model(SMOLLM)).environment()
    elsewhere = {**here, "cpu": "Intel(R) Xeon(R) Platinum", "cpu_features": "SSE3 AVX AVX2 FMA"}
    [event] = _start(_approved_with_report(tmp_path, elsewhere))
    assert (event["event"], event["model"], event["log_level"]) == ("model.environment_differs", SMOLLM, "warning")
    assert event["changes"]["cpu_features"] == {"measured": "SSE3 AVX AVX2 FMA", "now": here["cpu_features"]}
    assert set(event["changes"]) == {"cpu", "cpu_features"}


@pytest.mark.integration
def test_a_model_measured_here_starts_without_a_warning_and_an_old_report_is_named(tmp_path: Path) -> None:
    from services.generation.llama import LlamaCppGenerator

    here = LlamaCppGenerator(load_policy().model(SMOLLM)).environment()
    assert _start(_approved_with_report(tmp_path / "same", here)) == []
    [event] = _start(_approved_with_report(tmp_path / "old", None))
    assert event["event"] == "model.environment_unrecorded" and event["model"] == SMOLLM
