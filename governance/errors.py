"""Domain errors carry their HTTP status; one handler renders {"error", "detail"}."""

from __future__ import annotations


class PolicyHubError(Exception):
    status_code: int = 400
    error: str = "bad_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ModelNotApproved(PolicyHubError):
    status_code, error = 409, "model_not_approved"


class ReembeddingRequired(PolicyHubError):
    status_code, error = 409, "reembedding_required"


class ModelRejected(PolicyHubError):
    status_code, error = 422, "model_rejected"


class AuditUnavailable(PolicyHubError):
    status_code, error = 503, "audit_unavailable"


class NotFound(PolicyHubError):
    status_code, error = 404, "not_found"
