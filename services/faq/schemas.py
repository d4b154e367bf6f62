"""Request and response shapes of FAQ templates."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class BoundClauseRef(BaseModel):
    """One clause of one published version an FAQ answer rests on."""

    model_config = ConfigDict(extra="forbid")

    policy_id: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=64)
    clause: str = Field(min_length=1, max_length=200, description="The clause number as cited, e.g. 2.1")


class FaqCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    questions: list[str] = Field(description="Phrasings staff would use (1 to the policy's faq.max_questions)")
    answer: str = Field(description="The short approved answer; every number in it must be in a bound clause")
    clauses: list[BoundClauseRef] = Field(description="The clauses the answer rests on, cited under it")


class FaqRetire(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=4000)


class FaqRead(BaseModel):
    id: int
    questions: list[str]
    answer: str
    clauses: list[BoundClauseRef]
    status: str
    author: str
    approver: str | None
    retired_by: str | None
    created_at: datetime
    approved_at: datetime | None
    retired_at: datetime | None
