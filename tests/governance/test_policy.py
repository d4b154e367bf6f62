"""The governance policy file validates at start-up and names the line of a bad value."""

from __future__ import annotations

import pytest

from governance.policy import DEFAULT_POLICY_PATH, PolicyError, load_policy, parse_policy


def test_the_shipped_policy_is_valid():
    policy = load_policy()
    assert policy.residency["confidential"] == ["onprem"]
    assert policy.input.max_question_chars == 4000


def _mutate(old: str, new: str) -> str:
    text = DEFAULT_POLICY_PATH.read_text()
    assert old in text
    return text.replace(old, new, 1)


def _line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if fragment in line)


@pytest.mark.parametrize("old,new,reason", [
    ("  confidential: [onprem]", "  confidential: [onprem, moon]", "residency.confidential"),
    ("    timeout_s: 20", "    timeout_s: -1", "timeout_s"),
    ("  max_question_chars: 4000", "  max_question_chars: lots", "max_question_chars"),
    ("    max_new_word_share: 0.25", "    max_new_word_share: 1.5", "max_new_word_share"),
    ("    max_new_word_share: 0.25", "    max_new_word_share: 0", "max_new_word_share"),
])
def test_invalid_values_fail_with_line_and_reason(old, new, reason):
    text = _mutate(old, new)
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "policy.yaml")
    message = str(info.value)
    assert reason in message
    assert f"policy.yaml:{_line_of(text, new.strip())}:" in message


@pytest.mark.parametrize("value,reason", [
    ("-5", "greater than or equal to 0"),
    ("1.5", "valid integer"),
    ('"60"', "valid integer"),  # quoted: a string, not silently a number
    ("yes", "valid integer"),  # YAML's true, not 1
    ("lots", "valid integer"),
])
def test_a_negative_or_non_integer_checkpoint_interval_fails_with_line_and_reason(value, reason):
    new = f"  checkpoint_interval_seconds: {value}"
    text = _mutate("  checkpoint_interval_seconds: 60", new)
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "policy.yaml")
    assert f"policy.yaml:{_line_of(text, new)}: audit.checkpoint_interval_seconds: " in str(info.value)
    assert reason in str(info.value)


def test_the_checkpoint_interval_is_a_required_rule_and_0_turns_it_off():
    assert load_policy().audit.checkpoint_interval_seconds == 60
    off = parse_policy(_mutate("  checkpoint_interval_seconds: 60", "  checkpoint_interval_seconds: 0"), "p.yaml")
    assert off.audit.checkpoint_interval_seconds == 0
    without_audit = DEFAULT_POLICY_PATH.read_text().split("\naudit:\n")[0]
    with pytest.raises(PolicyError, match=r"p.yaml:\d+: audit: Field required$"):
        parse_policy(without_audit, "p.yaml")


def test_unknown_keys_and_bad_yaml_are_refused():
    with pytest.raises(PolicyError, match="Extra inputs"):
        parse_policy(_mutate("version: 1", "version: 1\nsurprise: true"), "p.yaml")
    with pytest.raises(PolicyError, match="not valid YAML"):
        parse_policy("a: [unclosed", "p.yaml")
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy("/nonexistent/policy.yaml")


def test_an_undeclared_classification_that_is_not_a_classification_fails_with_line_and_reason():
    text = _mutate("undeclared_classification: internal", "undeclared_classification: secret")
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "policy.yaml")
    message = str(info.value)
    line = _line_of(text, "undeclared_classification: secret")
    assert f"policy.yaml:{line}: undeclared_classification: " in message
    assert "'secret' is not a classification" in message
    assert load_policy().undeclared_classification == "internal"


def test_classification_without_residency_is_refused():
    with pytest.raises(PolicyError, match="no residency rule"):
        parse_policy(_mutate("classifications: [public, internal, confidential]",
                             "classifications: [public, internal, confidential, secret]"), "p.yaml")


@pytest.mark.parametrize("value,reason", [("1.5", "less than or equal to 1"), ("-0.1", "greater than or equal to 0"),
                                          ('"0.9"', "valid number")])
def test_the_faq_similarity_is_a_cosine_in_0_to_1_with_line_and_reason(value, reason):
    new = f"  min_similarity: {value}"
    text = _mutate("  min_similarity: 0.90", new)
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "policy.yaml")
    assert f"policy.yaml:{_line_of(text, new)}: faq.min_similarity: " in str(info.value)
    assert reason in str(info.value)
