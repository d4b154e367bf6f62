"""The CI gate: the default embedding model must pass the policy file's thresholds on the full gold set.

Thresholds are read from governance/policy.yaml (approvals.embedding_thresholds), never
restated here. A failure prints every missed threshold and the per-category figures, so the
fix (retrieval, segmentation or the model) can be aimed.
"""

from __future__ import annotations

import json

import pytest

from governance.policy import load_policy
from services.benchmark.runner import gold_dataset_version, run_benchmark
from services.db.session import upgrade
from tests.services.conftest import make_settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_default_embedding_model_passes_the_gold_thresholds(tmp_path):
    settings = make_settings(tmp_path / "data")
    upgrade(settings.sqlalchemy_url)
    report = run_benchmark(settings, "gold", report_path=tmp_path / "gold-report")
    thresholds = load_policy().approvals.embedding_thresholds
    assert report["thresholds"] == thresholds
    assert report["dataset_version"] == gold_dataset_version()
    assert report["gold_coverage"] == 1.0, "some gold clauses are not in the index at all (segmentation)"
    per_category = {c: v["ranking"] for c, v in report["metrics"]["per_category"].items() if v["ranking"]["queries"]}
    assert report["passed"], (
        "default embedding model fails the gold gate:\n  " + "\n  ".join(report["threshold_failures"])
        + "\nper category:\n" + json.dumps(per_category, indent=1))
