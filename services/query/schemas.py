"""Request and response shapes of the query API."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field

NOT_AVAILABLE = "Not available in policy"


class AskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(description="The policy question, up to the policy file's character limit")
    classification: str | None = Field(
        default=None, description="Declared data classification of the question; none: the policy's "
                                  "undeclared_classification")
    as_of: date | None = Field(default=None, description="Answer from the versions in effect on this date")
    sla_ms: int | None = Field(default=None, ge=1, le=600_000, description="Latency budget; routes to faster tiers")


class CitationRead(BaseModel):
    policy_id: str
    policy_title: str
    clause: str
    version: str
    effective_date: str
    score: float
    excerpt: str
    text: str = ""


class ModelRead(BaseModel):
    name: str
    version: str
    zone: str


class LatencyRead(BaseModel):
    retrieve: float = 0.0
    route: float = 0.0
    generate: float = 0.0
    verify: float = 0.0
    total: float = 0.0


class AskRead(BaseModel):
    request_id: str
    answer: str
    citations: list[CitationRead]
    refused: bool
    refusal_reason: str | None
    tier: int
    model: ModelRead | None
    effective_classification: str
    human_review_required: bool = False
    latency_ms: LatencyRead
    cost: float
