"""Pure parts of the web pages: session cookies, CSRF tokens, charts, filters, operations figures."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from governance.policy import load_policy
from services.web import charts
from services.web.audit_view import parse_audit_params
from services.web.csrf import csrf_token_for, tokens_match
from services.web.operations import RequestFacts, request_facts, summarize, top_tier_model
from services.web.session import WebSession, cookie_is_secure, decode_session, encode_session

pytestmark = pytest.mark.unit
SECRET = "unit-test-secret"


def session(**overrides) -> WebSession:
    values = {"user_id": 7, "sid": "abc", "issued_at": int(time.time()), "key_binding": "k" * 32} | overrides
    return WebSession(**values)


def test_a_session_round_trips_and_any_change_is_refused():
    token = encode_session(SECRET, session())
    assert decode_session(SECRET, token) == session(issued_at=session().issued_at)
    body, mac = token.split(".")
    assert decode_session("another-secret", token) is None
    assert decode_session(SECRET, body + "." + mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB")) is None
    forged_body = encode_session(SECRET, session(user_id=1)).split(".")[0]
    assert decode_session(SECRET, f"{forged_body}.{mac}") is None  # another user's id under this signature


@given(st.text(max_size=300))
def test_garbage_cookies_never_raise(text):
    assert decode_session(SECRET, text) is None


def test_sessions_expire():
    old = encode_session(SECRET, session(issued_at=int(time.time()) - 9 * 3600))
    assert decode_session(SECRET, old) is None


def request_to(url_scheme: str, host: str, env: str) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(runtime=SimpleNamespace(settings=SimpleNamespace(env=env))))
    return Request({"type": "http", "scheme": url_scheme, "method": "GET", "path": "/login", "query_string": b"",
                    "server": (host, 8000), "headers": [(b"host", f"{host}:8000".encode())], "app": app})


def test_session_cookies_are_secure_except_for_a_developer_on_the_loopback():
    assert not cookie_is_secure(request_to("http", "127.0.0.1", "dev"))
    assert cookie_is_secure(request_to("http", "hub.bank.internal", "dev"))
    assert cookie_is_secure(request_to("https", "hub.bank.internal", "prod"))
    # In prod behind a proxy that forwards plain http to the loopback (nginx's default Host is
    # the upstream's), the request looks local; the cookie must still never travel over http.
    assert cookie_is_secure(request_to("http", "127.0.0.1", "prod"))


def test_csrf_tokens_belong_to_one_session_and_differ_from_its_signature():
    a, b = csrf_token_for(SECRET, "sid-a"), csrf_token_for(SECRET, "sid-b")
    assert a != b and tokens_match(a, a) and not tokens_match(a, b)
    assert not tokens_match(a, None) and not tokens_match(None, None) and not tokens_match("", "")
    assert a not in encode_session(SECRET, session(sid="sid-a"))


def test_chart_text_is_escaped_and_uses_no_style_attributes():
    svg = charts.bar_chart([charts.Bar("<script>alert(1)</script>", 3.0, marker=2.0)], title="a & b")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "style=" not in svg
    line = charts.line_chart(["d1", "d2", "d3"], [("s", [1.0, None, 2.0])], title="t")
    assert "style=" not in line and "<polyline" not in line  # a gap on both sides of one point: dots only
    assert "no data" in charts.line_chart(["d1"], [("s", [None])], title="t")
    assert "&lt;svg" not in line and "<svg" in line  # the legend appended does not escape the chart


def test_bar_lengths_are_proportional():
    svg = str(charts.bar_chart([charts.Bar("a", 50.0), charts.Bar("b", 100.0)], title="t", max_value=100.0,
                               width=600))
    widths = [float(w) for w in __import__("re").findall(r'class="bar series-0"[^>]*width="([\d.]+)"', svg)]
    assert widths == [pytest.approx(150.0), pytest.approx(300.0)]  # plot width 600 - 190 - 110


def test_audit_form_values_parse_and_bad_ones_are_reported():
    flt, params = parse_audit_params({"since": "2026-01-02T03:04", "tier": "1", "refused": "true", "pii": "",
                                      "user": " staff ", "q": "meal", "until": "yesterday"})
    assert flt.since == datetime(2026, 1, 2, 3, 4, tzinfo=UTC) and flt.until is None
    assert (flt.tier, flt.refused, flt.pii_present, flt.actor, flt.text) == (1, True, None, "staff", "meal")
    assert params.errors == ["until: 'yesterday' is not a date or date-time"]
    assert params.query(offset=25) == "since=2026-01-02T03%3A04&user=staff&tier=1&refused=true&q=meal&offset=25"


def payload(tier: int, attempts: list[dict], refused: bool = False, latency: float = 100.0) -> dict:
    return {"trace": {"attempts": attempts, "error": None},
            "response": {"answer": "x", "tier": tier, "refused": refused, "latency_ms": {"total": latency},
                         "human_review_required": False}}


def test_counterfactual_prices_answered_requests_at_the_top_tier_model():
    policy = load_policy()
    top = top_tier_model(policy)
    assert top.tier == max(m.tier for m in policy.models)
    when = datetime(2026, 3, 1, 12, tzinfo=UTC)
    measured = request_facts(when, 1, False, 0.00001, payload(1, [{"tier": 1, "input_tokens": 1000,
                                                                    "output_tokens": 500}]), top)
    assert measured.counterfactual_cost == pytest.approx(top.price_in_per_1k + 0.5 * top.price_out_per_1k)
    quoted = request_facts(when, 0, False, 0.0, payload(0, []), top)
    assert quoted.counterfactual_cost == pytest.approx(0.8 * top.price_in_per_1k + 0.2 * top.price_out_per_1k)
    refused = request_facts(when, 0, True, 0.0, payload(0, [], refused=True), top)
    assert refused.counterfactual_cost == 0.0
    escalated = request_facts(when, 2, False, 0.0, payload(2, [{"tier": 1}, {"tier": 2}]), top)
    assert escalated.escalated and not measured.escalated
    failed = request_facts(when, None, False, 0.0, {"trace": {"error": {"error": "x"}}, "response": None}, top)
    assert failed.failed and failed.tier is None and failed.latency_ms is None


def test_summary_shares_rates_and_p95_per_tier():
    day = date(2026, 3, 1)

    def fact(tier, refused=False, latency=100.0, escalated=False):  # noqa: ANN001, ANN202
        return RequestFacts(day=day, tier=tier, refused=refused, failed=False, latency_ms=latency, cost=0.01,
                            counterfactual_cost=0.0 if refused else 0.04, escalated=escalated, human_review=False)

    facts = [fact(0, latency=v) for v in range(1, 101)] + [fact(1, escalated=True), fact(0, refused=True)]
    s = summarize(facts, {0: "quote", 1: "small"}, day, date(2026, 3, 2))
    assert s.requests == 102 and s.refused == 1 and s.answered == 101
    assert s.traffic == {"Tier 0 · quote": 100, "Tier 1 · small": 1, "refused": 1, "error": 0}
    assert s.p95_latency_by_tier[0] == pytest.approx(95.05)
    assert s.escalation_rate == pytest.approx(100 / 102)
    assert s.days == ["2026-03-01", "2026-03-02"] and s.daily_requests == [102, 0]
    assert s.daily_refusal_rate[1] is None
    assert s.savings_pct == pytest.approx(100 * (1 - 1.02 / 4.04))
