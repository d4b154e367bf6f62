"""A fresh real stack per test on SQLite and PostgreSQL (`db_url`): migrations, the bundled
embedding model (shared with the session's `stack`), a Qdrant Edge shard, and the fixture
corpus's expenses v1, complaints and treasury policies ingested through the pipeline; users
of every role the FAQ lifecycle needs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.db.session import transaction
from services.faq.schemas import FaqCreate
from services.faq.service import FaqActor, approve_faq, create_faq
from services.users.service import Principal, create_user
from tests.services.conftest import FIXTURE_CORPUS, make_settings

SUMMARY = "Summarise the rules for claiming meals on business travel"  # rule-labelled: the router's tier 1
MEALS = {
    "questions": [SUMMARY, "What is the daily meal allowance on domestic business travel?"],
    "answer": "On domestic business travel staff may claim up to INR 1,500 a day for meals; alcohol is never "
              "reimbursed.",
    "clauses": [{"policy_id": "TEST-EXP", "version": "1.0", "clause": "2.1"},
                {"policy_id": "TEST-EXP", "version": "1.0", "clause": "2.2"}],
}


@dataclass
class FaqStack:
    runtime: object
    users: dict[str, Principal]

    def add(self, data: dict, who: str = "ana", screen=None):  # noqa: ANN001, ANN201
        with transaction(self.runtime.session_factory) as session:
            return create_faq(session, self.runtime.policy, FaqCreate.model_validate(data),
                              FaqActor(self.users[who], "test"), screen)

    def add_approved(self, data: dict) -> int:
        entry = self.add(data)
        with transaction(self.runtime.session_factory) as session:
            approve_faq(session, self.runtime.policy, entry.id, FaqActor(self.users["cleo"], "test"))
        return entry.id

    def ingest(self, name: str) -> None:
        result = self.runtime.ingestion.ingest_bytes(name, (FIXTURE_CORPUS / name).read_bytes())
        assert result.status == "published", result.error


@pytest.fixture
def faq_stack(tmp_path, stack, db_url) -> FaqStack:
    from services.runtime import build_runtime

    runtime = build_runtime(make_settings(tmp_path / "data", database_url=db_url))
    users = {}
    with transaction(runtime.session_factory) as session:
        for name, role, clearance in (("ana", "admin", "confidential"), ("abe", "admin", "confidential"),
                                      ("cleo", "compliance", "confidential"), ("sam", "staff", "internal"),
                                      ("mo", "model_risk", "confidential")):
            user, _ = create_user(session, name, role, clearance, runtime.policy.classifications)
            users[name] = Principal(user.id, name, role, clearance)
    result = FaqStack(runtime, users)
    for name in ("expenses-v1.md", "complaints.md", "treasury-limits.md"):
        result.ingest(name)
    yield result
    runtime.close()
