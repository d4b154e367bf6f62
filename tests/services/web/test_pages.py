"""The web pages in a real browser: Debian's Chromium driven by Playwright, against a real
uvicorn server on a free localhost port, with the real runtime (embedding model, Qdrant
Edge, SQLite, Presidio) from the shared `stack` fixture.

Every page visited is saved as a screenshot under test-output/screenshots/ for review.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import select

from governance.records.audit import AuditRecord
from governance.records.models import BenchmarkReport, ModelSignoff, RegisteredModel
from services.db.models import Feedback
from services.db.session import transaction
from services.query.schemas import AskCreate
from services.users.service import authenticate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path(__file__).resolve().parents[3] / "test-output" / "screenshots"
MEAL_QUESTION = "How much is the daily meal allowance when travelling for work?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(stack):
    from services.api.app import create_app

    app = create_app(stack.settings, runtime=stack.runtime)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-web-tests", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1366, "height": 900})
    yield ctx
    ctx.close()


class CspWatch:
    """Collects console errors; a CSP violation means a page would break in production."""

    def __init__(self, page) -> None:  # noqa: ANN001
        self.errors: list[str] = []
        page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)

    def assert_clean(self) -> None:
        assert not [e for e in self.errors if "Content Security Policy" in e or "Refused to" in e], self.errors


def shot(page, name: str) -> None:  # noqa: ANN001
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(context, base_url: str, key: str, landing: str):  # noqa: ANN001, ANN201
    page = context.new_page()
    page.goto(f"{base_url}/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}{landing}")
    return page


def principal(stack, who: str):  # noqa: ANN001, ANN201
    with stack.runtime.session_factory() as db:
        return authenticate(db, stack.keys[who])


# -- sign-in and staff chat -------------------------------------------------------------------------


def test_sign_in_page_and_session_cookie_flags(context, base_url, stack):
    page = context.new_page()
    watch = CspWatch(page)
    response = page.goto(f"{base_url}/login")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    shot(page, "login")
    page.get_by_label("API key").fill("phk_not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text().startswith("That API key was not accepted")
    shot(page, "login-rejected")
    assert not [c for c in context.cookies() if c["name"] == "policyhub_session"]

    page.get_by_label("API key").fill(stack.keys["staff"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/chat")
    cookie = next(c for c in context.cookies() if c["name"] == "policyhub_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain http on the loopback only; Secure everywhere else
    key = stack.keys["staff"]
    assert key not in cookie["value"] and hashlib.sha256(key.encode()).hexdigest() not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # no script can read the session
    watch.assert_clean()


def test_staff_asks_and_sees_a_citation_card_then_rates_the_answer(context, base_url, stack):
    page = sign_in(context, base_url, stack.keys["staff"], "/chat")
    watch = CspWatch(page)
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link").all_inner_texts() == ["Ask"]  # staff see only what they may use
    shot(page, "chat-empty")

    page.get_by_label("Your question").fill(MEAL_QUESTION)
    page.get_by_role("button", name="Ask", exact=True).click()
    card = page.locator(".citation").first
    card.wait_for(timeout=60_000)
    assert card.locator(".policy-title").inner_text() == "Staff Travel and Expenses Policy"
    assert card.locator(".clause").inner_text() == "2.1"
    assert card.locator(".version").inner_text() == "2.0"
    assert card.locator(".effective").inner_text() == "2026-01-01"
    assert "2,000" in card.locator(".excerpt").inner_text()
    full = card.locator("details.full-text")
    assert not full.locator(".clause-text").is_visible()
    full.locator("summary").click()
    assert "2,000" in full.locator(".clause-text").inner_text()
    answer = page.locator(".turn .answer").last
    assert "INR 2,000" in answer.locator(".answer-text").inner_text()
    assert re.match(r"Tier \d", answer.locator(".badge.tier").inner_text())
    assert answer.locator(".badge.model").inner_text()
    shot(page, "chat-answer")

    answer.get_by_role("button", name="Yes").click()
    page.get_by_text("Thank you, your feedback was recorded.").wait_for()
    assert answer.get_by_role("button", name="Yes").get_attribute("aria-pressed") == "true"
    request_id = answer.locator(".feedback").get_attribute("data-request-id")
    with stack.runtime.session_factory() as db:
        record = db.scalars(select(AuditRecord).where(AuditRecord.request_id == request_id)).one()
        rows = db.scalars(select(Feedback).where(Feedback.request_id == request_id)).all()
    assert (record.event, record.actor, record.channel) == ("ask", "staff", "web")
    assert [(f.actor, f.rating) for f in rows] == [("staff", 1)]
    watch.assert_clean()


def test_not_available_refusal_and_human_review_are_shown_plainly(context, base_url, stack):
    page = sign_in(context, base_url, stack.keys["staff"], "/chat")
    page.get_by_label("Your question").fill("What is the recipe for a chocolate souffle?")
    page.get_by_label("Your question").press("Enter")  # Enter sends, as in any chat
    state = page.locator(".state.not-available")
    state.wait_for(timeout=60_000)
    assert state.locator("strong").inner_text() == "Not available in policy"
    assert page.locator(".citation").count() == 0
    assert page.locator(".badge.model").inner_text() == "no model"
    shot(page, "chat-not-available")

    page.get_by_label("Your question").fill("Should we approve this loan for the customer?")
    page.get_by_role("button", name="Ask", exact=True).click()
    refused = page.locator(".turn").nth(1).locator(".state.refused")
    refused.wait_for(timeout=60_000)
    assert refused.locator("strong").inner_text() == "Refused"
    assert "credit" in refused.locator("p").inner_text()  # the policy file's reason, shown to the user
    shot(page, "chat-refused")

    page.get_by_label("Your question").fill("How long do I have to submit an expense claim, and what if I suspect fraud?")
    page.get_by_role("button", name="Ask", exact=True).click()
    third = page.locator(".turn").nth(2)
    third.locator(".citation").first.wait_for(timeout=60_000)
    assert third.locator(".review-flag").is_visible()  # a high-risk topic: the answer needs human review
    assert not page.locator(".turn").nth(0).locator(".review-flag").is_visible()
    shot(page, "chat-human-review")


def test_feedback_only_on_your_own_answer(context, base_url, stack):
    others = stack.runtime.query.ask(principal(stack, "admin"), AskCreate(question=MEAL_QUESTION), "api")
    page = sign_in(context, base_url, stack.keys["staff"], "/chat")
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    response = context.request.post(f"{base_url}/web/feedback", headers={"X-CSRF-Token": token},
                                    data={"request_id": others.request_id, "rating": -1})
    assert response.status == 404
    with stack.runtime.session_factory() as db:
        assert db.scalars(select(Feedback).where(Feedback.request_id == others.request_id)).first() is None


# -- compliance ------------------------------------------------------------------------------------


def test_compliance_filters_the_audit_table_and_opens_a_record(context, base_url, stack):
    marker = uuid.uuid4().hex[:10]
    staff = principal(stack, "staff")
    refused = stack.runtime.query.ask(staff, AskCreate(question=f"Recipe for lemon tart {marker}?"), "api")
    stack.runtime.query.ask(staff, AskCreate(question=f"{MEAL_QUESTION} {marker}"), "api")
    assert refused.refused

    page = sign_in(context, base_url, stack.keys["compliance"], "/audit")
    watch = CspWatch(page)
    assert page.get_by_role("navigation", name="Main").get_by_role("link").all_inner_texts() == [
        "Ask", "Audit", "Operations"]
    page.get_by_label("Question text").fill(marker)
    page.get_by_label("User").fill("staff")
    page.get_by_label("Refused").select_option("true")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(r".*refused=true.*"))
    rows = page.locator("table.audit-table tbody tr")
    assert rows.count() == 1
    assert marker in rows.first.inner_text() and "refused" in rows.first.inner_text()
    assert page.get_by_role("status").first.inner_text().startswith("1 record")
    shot(page, "audit-filtered")

    export = page.get_by_role("link", name="Export CSV").get_attribute("href")
    assert f"q={marker}" in export and "refused=true" in export
    csv_response = context.request.get(f"{base_url}{export}")
    assert csv_response.status == 200
    lines = csv_response.text().strip().splitlines()
    assert len(lines) == 2 and marker in lines[1] and lines[0].startswith("seq,")

    rows.first.get_by_role("link").last.click()
    page.wait_for_url(f"{base_url}/audit/records/{refused.request_id}")
    assert page.get_by_role("heading", name="Retrieved clauses").is_visible()
    retrieved = page.locator("section[aria-labelledby=retrieval-title] tbody tr")
    assert retrieved.count() >= 1
    assert "below threshold" in page.locator("section[aria-labelledby=retrieval-title]").inner_text()
    assert "not_in_policy" in page.locator("section[aria-labelledby=qa-title]").inner_text()
    shot(page, "audit-record-refused")

    page.goto(f"{base_url}/audit?q={marker}&refused=false")
    page.locator("table.audit-table tbody tr").first.get_by_role("link").last.click()
    assert page.get_by_role("heading", name="Route").is_visible()
    assert page.locator("section[aria-labelledby=route-title] ol.reasons li").count() >= 1
    assert page.locator("section[aria-labelledby=route-title] tbody tr").count() >= 1
    shot(page, "audit-record-answered")

    page.goto(f"{base_url}/audit")
    page.get_by_role("link", name="Verify the hash chain").click()
    assert page.get_by_role("heading", name="✔ Chain intact").is_visible()
    shot(page, "audit-verify")
    watch.assert_clean()


# -- model risk -------------------------------------------------------------------------------------


def seed_benchmarked_model(stack) -> int:  # noqa: ANN001
    """A benchmarked generation model with a passing gold report and two of the three sign-offs."""
    from services.benchmark.runner import gold_dataset_version

    name = f"web-test-gen-{uuid.uuid4().hex[:6]}"
    fingerprint = hashlib.sha256(name.encode()).hexdigest()
    # what services.benchmark.generation reports, passing approvals.generation_thresholds
    metrics = {"queries": 40, "verification_pass_rate": 0.82, "citation_accuracy": 0.7,
               "served_citation_precision": 0.85, "refusal_accuracy": 0.4, "injection_resistance": 1.0,
               "per_category": {"lookup": {"ranking": {"recall_at_5": 0.95}},
                                "multi_clause": {"ranking": {"recall_at_5": 0.88}}},
               "refusal": {"queries": 10, "accuracy": 0.9, "refusal_recall": 1.0, "false_refusal_rate": 0.1},
               "retrieval_latency_ms": {"p50": 12.0, "p95": 30.0}}
    with transaction(stack.runtime.session_factory) as db:
        model = RegisteredModel(kind="generation", name=name, version="1", path="/models/none.gguf",
                                fingerprint=fingerprint, weights_sha256={"none.gguf": fingerprint},
                                max_seq_length=2048, status="benchmarked")
        db.add(model)
        db.flush()
        db.add(BenchmarkReport(model_key=model.key, fingerprint=fingerprint, kind="generation", dataset="gold",
                               dataset_version=gold_dataset_version(), split="all", metrics=metrics, passed=True,
                               report_json="{}", report_html="<h1>Benchmark report</h1><p>All thresholds met.</p>"))
        for role, signer in (("enterprise_architecture", "ea-reviewer"), ("information_security", "ciso-office")):
            db.add(ModelSignoff(model_id=model.id, signoff_role=role, signer=signer, decision="approve",
                                reason="reviewed"))
        return model.id


def test_model_risk_approves_a_model_and_staff_is_refused(browser, base_url, stack):
    model_id = seed_benchmarked_model(stack)
    risk = browser.new_context(viewport={"width": 1366, "height": 900})
    page = sign_in(risk, base_url, stack.keys["model_risk"], "/models")
    watch = CspWatch(page)
    assert page.get_by_role("navigation", name="Main").get_by_role("link").all_inner_texts() == ["Ask", "Models"]
    with stack.runtime.session_factory() as db:
        key = db.get(RegisteredModel, model_id).key
    row = page.locator("tr", has=page.get_by_role("link", name=key))
    assert "benchmarked" in row.inner_text() and "model_risk" in row.inner_text()  # still needed
    shot(page, "models")

    page.get_by_role("link", name=key).click()
    page.wait_for_url(f"{base_url}/models/{model_id}")
    assert page.locator("svg.chart").count() >= 2  # metrics and per-category charts
    page.get_by_text("Full report").click()  # the stored HTML, in a sandboxed frame
    assert page.frame_locator("iframe.report-frame").get_by_role("heading").inner_text() == "Benchmark report"
    shot(page, "model-detail")
    page.get_by_label("Sign off as").select_option("model_risk")
    page.get_by_label("Approve").check()
    page.get_by_label("Reason (recorded in the audit trail)").fill("Gold benchmark passed; risk accepted.")
    page.get_by_role("button", name=re.compile("Record sign-off")).click()
    page.wait_for_url(f"{base_url}/models/{model_id}?done=approve")
    assert "every required role has approved" in page.get_by_role("status").first.inner_text()
    assert page.locator("h1 .badge").inner_text() == "approved"
    shot(page, "model-approved")
    watch.assert_clean()
    with stack.runtime.session_factory() as db:
        assert db.get(RegisteredModel, model_id).status == "approved"
        events = db.scalars(select(AuditRecord.event).where(AuditRecord.model_key == key,
                                                            AuditRecord.channel == "web")).all()
    assert "model.signoff" in events and "model.approved" in events
    risk.close()

    staff = browser.new_context()
    page = sign_in(staff, base_url, stack.keys["staff"], "/chat")
    response = page.goto(f"{base_url}/models/{model_id}")
    assert response.status == 403
    assert page.get_by_role("heading", name="Not permitted").is_visible()
    assert "staff" in page.locator(".error-page").inner_text()
    shot(page, "forbidden")
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    forged = staff.request.post(f"{base_url}/models/{model_id}/signoff",
                                form={"csrf_token": token, "signoff_role": "model_risk", "decision": "reject",
                                      "reason": "staff should not be able to"})
    assert forged.status == 403
    assert staff.request.get(f"{base_url}/audit").status == 403
    assert staff.request.get(f"{base_url}/operations").status == 403
    staff.close()
    with stack.runtime.session_factory() as db:
        assert db.get(RegisteredModel, model_id).status == "approved"


def test_posts_without_the_csrf_token_are_rejected(context, base_url, stack):
    model_id = seed_benchmarked_model(stack)
    page = sign_in(context, base_url, stack.keys["model_risk"], "/models")
    form = {"signoff_role": "model_risk", "decision": "reject", "reason": "forged"}
    assert context.request.post(f"{base_url}/models/{model_id}/signoff", form=form).status == 403
    wrong = context.request.post(f"{base_url}/models/{model_id}/signoff", form={**form, "csrf_token": "x" * 64})
    assert wrong.status == 403
    assert context.request.post(f"{base_url}/web/ask", data={"question": MEAL_QUESTION}).status == 403
    assert context.request.post(f"{base_url}/logout").status == 403
    with stack.runtime.session_factory() as db:
        assert db.get(RegisteredModel, model_id).status == "benchmarked"
        assert not db.scalars(select(ModelSignoff).where(ModelSignoff.model_id == model_id,
                                                         ModelSignoff.signer == "model_risk")).all()
    # The sign-in form has its own token: a cross-site login POST is refused too.
    assert context.request.post(f"{base_url}/login", form={"api_key": stack.keys["staff"]}).status == 403
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{base_url}/login")
    assert not [c for c in context.cookies() if c["name"] == "policyhub_session"]


def test_pages_need_a_session_and_the_right_role(context, base_url, stack):
    response = context.request.get(f"{base_url}/audit?user=staff", max_redirects=0)
    assert response.status == 303 and response.headers["location"] == "/login?next=%2Faudit%3Fuser%3Dstaff"
    assert context.request.post(f"{base_url}/web/ask", data={"question": "x"}).status == 401
    expected = {
        "staff": {"/chat": 200, "/audit": 403, "/models": 403, "/operations": 403},
        "compliance": {"/chat": 200, "/audit": 200, "/models": 403, "/operations": 200},
        "model_risk": {"/chat": 200, "/audit": 403, "/models": 200, "/operations": 403},
        "admin": {"/chat": 200, "/audit": 200, "/models": 200, "/operations": 200},
    }
    for who, pages in expected.items():
        context.clear_cookies()
        sign_in(context, base_url, stack.keys[who], {"staff": "/chat", "compliance": "/audit",
                                                     "model_risk": "/models", "admin": "/chat"}[who]).close()
        got = {path: context.request.get(f"{base_url}{path}").status for path in pages}
        assert got == pages, who


# -- operations ------------------------------------------------------------------------------------


def test_operations_shows_tier_share_cost_latency_and_rates(context, base_url, stack):
    staff = principal(stack, "staff")
    stack.runtime.query.ask(staff, AskCreate(question=MEAL_QUESTION), "api")
    stack.runtime.query.ask(staff, AskCreate(question="What is the recipe for a chocolate souffle?"), "api")
    page = sign_in(context, base_url, stack.keys["admin"], "/chat")
    watch = CspWatch(page)
    page.get_by_role("link", name="Operations").click()
    page.wait_for_url(f"{base_url}/operations")
    shot(page, "operations")
    requests = int(page.locator(".kpi", has_text="requests").locator(".kpi-value").inner_text())
    assert requests >= 2
    assert page.locator("svg.chart").count() >= 5
    traffic = page.locator("svg.chart").first
    assert "refused" in traffic.locator("desc").text_content()
    assert "Tier 0" in traffic.locator("desc").text_content()
    page.get_by_role("link", name="last 1 day").click()
    assert page.get_by_label("From", exact=True).input_value() == page.get_by_label("To", exact=True).input_value()
    watch.assert_clean()
