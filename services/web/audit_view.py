"""The audit pages' query string: the same filters as GET /v1/audit, parsed from an HTML form.

An HTML form sends every field, empty ones as "", so the API's pydantic model (which
would reject "" as a date) is not reused; this parser treats "" as "no filter" and
reports bad values as messages for the page instead of failing the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

from governance.audit_query import AuditFilter

FILTER_FIELDS = ("since", "until", "user", "role", "classification", "tier", "model", "refused", "pii",
                 "policy_id", "q", "event")
PAGE_SIZES = (25, 50, 100)
MAX_TEXT = 200


@dataclass
class AuditParams:
    values: dict[str, str] = field(default_factory=dict)  # cleaned, to refill the form and build links
    errors: list[str] = field(default_factory=list)
    limit: int = PAGE_SIZES[0]
    offset: int = 0

    def query(self, **overrides: object) -> str:
        """The filters (plus paging overrides) as a query string, empty values left out."""
        items = {k: v for k, v in self.values.items() if v}
        items.update({k: str(v) for k, v in overrides.items() if v not in (None, "")})
        return urlencode(items)

    @property
    def active(self) -> bool:
        return any(self.values.values())


def parse_when(text: str) -> datetime:
    """An ISO date or date-time; one without an offset is read as UTC (the pages show UTC)."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_tristate(text: str) -> bool | None:
    lowered = text.lower()
    if lowered in ("", "any"):
        return None
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise ValueError(text)


def parse_audit_params(params: Mapping[str, str]) -> tuple[AuditFilter, AuditParams]:
    """The AuditFilter for the query string, and the cleaned values; bad values are dropped with a message."""
    out = AuditParams()
    for name in FILTER_FIELDS:
        out.values[name] = (params.get(name) or "").strip()[:MAX_TEXT]
    parsed: dict[str, object] = {}
    for name in ("since", "until"):
        if out.values[name]:
            try:
                parsed[name] = parse_when(out.values[name])
            except ValueError:
                out.errors.append(f"{name}: {out.values[name]!r} is not a date or date-time")
                out.values[name] = ""
    if out.values["tier"]:
        if out.values["tier"].isdigit():
            parsed["tier"] = int(out.values["tier"])
        else:
            out.errors.append(f"tier: {out.values['tier']!r} is not a number")
            out.values["tier"] = ""
    for name in ("refused", "pii"):
        try:
            parsed[name] = parse_tristate(out.values[name])
        except ValueError:
            out.errors.append(f"{name}: expected yes or no")
            out.values[name] = ""
    try:
        limit = int(params.get("limit") or PAGE_SIZES[0])
        out.limit = limit if limit in PAGE_SIZES else PAGE_SIZES[0]
        out.offset = max(0, int(params.get("offset") or 0))
    except ValueError:
        out.errors.append("paging: limit and offset must be numbers")

    def text(name: str) -> str | None:
        return out.values[name] or None

    flt = AuditFilter(since=parsed.get("since"), until=parsed.get("until"), actor=text("user"),
                      actor_role=text("role"), classification=text("classification"), tier=parsed.get("tier"),
                      model_key=text("model"), refused=parsed.get("refused"), pii_present=parsed.get("pii"),
                      policy_id=text("policy_id"), text=text("q"), event=text("event"))
    return flt, out
