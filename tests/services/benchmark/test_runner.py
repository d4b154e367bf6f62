"""The benchmark runner and blue/green activation, end to end with the real model, Edge and SQLite.

One production world per module: the default model active, the fixture corpus ingested. The
bundled model is registered a second time under version label 2 — same weights, different
fingerprint — which is the candidate that gets benchmarked, activated into its own index, and
which the old model is retired in favour of.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from governance.approvals import Actor, ApprovalRefused, InvalidTransition, record_signoff, set_status
from governance.audit import verify_chain
from governance.records.audit import AuditRecord
from governance.records.models import BenchmarkReport, RegisteredModel
from governance.registry import index_name_for
from services.benchmark.runner import DEFAULT_GOLD_DIR, gold_dataset_version, load_gold_queries, run_benchmark
from services.db.models import DocumentVersion
from services.db.session import transaction, upgrade
from services.errors import ReembeddingRequired
from tests.services.conftest import FIXTURE_CORPUS, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MINI_POLICIES = ("credit-home-loan-ltv-v1.md", "credit-home-loan-ltv-v2.md", "records-retention.md")
MINI_POLICY_IDS = {"CRD-HL-001", "REC-RET-001"}
ADMIN = Actor("cli:tester", "admin")
CANDIDATE = "all-MiniLM-L6-v2@2"


def write_mini_gold(root: Path) -> Path:
    """A slice of the real gold set: three policy files, their questions, and some must-refuse ones."""
    (root / "policies").mkdir(parents=True)
    for name in MINI_POLICIES:
        shutil.copy(DEFAULT_GOLD_DIR / "policies" / name, root / "policies" / name)
    shutil.copy(DEFAULT_GOLD_DIR / "VERSION", root / "VERSION")
    rows = [json.loads(line) for line in (DEFAULT_GOLD_DIR / "queries.jsonl").read_text().splitlines() if line.strip()]
    keep = [r for r in rows if r["gold"] and {g["policy_id"] for g in r["gold"]} <= MINI_POLICY_IDS][:30]
    keep += [r for r in rows if r["category"] == "not_in_policy"][:6]
    keep += [r for r in rows if r["category"] == "prohibited"][:6]
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
    return root


@pytest.fixture(scope="module")
def production(tmp_path_factory):
    from services.benchmark.service import register_embedding
    from services.runtime import build_runtime

    root = tmp_path_factory.mktemp("production")
    settings = make_settings(root / "data")
    upgrade(settings.sqlalchemy_url)
    runtime = build_runtime(settings)  # bootstraps all-MiniLM-L6-v2@1 as the active model
    summary = runtime.ingestion.ingest_paths([FIXTURE_CORPUS])
    assert not summary.rejected
    with transaction(runtime.session_factory) as session:
        register_embedding(session, runtime.embedder.path, runtime.embedder.name, "2", ADMIN)
    yield settings, runtime
    runtime.close()


@pytest.fixture(scope="module")
def benchmarked(production, tmp_path_factory):
    settings, runtime = production
    mini = write_mini_gold(tmp_path_factory.mktemp("gold"))
    before = {name: runtime.index.count(name) for name in runtime.index.list_collections()}
    report = run_benchmark(settings, "gold", model_key=CANDIDATE, report_path=mini / "out" / "report",
                           gold_dir=mini)
    return report, mini, before


def test_the_benchmark_never_touches_the_production_index(production, benchmarked):
    settings, runtime = production
    report, _, before = benchmarked
    assert {name: runtime.index.count(name) for name in runtime.index.list_collections()} == before
    assert index_name_for(report["model"]["fingerprint"]) not in runtime.index.list_collections()
    with runtime.session_factory() as session:
        policies = set(session.scalars(select(DocumentVersion.policy_id)))
    assert not policies & MINI_POLICY_IDS  # the gold corpus went into the temporary world only


def test_the_report_measures_real_retrieval_and_refusals(benchmarked):
    report, mini, _ = benchmarked
    m = report["metrics"]
    queries = load_gold_queries(mini)
    assert report["queries"] == len(queries) == 42
    assert m["queries"] == sum(bool(q.gold) for q in queries) == 30
    assert report["dataset_version"] == gold_dataset_version(mini) != gold_dataset_version()
    assert report["corpus"]["versions"] == 3 and report["gold_coverage"] == 1.0
    # real retrieval over three policies finds most gold clauses; a broken path would score ~0
    assert m["recall_at_10"] >= 0.6 and m["mrr"] >= 0.4
    assert m["recall_curve"][0] == m["recall_at_1"] and m["recall_curve"][-1] == m["recall_at_20"]
    assert m["refusal"]["must_refuse"] == 12
    # prohibited-use questions go through the real guards; the reason is judged, not just the refusal
    rows = [o for o in report["outcomes"] if o["category"] == "prohibited"]
    caught = sum(bool(o["refused"]) and o["refusal_reason"].startswith("prohibited_use") for o in rows)
    assert m["per_category"]["prohibited"]["refusal"]["reason_accuracy"] == round(caught / len(rows), 4) >= 0.5
    assert m["routing"]["queries"] > 0 and set(m["routing"]["confusion"])
    assert m["retrieval_latency_ms"]["n"] == 42 and m["retrieval_latency_ms"]["p95"] >= m["retrieval_latency_ms"]["p50"] > 0


def test_json_and_self_contained_html_are_written_and_stored(production, benchmarked):
    settings, runtime = production
    report, mini, _ = benchmarked
    stored_json = json.loads((mini / "out" / "report.json").read_text())
    assert stored_json["metrics"] == report["metrics"]
    html = (mini / "out" / "report.html").read_text()
    assert html.count("<svg") >= 3 and "Recall by k" in html and "Per category" in html
    assert "<script" not in html.lower()
    assert "https://" not in html and html.replace('xmlns="http://www.w3.org/2000/svg"', "").count("http://") == 0
    with runtime.session_factory() as session:
        row = session.get(BenchmarkReport, report["report_id"])
        model = session.scalars(select(RegisteredModel).where(RegisteredModel.version == "2")).one()
        assert row.fingerprint == model.fingerprint == report["model"]["fingerprint"]
        assert row.report_html == html and row.metrics["recall_at_5"] == report["metrics"]["recall_at_5"]
        assert model.status == "benchmarked"
        events = [r.event for r in session.scalars(select(AuditRecord).where(AuditRecord.model_key == CANDIDATE))]
        assert events == ["model.registered", "model.benchmarked"]
        assert verify_chain(session).ok


def test_a_report_on_another_dataset_version_cannot_approve(production, benchmarked):
    settings, runtime = production
    with pytest.raises(ApprovalRefused, match="the current version is"), transaction(runtime.session_factory) as s:
        record_signoff(s, CANDIDATE, "model_risk", "mira", "approve", "", runtime.policy, gold_dataset_version())


def test_drift_run_compares_the_active_index_with_the_approved_baseline(production, benchmarked):
    from services.benchmark.drift import run_drift

    settings, runtime = production
    _, mini, _ = benchmarked
    # the baseline: the active model benchmarked on the same gold slice in its own temporary index
    baseline = run_benchmark(settings, "gold", gold_dir=mini)
    runtime.ingestion.ingest_paths([mini / "policies"])  # now production holds the gold corpus too
    clean = run_drift(runtime, gold_dir=mini, actor="cli:tester")
    assert clean["gold"]["source"] == "active index" and clean["gold"]["baseline_report"] == baseline["report_id"]
    shift = clean["gold"]["shift"]
    assert shift["baseline"] == baseline["metrics"]["recall_at_5"]
    assert abs(shift["relative_change"]) < 0.05 and not shift["significant"]  # same model, same clauses
    assert clean["alerts"] == []  # and too few live questions for any live signal to count
    assert all(not s["significant"] and "fewer than" in s["note"] for s in clean["live"]["shifts"]
               if s["signal"] != "tier_mix")

    # a baseline the active index no longer meets: a drop over the policy's 5% is an alert, audited
    with transaction(runtime.session_factory) as s:
        s.add(BenchmarkReport(model_key=runtime.identity.key, fingerprint=runtime.identity.fingerprint,
                              kind="embedding", dataset="gold", dataset_version=gold_dataset_version(mini),
                              split="all", metrics={**baseline["metrics"], "recall_at_5": 1.0}, passed=True,
                              report_json="{}", report_html=""))
    drifted = run_drift(runtime, gold_dir=mini, actor="cli:tester")
    assert [a["signal"] for a in drifted["alerts"]] == ["gold_recall_at_5"]
    with runtime.session_factory() as s:
        last = s.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc())).first()
        assert last.event == "drift.alert" and json.loads(last.payload)["signal"] == "gold_recall_at_5"
        assert verify_chain(s).ok


def test_blue_green_activation_reembeds_switches_and_retires(production, benchmarked):
    from services.benchmark.activation import activate_model, retire_model
    from services.query.retrieval import Retriever
    from services.runtime import build_runtime

    settings, runtime = production
    old_index, new_index = runtime.identity.index_name, index_name_for(benchmarked[0]["model"]["fingerprint"])
    factory, index = runtime.session_factory, runtime.index
    with pytest.raises(InvalidTransition, match="benchmarked; it cannot become active"):
        activate_model(factory, index, runtime.policy, CANDIDATE, ADMIN)
    with transaction(factory) as s:
        # The approval gate has its own tests; here the subject is the switch.
        set_status(s, s.scalars(select(RegisteredModel).where(RegisteredModel.version == "2")).one(), "approved",
                   ADMIN, "model.approved", {"note": "test arrangement"})
        n_versions = s.scalar(select(func.count()).select_from(DocumentVersion))
    question = "How many days does the customer have to escalate a complaint?"
    old_top = _top_clause(runtime, Retriever(index, runtime.policy, old_index, runtime.session_factory), question)

    result = activate_model(factory, index, runtime.policy, CANDIDATE, ADMIN)
    assert (result.index_name, result.previous_key, result.versions) == (new_index, "all-MiniLM-L6-v2@1", n_versions)
    assert index.count(new_index) == index.count(old_index) == result.points  # same chunks, one point each
    with factory() as s:
        statuses = {m.version: m.status for m in s.scalars(select(RegisteredModel))}
        assert statuses == {"1": "approved", "2": "active"}
        assert set(s.scalars(select(DocumentVersion.index_name))) == {new_index}
        assert [r.event for r in s.scalars(select(AuditRecord).order_by(AuditRecord.seq))][-2:] == [
            "model.deactivated", "model.activated"]
    # same weights: the new index ranks exactly as the old one did
    assert _top_clause(runtime, Retriever(index, runtime.policy, new_index, runtime.session_factory), question) == old_top
    runtime.index.close()

    # queries never mix models: the old configuration no longer starts, the new one does
    with pytest.raises(ReembeddingRequired):
        build_runtime(settings)
    switched = build_runtime(settings.model_copy(update={"embedding_model_version": "2"}))
    try:
        assert switched.identity.index_name == new_index
        assert _top_clause(switched, Retriever(switched.index, switched.policy, new_index, switched.session_factory), question) == old_top
        retired = retire_model(switched.session_factory, switched.index, "all-MiniLM-L6-v2@1", ADMIN, "replaced")
        assert retired["dropped_index"] == old_index
        assert old_index not in switched.index.list_collections() and new_index in switched.index.list_collections()
        with switched.session_factory() as s:
            assert verify_chain(s).ok
    finally:
        switched.close()


def _top_clause(runtime, retriever, question):  # noqa: ANN001, ANN202
    from services.query.retrieval import visible_versions

    with runtime.session_factory() as s:
        versions = visible_versions(s, "confidential", runtime.policy)
    hits = retriever.retrieve(question, runtime.embedder.embed([question])[0], versions, top_k=3).clauses
    return [(h.policy_id, h.clause) for h in hits]
