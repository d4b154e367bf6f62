"""The model-registry and drift endpoints: roles, the approval gate's refusal, stored reports."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from governance.records.models import BenchmarkReport, RegisteredModel
from services.db.session import transaction
from tests.services.conftest import auth

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry_client(stack):
    from fastapi.testclient import TestClient

    from services.api.app import create_app

    app = create_app(stack.settings, runtime=stack.runtime)
    with TestClient(app) as client:
        yield client


def test_roles(registry_client, stack):
    key = stack.runtime.identity.key
    for path in ("/v1/registry/models", f"/v1/registry/models/{key}", "/v1/drift/status", "/v1/drift/alerts"):
        assert registry_client.get(path).status_code == 401
        assert registry_client.get(path, headers=auth(stack, "staff")).status_code == 403
        assert registry_client.get(path, headers=auth(stack, "model_risk")).status_code == 200, path
    for action in ("activate", "retire"):
        response = registry_client.post(f"/v1/registry/models/{key}/{action}", json={},
                                        headers=auth(stack, "model_risk"))
        assert response.status_code == 403 and response.json()["error"] == "forbidden"


def test_list_and_show_the_active_model(registry_client, stack):
    identity = stack.runtime.identity
    rows = registry_client.get("/v1/registry/models", headers=auth(stack, "model_risk")).json()
    active = next(r for r in rows if r["key"] == identity.key)
    assert active["status"] == "active" and active["fingerprint"] == identity.fingerprint
    assert active["index"] == identity.index_name
    assert active["pending_signoffs"] == ["enterprise_architecture", "information_security", "model_risk"]
    detail = registry_client.get(f"/v1/registry/models/{identity.key}", headers=auth(stack, "admin")).json()
    assert detail["reports"] == [] or all(r["dataset"] for r in detail["reports"])
    missing = registry_client.get("/v1/registry/models/nope@9", headers=auth(stack, "admin"))
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_approval_is_refused_with_the_reason_and_the_active_model_cannot_be_retired(registry_client, stack):
    key = stack.runtime.identity.key
    response = registry_client.post(f"/v1/registry/models/{key}/approve", json={"signoff_role": "model_risk"},
                                    headers=auth(stack, "model_risk"))
    assert response.status_code == 409
    assert response.json()["error"] == "invalid_transition" and "is active" in response.json()["detail"]
    bad_role = registry_client.post(f"/v1/registry/models/{key}/reject", json={"signoff_role": "ceo", "reason": "x"},
                                    headers=auth(stack, "model_risk"))
    assert bad_role.status_code == 422 and bad_role.json()["error"] == "invalid_signoff"
    retire = registry_client.post(f"/v1/registry/models/{key}/retire", json={"reason": "no"},
                                  headers=auth(stack, "admin"))
    assert retire.status_code == 409 and "activate another model" in retire.json()["detail"]


def test_stored_reports_are_served_as_json_and_html(registry_client, stack):
    identity = stack.runtime.identity
    with transaction(stack.runtime.session_factory) as session:
        report = BenchmarkReport(model_key=identity.key, fingerprint=identity.fingerprint, kind="embedding",
                                 dataset="obliqa", dataset_version="dev-x", split="dev", metrics={"recall_at_5": 0.5},
                                 passed=False, report_json='{"dataset": "obliqa"}',
                                 report_html="<!doctype html><title>r</title>")
        session.add(report)
        session.flush()
        report_id = report.id
        assert session.scalars(select(RegisteredModel).where(RegisteredModel.fingerprint == identity.fingerprint)).one()
    headers = auth(stack, "model_risk")
    assert registry_client.get(f"/v1/registry/reports/{report_id}", headers=headers).json() == {"dataset": "obliqa"}
    page = registry_client.get(f"/v1/registry/reports/{report_id}/html", headers=headers)
    assert page.headers["content-type"].startswith("text/html") and "default-src 'none'" in page.headers[
        "content-security-policy"]
    listed = registry_client.get(f"/v1/registry/models/{identity.key}/reports", headers=headers).json()
    assert listed[0]["id"] == report_id and listed[0]["metrics"] == {"recall_at_5": 0.5}
    assert registry_client.get("/v1/registry/reports/999999", headers=headers).status_code == 404


def test_drift_status_compares_live_windows(registry_client, stack):
    body = registry_client.get("/v1/drift/status?window_days=7", headers=auth(stack, "model_risk")).json()
    assert body["status"] in ("ok", "shift")
    assert {s["signal"] for s in body["shifts"]} == {"top1_score", "refusal_rate", "tier_mix", "escalation_rate",
                                                     "human_review_rate"}
    assert registry_client.get("/v1/drift/status?window_days=0", headers=auth(stack, "model_risk")).status_code == 422
