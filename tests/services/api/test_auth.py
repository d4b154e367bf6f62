"""Every endpoint requires an API key and checks the caller's role."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.config import Settings
from tests.services.conftest import auth

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI before 0.16x lists included routers' routes flat in app.routes
    def iter_route_contexts(routes):  # noqa: ANN001, ANN201
        return routes

pytestmark = pytest.mark.integration

# (method, path, roles allowed)
PROTECTED = [
    ("POST", "/v1/ask", {"staff", "public-staff", "compliance", "model_risk", "admin"}),
    ("POST", "/v1/chat/completions", {"staff", "public-staff", "compliance", "model_risk", "admin"}),
    ("GET", "/v1/models", {"staff", "public-staff", "compliance", "model_risk", "admin"}),
    ("GET", "/v1/health", {"staff", "public-staff", "compliance", "model_risk", "admin"}),
    ("GET", "/v1/documents", {"staff", "public-staff", "compliance", "model_risk", "admin"}),
    ("POST", "/v1/documents", {"admin"}),
    ("GET", "/v1/faq", {"staff", "public-staff", "compliance", "model_risk", "admin"}),
    ("POST", "/v1/faq", {"admin"}),
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


# What a caller without credentials may reach: the sign-in form, its two static files, and "/"
# (a redirect to the sign-in form). Anything else added without a role check fails below.
PUBLIC = {("GET", "/"), ("GET", "/login"), ("POST", "/login"), ("GET", "/static/web/{name}")}
DEV_DOCS = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc")}


@pytest.fixture(scope="module")
def prod_client(stack, tmp_path_factory):
    settings = Settings(env="prod", data_dir=tmp_path_factory.mktemp("prod"), audit_hmac_key="a" * 32,
                        session_secret="s" * 32)
    with TestClient(create_app(settings, runtime=stack.runtime)) as test_client:
        yield test_client


def refused_without_credentials(client, method: str, path: str) -> bool:  # noqa: ANN001
    response = client.request(method, re.sub(r"{[^}]+}", "1", path), follow_redirects=False)
    if response.status_code == 303:  # a page: to the sign-in form
        return response.headers["location"].startswith("/login")
    return response.status_code == 401


@pytest.mark.parametrize("env", ["prod", "test"])
def test_every_route_of_the_app_refuses_a_caller_without_credentials(request, env):
    client = request.getfixturevalue("prod_client" if env == "prod" else "client")
    routes = {(method, route.path) for route in iter_route_contexts(client.app.routes)
              for method in (route.methods or ()) if method != "HEAD"}
    assert PUBLIC <= routes
    if env == "prod":
        # Swagger UI and ReDoc load scripts from a CDN, without a CSP, onto the origin whose
        # cookies sign the web pages in: a developer's aid that production does not serve.
        assert not routes & DEV_DOCS
    open_routes = [(method, path) for method, path in sorted(routes - PUBLIC - DEV_DOCS)
                   if not refused_without_credentials(client, method, path)]
    assert not open_routes
