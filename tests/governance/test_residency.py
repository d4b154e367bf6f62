"""Residency decisions: fail closed on anything unknown; confidential or PII data stays on-prem."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.policy import GovernancePolicy, load_policy
from governance.residency import (
    allowed_zones,
    classification_rank,
    effective_classification,
    visible_classifications,
    zone_permitted,
)

POLICY = load_policy()
ZONES = sorted({zone for zones in POLICY.residency.values() for zone in zones})

# Declared classifications: every known one, None, and arbitrary strings (typos,
# case variants, empty) that the policy does not know.
declared_values = st.one_of(st.none(), st.sampled_from(POLICY.classifications),
                            st.sampled_from(["secret", "Confidential", "PUBLIC", "", " internal"]),
                            st.text(max_size=12))
clause_values = st.one_of(st.sampled_from(POLICY.classifications), st.text(max_size=12))


@pytest.mark.unit
def test_ranks_follow_the_policy_order_and_unknown_ranks_as_the_unknown_classification():
    assert [classification_rank(c, POLICY) for c in ("public", "internal", "confidential")] == [0, 1, 2]
    unknown_rank = classification_rank(POLICY.unknown_classification, POLICY)
    assert classification_rank("secret", POLICY) == unknown_rank
    assert classification_rank(None, POLICY) == unknown_rank


@pytest.mark.unit
def test_effective_classification_takes_the_most_restricted_input():
    assert effective_classification("public", False, [], POLICY) == "public"
    assert effective_classification("internal", False, [], POLICY) == "internal"
    assert effective_classification("public", False, ["public", "internal"], POLICY) == "internal"
    assert effective_classification("confidential", False, ["public"], POLICY) == "confidential"
    assert effective_classification("public", True, [], POLICY) == POLICY.pii.classification == "confidential"


@pytest.mark.unit
def test_an_undeclared_question_starts_at_the_policy_s_undeclared_class_not_the_lowest():
    assert POLICY.undeclared_classification == "internal"
    assert effective_classification(None, False, [], POLICY) == "internal"
    # about public clauses only, it still may not leave for the cloud: nobody said it was public
    assert effective_classification(None, False, ["public", "public"], POLICY) == "internal"
    assert "cloud" not in allowed_zones(effective_classification(None, False, ["public"], POLICY), POLICY)
    assert effective_classification(None, False, ["confidential"], POLICY) == "confidential"
    assert effective_classification(None, True, [], POLICY) == POLICY.pii.classification
    # only an explicit declaration opens the lowest class's zones
    assert allowed_zones(effective_classification("public", False, ["public"], POLICY), POLICY) == (
        "cloud", "vpc", "onprem")


@pytest.mark.unit
@pytest.mark.parametrize(("declared", "clauses"), [
    ("secret", []), ("Public", []), ("", []), (None, ["restricted"]), ("public", ["public", "PUBLIC"]),
])
def test_an_unknown_classification_string_fails_closed(declared, clauses):
    assert effective_classification(declared, False, clauses, POLICY) == POLICY.unknown_classification
    assert allowed_zones("secret", POLICY) == allowed_zones(POLICY.unknown_classification, POLICY) == ("onprem",)
    assert not zone_permitted("cloud", "secret", POLICY)


@pytest.mark.unit
def test_allowed_zones_come_from_the_policy():
    assert allowed_zones("public", POLICY) == ("cloud", "vpc", "onprem")
    assert allowed_zones("internal", POLICY) == ("vpc", "onprem")
    assert allowed_zones("confidential", POLICY) == ("onprem",)
    assert zone_permitted("vpc", "internal", POLICY)
    assert not zone_permitted("cloud", "internal", POLICY)
    assert not zone_permitted("mars", "public", POLICY)


@pytest.mark.unit
def test_visible_classifications_are_those_at_or_below_clearance():
    assert visible_classifications("public", POLICY) == ("public",)
    assert visible_classifications("internal", POLICY) == ("public", "internal")
    assert visible_classifications("confidential", POLICY) == ("public", "internal", "confidential")
    # An unrecognised clearance sees the least, not the most.
    assert visible_classifications("admin", POLICY) == ("public",)
    assert visible_classifications(None, POLICY) == ("public",)  # type: ignore[arg-type]


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(declared=declared_values, pii=st.booleans(), clauses=st.lists(clause_values, max_size=6),
       zone=st.sampled_from(ZONES))
def test_confidential_or_pii_requests_may_only_go_on_prem(declared, pii, clauses, zone):
    effective = effective_classification(declared, pii, clauses, POLICY)
    assert effective in POLICY.classifications
    if effective == "confidential" or pii:
        assert zone_permitted(zone, effective, POLICY) == (zone == "onprem")
        assert allowed_zones(effective, POLICY) == ("onprem",)


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(declared=declared_values, pii=st.booleans(), clauses=st.lists(clause_values, max_size=6),
       extra=clause_values)
def test_adding_a_clause_or_pii_never_lowers_the_classification(declared, pii, clauses, extra):
    def rank(name: str) -> int:
        return classification_rank(name, POLICY)

    base = rank(effective_classification(declared, pii, clauses, POLICY))
    assert rank(effective_classification(declared, pii, [*clauses, extra], POLICY)) >= base
    assert rank(effective_classification(declared, True, clauses, POLICY)) >= base
    # ...and the result is never below any single input.
    for clause in clauses:
        assert base >= rank(clause)
    assert base >= rank(POLICY.undeclared_classification if declared is None else declared)
    # Permitted zones can only shrink as the classification rises.
    widened = effective_classification(declared, True, [*clauses, extra], POLICY)
    assert set(allowed_zones(widened, POLICY)) <= set(allowed_zones(
        effective_classification(declared, pii, clauses, POLICY), POLICY))


@st.composite
def policies(draw) -> GovernancePolicy:
    """The reviewed policy with other classification names, order, residency, unknown and undeclared class."""
    names = draw(st.lists(st.sampled_from(["open", "staff", "restricted", "secret", "board"]), min_size=1,
                          max_size=5, unique=True))
    residency = {name: draw(st.lists(st.sampled_from(["onprem", "vpc", "cloud"]), min_size=1, max_size=3,
                                     unique=True)) for name in names}
    data = POLICY.model_dump()
    data.update(classifications=names, residency=residency, unknown_classification=draw(st.sampled_from(names)),
                undeclared_classification=draw(st.sampled_from(names)))
    data["pii"]["classification"] = draw(st.sampled_from(names))
    return GovernancePolicy.model_validate(data)


@pytest.mark.unit
@settings(max_examples=100, deadline=None)
@given(policy=policies(), pii=st.booleans(), clauses=st.lists(st.text(max_size=8), max_size=4),
       declared=st.one_of(st.none(), st.text(max_size=8)))
def test_any_policy_fails_closed_and_is_monotone(policy, pii, clauses, declared):
    effective = effective_classification(declared, pii, clauses, policy)
    assert effective in policy.classifications
    unknown_rank = policy.classification_rank[policy.unknown_classification]
    if any(c not in policy.classifications for c in clauses) or (declared is not None
                                                                  and declared not in policy.classifications):
        assert policy.classification_rank[effective] >= unknown_rank
    assert allowed_zones("no-such-class", policy) == tuple(policy.residency[policy.unknown_classification])
    if pii:
        assert policy.classification_rank[effective] >= policy.classification_rank[policy.pii.classification]
    if declared is None:
        assert policy.classification_rank[effective] >= policy.classification_rank[policy.undeclared_classification]
    assert visible_classifications("no-such-clearance", policy) == (policy.classifications[0],)
