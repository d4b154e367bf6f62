"""Errors of the running system (see governance.errors for the shared base)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from governance.errors import (  # noqa: F401  (re-exported: one place to import errors from)
    AuditUnavailable,
    ModelNotApproved,
    ModelRejected,
    NotFound,
    PolicyHubError,
    ReembeddingRequired,
)


class SchemaOutOfDate(PolicyHubError):
    status_code, error = 503, "schema_out_of_date"


class DocumentRejected(PolicyHubError):
    status_code, error = 422, "document_rejected"


class DocumentConflict(PolicyHubError):
    status_code, error = 409, "version_conflict"


class InvalidRequest(PolicyHubError):
    status_code, error = 422, "invalid_request"


def validation_detail(errors: Iterable[Mapping]) -> str:
    """Pydantic validation errors as one detail line, "question: Field required; sla_ms: ...".

    FastAPI prefixes a body field's location with "body"; that part is dropped.
    """
    return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
                     for e in errors)


class Unauthenticated(PolicyHubError):
    status_code, error = 401, "unauthenticated"


class Forbidden(PolicyHubError):
    status_code, error = 403, "forbidden"


class ResidencyViolation(PolicyHubError):
    status_code, error = 403, "residency_violation"


class BudgetExceeded(PolicyHubError):
    status_code, error = 429, "budget_exceeded"


class IndexUnavailable(PolicyHubError):
    status_code, error = 503, "index_unavailable"


class FaqRejected(PolicyHubError):
    status_code, error = 422, "faq_rejected"


class FaqConflict(PolicyHubError):
    """An FAQ lifecycle step its current status does not allow (approve a retired entry, say)."""

    status_code, error = 409, "faq_conflict"


class FourEyesViolation(PolicyHubError):
    status_code, error = 403, "four_eyes_rule"
