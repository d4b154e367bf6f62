"""The CI gate: the default embedding model on the full gold set, against the policy file's thresholds.

Thresholds are read from governance/policy.yaml (approvals.embedding_thresholds), never
restated here. A failure prints every missed threshold and the per-category figures, so the
fix (retrieval, segmentation or the model) can be aimed.

Known gap (issue 7): all-MiniLM-L6-v2 measures Recall@5 0.890 and Recall@10 0.925 on the
gold set (2026-11-29), under the policy's 0.90 and 0.95, so the policy gate is an expected
failure (strict: it turns red the day it passes, so this marker is removed then). Until
then the ratchet below fails CI on any regression from the measured figures.
"""

from __future__ import annotations

import json

import pytest

from governance.policy import load_policy
from services.benchmark.runner import gold_dataset_version, run_benchmark
from services.db.session import upgrade
from tests.services.conftest import make_settings

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# Measured floor (2026-11-30, 181 answerable gold questions: R@5 0.907, R@10 0.950, MRR 0.830),
# less about one question's worth.
RATCHET = {"recall_at_5": 0.90, "recall_at_10": 0.944, "mrr": 0.815}


@pytest.fixture(scope="module")
def gold_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gold-gate")
    settings = make_settings(tmp / "data")
    upgrade(settings.sqlalchemy_url)
    return run_benchmark(settings, "gold", report_path=tmp / "gold-report")


def _per_category(report: dict) -> str:
    per_category = {c: v["ranking"] for c, v in report["metrics"]["per_category"].items() if v["ranking"]["queries"]}
    return json.dumps(per_category, indent=1)


def test_gold_retrieval_does_not_regress(gold_report):
    assert gold_report["thresholds"] == load_policy().approvals.embedding_thresholds
    assert gold_report["dataset_version"] == gold_dataset_version()
    assert gold_report["gold_coverage"] == 1.0, "some gold clauses are not in the index at all (segmentation)"
    metrics = gold_report["metrics"]
    regressed = [f"{name} {metrics[name]:.4f} < {floor}" for name, floor in RATCHET.items() if metrics[name] < floor]
    assert not regressed, "gold retrieval regressed:\n  " + "\n  ".join(regressed) + "\n" + _per_category(gold_report)


def test_default_embedding_model_passes_the_gold_thresholds(gold_report):
    assert gold_report["passed"], (
        "default embedding model fails the gold gate:\n  " + "\n  ".join(gold_report["threshold_failures"])
        + "\nper category:\n" + _per_category(gold_report))
