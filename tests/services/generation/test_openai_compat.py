"""Tier 2/3 for real: `python -m llama_cpp.server` as an on-prem endpoint, a closed port as a down
endpoint, and a recording endpoint standing in for a cloud zone."""

from __future__ import annotations

import pytest

from governance.policy import ModelSpec, load_policy
from governance.residency import effective_classification
from services.generation.base import GenerationError, GenerationTimeout, build_generator, generation_cost
from services.generation.openai_compat import CHARS_PER_TOKEN, OpenAICompatibleGenerator
from services.generation.prompts import build_messages
from services.query.complexity import QuestionFeatures
from services.query.escalation import quote_answer, run_escalation
from services.query.router import Budget, decide
from services.query.verify import RetrievedClause

pytestmark = pytest.mark.integration

POLICY = load_policy()
# policy.yaml's tier-2 on-prem model; its URL comes from settings, here from the fixture.
ONPREM = POLICY.model("onprem-large@1").model_copy(update={"timeout_s": 120.0})
CLOUD = ModelSpec(name="cloud-large", version="2025-01", tier=2, zone="cloud", kind="openai", api_model="cloud-large",
                  price_in_per_1k=0.003, price_out_per_1k=0.015, context_tokens=128_000, typical_latency_ms=1200,
                  timeout_s=5)
DOWN = ModelSpec(name="onprem-down", version="1", tier=2, zone="onprem", kind="openai", api_model="x",
                 price_in_per_1k=0.0001, price_out_per_1k=0.0002, context_tokens=4096, typical_latency_ms=800,
                 timeout_s=5)
BUDGET = Budget(per_request_cap=POLICY.routing.per_request_cost_cap,
                daily_remaining=POLICY.routing.daily_budget_per_user)

SECRET = RetrievedClause(ref="C1", policy_id="AML-INT", policy_title="Internal AML Thresholds", clause="3.1",
                         version="4", effective_date="2025-01-01", classification="confidential", score=0.9,
                         text="Alerts are raised for cash deposits above INR 9,50,000 in any rolling 30 days.")
PUBLIC = RetrievedClause(ref="C1", policy_id="CUST-CHARTER", policy_title="Customer Charter", clause="2.1",
                         version="1", effective_date="2024-07-01", classification="public", score=0.9,
                         text="Complaints are acknowledged within 2 working days and resolved within 30 days.")


def features(complexity: str = "comparison") -> QuestionFeatures:
    return QuestionFeatures(complexity=complexity, confidence=0.9, n_policies_mentioned=1, mentions_versions=False,
                            length_words=9, top_score_gap=0.2)


def generators(*pairs: tuple[ModelSpec, str]) -> dict[str, OpenAICompatibleGenerator]:
    built = {}
    for spec, url in pairs:
        generator = build_generator(spec, url)
        generator.warm_up()
        built[spec.key] = generator
    return built


def test_llama_server_answers_through_the_openai_client(llama_server: str) -> None:
    generator = build_generator(ONPREM, llama_server)
    generator.warm_up()
    result = generator.generate(build_messages("How fast are complaints acknowledged?", [PUBLIC]), max_tokens=48)
    assert result.text.strip()
    # The answer is streamed and this server sends no usage then: tokens are counted one a chunk,
    # never below the chars/4 estimate (test_openai_stream.py compares them with the unstreamed call).
    assert result.input_tokens > 50 and result.latency_ms > 0
    assert 0 < result.output_tokens <= max(48, len(result.text) // CHARS_PER_TOKEN + 1)
    assert result.finish in ("stop", "length")
    cut = generator.generate(build_messages("How fast are complaints acknowledged?", [PUBLIC]), max_tokens=3)
    assert cut.finish == "length"  # the server's finish_reason, carried through
    assert cut.output_tokens == max(3, len(cut.text) // CHARS_PER_TOKEN + 1)


def test_escalation_through_the_real_tier2_server(llama_server: str) -> None:
    decision = decide(features(), "public", "normal", None, BUDGET, [(ONPREM, True)], POLICY)
    assert [c.model_key for c in decision.candidates] == [ONPREM.key, None]
    gens = generators((ONPREM, llama_server))
    result = run_escalation(decision, "Compare acknowledgement and resolution times", [PUBLIC], gens,
                            POLICY.routing.retry_budget)
    first = result.attempts[0]
    assert first.model_key == ONPREM.key and first.zone == "onprem" and first.prompt is not None
    assert first.outcome in ("served", "failed_verification", "declined")
    assert first.cost > 0
    assert first.cost == pytest.approx(generation_cost(ONPREM, first.input_tokens, first.output_tokens))
    if first.outcome == "served":
        assert result.tier == 2 and first.verification.passed
    else:
        assert result.tier == 0 and result.answer == quote_answer([PUBLIC])


def test_closed_port_is_a_generation_error(closed_port_url: str) -> None:
    generator = OpenAICompatibleGenerator(DOWN, closed_port_url)
    generator.warm_up()
    with pytest.raises(GenerationError, match="cannot reach") as caught:
        generator.generate([{"role": "user", "content": "hi"}])
    assert not isinstance(caught.value, GenerationTimeout)


def with_credentials(url: str) -> str:
    """`url` as someone might configure it: a password in the userinfo and a key in the query."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://svc:pa55-in-url@{rest}?api_key=key-in-url&region=in"


def test_endpoint_credentials_never_reach_an_error(closed_port_url: str, recording_endpoint) -> None:
    # The error text becomes the attempt's `error` in the audit record and a log field.
    down = OpenAICompatibleGenerator(DOWN, with_credentials(closed_port_url))
    failing = OpenAICompatibleGenerator(CLOUD, with_credentials(recording_endpoint.base_url), api_key="test-key")
    recording_endpoint.status = 500
    for generator in (down, failing):
        generator.warm_up()
        with pytest.raises(GenerationError, match="cannot reach|HTTP 500") as caught:
            generator.generate([{"role": "user", "content": "hi"}])
        message = str(caught.value)
        assert "pa55-in-url" not in message and "key-in-url" not in message
        assert "127.0.0.1" in message and "region=in" in message  # which endpoint failed is still said


def test_http_errors_and_timeouts_are_mapped(recording_endpoint) -> None:
    generator = OpenAICompatibleGenerator(CLOUD.model_copy(update={"timeout_s": 0.5}), recording_endpoint.base_url,
                                          api_key="test-key")
    generator.warm_up()
    recording_endpoint.status = 500
    with pytest.raises(GenerationError, match="HTTP 500"):
        generator.generate([{"role": "user", "content": "hi"}])
    assert len(recording_endpoint.requests) == 1  # max_retries=0: the escalation loop owns retries
    recording_endpoint.status, recording_endpoint.delay_s = 200, 1.5
    with pytest.raises(GenerationTimeout):
        generator.generate([{"role": "user", "content": "hi"}])


def test_down_endpoint_falls_back_without_raising(closed_port_url: str, recording_endpoint) -> None:
    recording_endpoint.reply = lambda body: "Complaints are acknowledged within 2 working days [C1]."
    decision = decide(features(), "public", "normal", None, BUDGET, [(DOWN, True), (CLOUD, True)], POLICY)
    assert [c.model_key for c in decision.candidates] == [DOWN.key, CLOUD.key, None]
    result = run_escalation(decision, "How fast are complaints acknowledged?", [PUBLIC],
                            generators((DOWN, closed_port_url), (CLOUD, recording_endpoint.base_url)), 2)
    assert [a.outcome for a in result.attempts] == ["error", "served"]
    assert result.zone == "cloud" and result.tier == 2 and result.cited == (PUBLIC,)


@pytest.mark.parametrize(("declared", "pii"), [("confidential", False), ("internal", False), ("public", True)])
def test_restricted_requests_never_reach_the_cloud(declared: str, pii: bool, llama_server: str, closed_port_url: str,
                                                   recording_endpoint) -> None:
    """Even with an approved cloud model and every on-prem candidate failing, the cloud sees nothing."""
    clause = SECRET if declared == "confidential" else PUBLIC
    classification = effective_classification(declared, pii, [clause.classification], POLICY)
    assert classification in ("confidential", "internal")
    recording_endpoint.reply = lambda body: f"{clause.text} [C1]"  # would verify, were it ever asked
    models = [(DOWN, True), (ONPREM, True), (CLOUD, True)]
    decision = decide(features(), classification, "normal", POLICY.routing.async_sla_min_ms, BUDGET, models, POLICY)
    assert "cloud" not in {c.zone for c in decision.candidates}
    gens = generators((DOWN, closed_port_url), (ONPREM, llama_server), (CLOUD, recording_endpoint.base_url))
    result = run_escalation(decision, "Compare the alert thresholds", [clause], gens, retry_budget=5)
    assert recording_endpoint.requests == []
    assert all(a.zone in ("onprem", None) for a in result.attempts)
    assert result.attempts[0].outcome == "error"


def test_public_request_does_reach_the_cloud(closed_port_url: str, recording_endpoint) -> None:
    recording_endpoint.reply = lambda body: "Complaints are resolved within 30 days [C1]."
    decision = decide(features(), "public", "normal", None, BUDGET, [(DOWN, True), (CLOUD, True)], POLICY)
    result = run_escalation(decision, "When are complaints resolved?", [PUBLIC],
                            generators((DOWN, closed_port_url), (CLOUD, recording_endpoint.base_url)), 2)
    assert len(recording_endpoint.requests) == 1
    body = recording_endpoint.requests[0]
    assert body["model"] == "cloud-large" and body["temperature"] == 0
    assert "When are complaints resolved?" in recording_endpoint.received_text()
    assert PUBLIC.text in body["messages"][1]["content"]
    served = result.attempts[-1]
    assert result.tier == 2 and result.zone == "cloud" and served.outcome == "served"
    assert served.cost > 0
    assert served.cost == pytest.approx(generation_cost(CLOUD, served.input_tokens, served.output_tokens))
    assert result.cost == pytest.approx(served.cost)
