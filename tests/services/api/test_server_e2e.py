"""Against a real uvicorn server: the `openai` client, SSE streaming, and 32 concurrent
clients whose every request lands as exactly one audit record on a verifying chain."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from services.db.session import transaction
from services.users.service import create_user
from tests.services.conftest import FIXTURE_CORPUS, make_settings

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(settings, runtime):
    from services.api.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, runtime=runtime), host="127.0.0.1", port=port,
                                           log_level="warning", limit_concurrency=200))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(stack):
    with running_server(stack.settings, stack.runtime) as url:
        yield url


def test_openai_client_non_streaming(server, stack):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key=stack.keys["staff"], max_retries=0)
    completion = client.chat.completions.create(
        model="policyhub", messages=[{"role": "user", "content": "What is the daily meal allowance on business travel?"}])
    text = completion.choices[0].message.content
    assert "INR 2,000" in text
    assert "Staff Travel and Expenses Policy (TEST-EXP), clause 2.1, version 2.0, effective 2026-01-01" in text
    extension = completion.model_extra["policyhub"]
    assert extension["citations"][0]["clause"] == "2.1"
    assert [m.id for m in client.models.list().data] == ["policyhub"]


def test_openai_client_streaming_sends_the_audited_answer(server, stack):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key=stack.keys["staff"], max_retries=0)
    stream = client.chat.completions.create(
        model="policyhub", stream=True,
        messages=[{"role": "system", "content": "be brief"},
                  {"role": "user", "content": "Within how many days must a complaint be acknowledged?"}])
    pieces, finish, extension = [], None, None
    for chunk in stream:
        pieces.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
        extension = (chunk.model_extra or {}).get("policyhub") or extension
    text = "".join(pieces)
    assert finish == "stop"
    assert "2 business days" in text and "clause 1.1" in text
    audit = httpx.get(f"{server}/v1/audit/{extension['request_id']}",
                      headers={"Authorization": f"Bearer {stack.keys['compliance']}"}).json()
    assert audit["channel"] == "chat-stream"
    assert audit["payload"]["response"]["answer"] in text


def test_openai_client_sees_auth_errors(server):
    from openai import AuthenticationError, OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key="phk_wrong", max_retries=0)
    with pytest.raises(AuthenticationError):
        client.chat.completions.create(model="policyhub", messages=[{"role": "user", "content": "hi"}])


@pytest.fixture
def backend_stack(db_url, tmp_path, stack):
    """A full stack on the parametrised database (SQLite or PostgreSQL), small corpus ingested."""
    from services.runtime import build_runtime

    settings = make_settings(tmp_path / "data", database_url=db_url)
    runtime = build_runtime(settings)
    runtime.ingestion.ingest_paths([FIXTURE_CORPUS])
    with transaction(runtime.session_factory) as session:
        _, key = create_user(session, "load-tester", "staff", "internal", runtime.policy.classifications)
        _, auditor = create_user(session, "auditor", "compliance", "confidential", runtime.policy.classifications)
    yield settings, runtime, key, auditor
    runtime.close()


@pytest.mark.slow
def test_32_concurrent_clients_leave_one_record_each_on_a_verifying_chain(backend_stack):
    from sqlalchemy import func, select

    from governance.records.audit import AuditRecord

    settings, runtime, key, auditor = backend_stack
    questions = ["What is the daily meal allowance?", "How fast are complaints acknowledged?",
                 "When must expense claims be submitted?", "What is the weather on Mars?"]
    with runtime.session_factory() as s:
        before = s.scalar(select(func.count()).select_from(AuditRecord))
    n_requests = 96
    with running_server(settings, runtime) as url:
        def one(i: int) -> tuple[int, str]:
            with httpx.Client(timeout=120) as http:
                r = http.post(f"{url}/v1/ask", json={"question": questions[i % len(questions)]},
                              headers={"Authorization": f"Bearer {key}"})
                return r.status_code, r.headers["x-request-id"]

        with ThreadPoolExecutor(max_workers=32) as pool:
            codes, request_ids = zip(*pool.map(one, range(n_requests)), strict=True)
        assert list(codes) == [200] * n_requests
        assert len(set(request_ids)) == n_requests
        verify = httpx.get(f"{url}/v1/audit/verify", headers={"Authorization": f"Bearer {auditor}"}).json()
    assert verify["ok"] is True, verify
    with runtime.session_factory() as s:
        seqs = s.scalars(select(AuditRecord.seq).order_by(AuditRecord.seq)).all()
        asks = s.scalar(select(func.count()).select_from(AuditRecord).where(AuditRecord.request_id.in_(request_ids)))
    assert asks == n_requests
    assert len(seqs) == before + n_requests
    assert seqs == list(range(1, len(seqs) + 1))  # no gaps, no duplicates
