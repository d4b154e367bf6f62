"""Residency decisions: how sensitive a request is and which zones may see it.

Pure functions over plain values and the governance policy, so they can be
property-tested and replayed against past audit records. Every unknown
classification string fails closed: it is treated as the policy's
`unknown_classification` (the most restricted one in the reviewed file), never
as a permissive default. A question with no declared classification fails closed
too: it starts at the policy's `undeclared_classification`, not the lowest class.
"""

from __future__ import annotations

from collections.abc import Iterable

from governance.policy import GovernancePolicy


def _known_or_unknown(name: str | None, policy: GovernancePolicy) -> str:
    """The classification itself if the policy declares it, otherwise `unknown_classification`."""
    if isinstance(name, str) and name in policy.classification_rank:
        return name
    return policy.unknown_classification


def classification_rank(name: str | None, policy: GovernancePolicy) -> int:
    """Position in the policy's least-to-most-restricted order; unknown or missing ranks as unknown."""
    return policy.classification_rank[_known_or_unknown(name, policy)]


def effective_classification(declared: str | None, pii_found: bool, clause_classifications: Iterable[str],
                             policy: GovernancePolicy) -> str:
    """The most restricted of the declared class, the PII class (if PII was found) and every clause's class.

    A question declared with no classification starts at the policy's
    `undeclared_classification` (`internal` in the reviewed file), not at the
    lowest class: nobody has judged how sensitive it is, and PII detection misses
    some of what makes a question sensitive, so an undeclared question about
    public clauses must not reach a zone only public data may go to. A declared
    string the policy does not know is not "no declaration" but a mistake, so it
    fails closed like any unknown string.
    """
    start = policy.undeclared_classification if declared is None else _known_or_unknown(declared, policy)
    candidates = [start]
    if pii_found:
        candidates.append(policy.pii.classification)
    candidates.extend(_known_or_unknown(name, policy) for name in clause_classifications)
    return max(candidates, key=policy.classification_rank.__getitem__)


def allowed_zones(classification: str, policy: GovernancePolicy) -> tuple[str, ...]:
    """Zones the policy lets data of this classification reach (unknown -> the unknown class's zones)."""
    return tuple(policy.residency[_known_or_unknown(classification, policy)])


def zone_permitted(zone: str, classification: str, policy: GovernancePolicy) -> bool:
    return zone in allowed_zones(classification, policy)


def visible_classifications(clearance: str, policy: GovernancePolicy) -> tuple[str, ...]:
    """Classifications at or below a user's clearance; an unknown clearance sees only the lowest.

    Clearance fails closed the other way round from data: an unrecognised
    clearance grants the least access, not the most.
    """
    rank = policy.classification_rank.get(clearance, 0) if isinstance(clearance, str) else 0
    return tuple(policy.classifications[: rank + 1])
