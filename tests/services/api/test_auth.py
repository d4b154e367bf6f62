"""Every endpoint requires an API key and checks the caller's role."""

from __future__ import annotations

import pytest

from tests.services.conftest import auth

pytestmark = pytest.mark.integration

# (method, path, roles allowed)
PROTECTED = [
    ("POST", "/v1/ask", {"staff", "public-staff", "compliance", "model_risk", "admin"}),
    ("POST", "/v1/chat/completions", {"staff", "public-staff", "compliance", "model_risk", "admin"}),
    ("GET", "/v1/models", {"staff", "public-staff", "compliance", "model_risk", "admin"}),
    ("GET", "/v1/health", {"staff", "public-staff", "compliance", "model_risk", "admin"}),
    ("GET", "/v1/documents", {"staff", "public-staff", "compliance", "model_risk", "admin"}),
    ("POST", "/v1/documents", {"admin"}),
    ("GET", "/v1/audit", {"compliance", "admin"}),
    ("GET", "/v1/audit/verify", {"compliance", "admin"}),
    ("GET", "/v1/audit/export", {"compliance", "admin"}),
    ("GET", "/v1/registry/models", {"model_risk", "admin"}),
    ("GET", "/v1/drift/alerts", {"model_risk", "admin"}),
    ("GET", "/v1/drift/status", {"model_risk", "admin"}),
]


def test_every_api_route_is_covered_by_this_table(client):
    api_routes = {(m.upper(), path) for path, ops in client.app.openapi()["paths"].items()
                  if path.startswith("/v1") for m in ops}
    listed = {(m, p) for m, p, _ in PROTECTED}
    parametrised = {(m, p) for m, p in api_routes if "{" in p}
    assert api_routes - parametrised <= listed, api_routes - parametrised - listed


@pytest.mark.parametrize("method,path,allowed", PROTECTED)
def test_no_key_is_401_and_bad_key_is_401(client, method, path, allowed):
    assert client.request(method, path).status_code == 401
    bad = client.request(method, path, headers={"Authorization": "Bearer phk_not-a-real-key"})
    assert bad.status_code == 401
    assert bad.json()["error"] == "unauthenticated"


@pytest.mark.parametrize("method,path,allowed", PROTECTED)
def test_wrong_role_is_403(client, stack, method, path, allowed):
    for who in {"staff", "compliance", "model_risk", "admin"} - allowed:
        response = client.request(method, path, headers=auth(stack, who))
        assert response.status_code == 403, (who, path, response.text)
        assert response.json()["error"] == "forbidden"


def test_parametrised_routes_check_roles(client, stack):
    assert client.get("/v1/audit/abc").status_code == 401
    assert client.get("/v1/audit/abc", headers=auth(stack, "staff")).status_code == 403
    assert client.get("/v1/audit/abc", headers=auth(stack, "compliance")).status_code == 404
    assert client.get("/v1/documents/TEST-EXP/versions").status_code == 401
