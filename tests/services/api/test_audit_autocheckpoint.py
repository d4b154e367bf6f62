"""The running app checkpoints the audit chains by itself, on SQLite and PostgreSQL: what it
appends is signed within the policy's interval and at shutdown, so a cut-off tail is caught;
a tampered chain is refused, logged, and the app keeps serving."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import delete, update
from structlog.testing import capture_logs

from governance.audit import chain_head, load_checkpoints, verify_chain
from governance.policy import DEFAULT_POLICY_PATH
from services.config import Settings
from services.db.session import transaction
from services.users.service import create_user
from tests.governance.test_audit_tamper import T, as_db_owner
from tests.services.conftest import make_settings

pytestmark = pytest.mark.integration

INTERVAL = 1  # seconds: the shortest the policy allows (a whole number of seconds)


def policy_with_checkpoint_interval(folder: Path, seconds: int) -> Path:
    document = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    document["audit"]["checkpoint_interval_seconds"] = seconds
    policy_file = folder / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return policy_file


@dataclass
class Served:
    settings: Settings
    runtime: object
    key: str  # a staff member's API key

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def key_bytes(self) -> bytes:
        return self.settings.audit_hmac_key.get_secret_value().encode()

    def head(self) -> tuple[int, str]:
        with self.runtime.session_factory() as session:
            return chain_head(session)

    def verify_with_the_checkpoint_file(self):
        with self.runtime.session_factory() as session:
            return verify_chain(session, checkpoints=load_checkpoints(self.settings.checkpoint_file),
                                key=self.key_bytes())


@pytest.fixture
def serve(db_url, tmp_path) -> Iterator[Callable[[int], Served]]:
    """A runtime on the parametrised database whose policy checkpoints every `seconds`."""
    from services.runtime import build_runtime

    runtimes = []

    def build(seconds: int) -> Served:
        settings = make_settings(tmp_path / "data", database_url=db_url,
                                 policy_file=policy_with_checkpoint_interval(tmp_path, seconds))
        runtime = build_runtime(settings)
        runtimes.append(runtime)
        with transaction(runtime.session_factory) as session:
            _, key = create_user(session, "staff", "staff", "internal", runtime.policy.classifications)
        return Served(settings, runtime, key)

    yield build
    for runtime in runtimes:
        runtime.close()


def app_for(served: Served):
    from services.api.app import create_app

    return create_app(served.settings, runtime=served.runtime)  # configures logging: before capture_logs


def ask(client: TestClient, served: Served) -> None:
    response = client.post("/v1/ask", json={"question": "What is the weather on Mars?"}, headers=served.headers)
    assert response.status_code == 200, response.text


def wait_for(condition: Callable[[], object], what: str, timeout: float = 15.0) -> object:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)
    return value


def checkpointed_seqs(served: Served) -> list[int]:
    return [cp.seq for cp in load_checkpoints(served.settings.checkpoint_file) if cp.chain == "main"]


def checkpointer_threads() -> set[threading.Thread]:
    """Every app's: the session's shared test client runs one too."""
    return {t for t in threading.enumerate() if t.name == "audit-checkpointer"}


def cut_the_last_record(served: Served) -> None:
    with as_db_owner(served.runtime.engine) as conn:
        conn.execute(delete(T).where(T.c.chain == "main", T.c.seq == served.head()[0]))


def test_appended_records_are_checkpointed_within_the_interval_and_at_shutdown(serve):
    served = serve(INTERVAL)
    app, others = app_for(served), checkpointer_threads()
    with capture_logs() as logs, TestClient(app) as client:
        [ours] = checkpointer_threads() - others
        ask(client, served)
        head = served.head()
        wait_for(lambda: head[0] in checkpointed_seqs(served), "checkpoint of the new head")
        ask(client, served)  # and leave at once: only the shutdown round can sign this one
        final = served.head()
        assert final[0] == head[0] + 1
    assert not ours.is_alive()
    last = load_checkpoints(served.settings.checkpoint_file)[-1]
    assert (last.chain, last.seq, last.head_hash) == ("main", *final)
    assert len(set(checkpointed_seqs(served))) == len(checkpointed_seqs(served))

    # Only this server's lines: the session-wide test client's checkpointer logs to the same place.
    events = [e for e in logs if e["event"] == "audit.checkpoint" and e["file"] == str(served.settings.checkpoint_file)]
    assert {"chain": "main", "seq": final[0], "head_hash": final[1]}.items() <= events[-1].items()
    key = served.key_bytes().decode()
    assert not any(key in str(e) for e in logs)

    # The property that was missing: the tail is cut after the last checkpoint anyone ran by hand.
    cut_the_last_record(served)
    result = served.verify_with_the_checkpoint_file()
    assert (result.ok, result.first_bad_seq) == (False, final[0])
    assert "were deleted" in result.reason


def test_without_the_servers_checkpoints_the_same_cut_goes_unnoticed(serve):
    """The control for the test above: the policy's 0 turns the checkpointer off."""
    served = serve(0)
    with TestClient(app_for(served)) as client:
        ask(client, served)
        ask(client, served)
    assert not served.settings.checkpoint_file.exists()
    cut_the_last_record(served)
    assert served.verify_with_the_checkpoint_file().ok


def test_a_tampered_chain_is_never_checkpointed_and_the_app_keeps_serving(serve):
    served = serve(INTERVAL)
    with as_db_owner(served.runtime.engine) as conn:  # the bootstrap record the runtime appended
        conn.execute(update(T).where(T.c.chain == "main", T.c.seq == 1).values(actor="mallory"))
    app, others = app_for(served), checkpointer_threads()
    ours_file = str(served.settings.checkpoint_file)
    with capture_logs() as logs, TestClient(app) as client:
        [ours] = checkpointer_threads() - others

        def refusals() -> list[dict]:
            return [e for e in logs if e["event"] == "audit.checkpoint_refused" and e["file"] == ours_file]

        wait_for(lambda: len(refusals()) >= 2, "second refusal (it keeps trying)")
        assert client.get("/v1/health", headers=served.headers).status_code == 200
        ask(client, served)
    assert not ours.is_alive()
    assert not load_checkpoints(served.settings.checkpoint_file)
    refused = refusals()[-1]
    assert refused["chain"] == "main" and refused["log_level"] == "error"
    assert "seq 1 does not match its hash" in refused["reason"]
    assert not [e for e in logs if e["event"] == "audit.checkpoint" and e["file"] == ours_file]
