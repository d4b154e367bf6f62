"""A real policyhub stack for service and API tests: SQLite via Alembic, the bundled
embedding model, a Qdrant Edge shard, and a small corpus ingested through the pipeline.

`recording_endpoint`: a tiny OpenAI-compatible HTTP server in a thread that records every
request body it receives and replies as JSON or, when asked to stream, as server-sent events. It stands in for a cloud zone, so a test can assert that nothing
confidential ever reached it.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.config import Settings
from services.db.session import transaction, upgrade
from services.users.service import create_user

FIXTURE_CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "corpus"

# Filler clauses give the long document ~750 tokens so it is one 500-800 token chunk
# whose LAST clause holds a fact far past the model's 256-word-piece window.
LONG_TOPICS = [
    "Passwords for privileged accounts are rotated every ninety days and never shared between administrators",
    "Laptops carry full-disk encryption and lock after five minutes without input from the user",
    "Remote access to the core banking network requires the corporate VPN and a hardware token",
    "Vendors receive access only for the duration of the contract and only to named systems",
    "Security patches rated critical are applied to internet-facing servers within seventy-two hours",
    "Removable media is blocked on branch terminals unless the branch manager grants a written exception",
    "Phishing simulations are run every quarter and repeat clickers receive mandatory refresher training",
    "Firewall rule changes are peer reviewed and recorded in the change management system before release",
    "Cloud storage accounts are provisioned only through the approved enterprise tenancy and never personal accounts",
    "Visitors to the data centre are escorted at all times and signed in at the reception desk",
    "Source code repositories enforce signed commits and two approvals before merging to the main branch",
    "Security incidents are logged in the incident register with a severity rating and an owner",
    "Access reviews for payment systems are performed monthly by the application owner and the risk team",
    "Printers in branches release documents only after the member of staff badges in at the device",
    "Logs from critical systems are forwarded to the security operations centre and kept tamper evident",
    "Screens facing customers in branches are fitted with privacy filters to prevent shoulder surfing",
    "Wireless networks for guests are separated from the corporate network and carry no internal routes",
    "Disposal of hard drives follows degaussing and physical shredding witnessed by two members of staff",
]
LONG_FACT = "Encrypted backup tapes are retained in the Nashik vault for seven years before witnessed destruction."


def write_long_policy(folder: Path) -> str:
    lines = ["---", "policy_id: TEST-ISEC", "title: Information Security Baseline", 'version: "1.0"',
             "effective_date: 2025-01-01", "classification: internal", "owner: Chief Information Security Officer",
             "---", "# Information Security Baseline", "## 5. Controls"]
    for i, topic in enumerate(LONG_TOPICS, start=1):
        lines.append(f"5.{i} {topic}; exceptions need the written approval of the Chief Information Security Officer.")
    last = f"5.{len(LONG_TOPICS) + 1}"
    lines.append(f"{last} {LONG_FACT}")
    (folder / "isec-baseline.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return last


@dataclass
class Stack:
    settings: Settings
    runtime: object
    keys: dict[str, str]
    long_last_clause: str
    corpus: Path


def make_settings(data_dir: Path, **overrides) -> Settings:
    return Settings(env="test", data_dir=data_dir, **overrides)


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    from services.runtime import build_runtime

    root = tmp_path_factory.mktemp("stack")
    corpus = root / "corpus"
    shutil.copytree(FIXTURE_CORPUS, corpus)
    last = write_long_policy(corpus)
    settings = make_settings(root / "data")
    upgrade(settings.sqlalchemy_url)
    runtime = build_runtime(settings)
    summary = runtime.ingestion.ingest_paths([corpus])
    assert not summary.rejected, [r.error for r in summary.rejected]
    keys = {}
    users = {"staff": ("staff", "internal"), "public-staff": ("staff", "public"),
             "compliance": ("compliance", "confidential"), "model_risk": ("model_risk", "confidential"),
             "admin": ("admin", "confidential")}
    with transaction(runtime.session_factory) as session:
        for name, (role, clearance) in users.items():
            _, keys[name] = create_user(session, name, role, clearance, runtime.policy.classifications)
    yield Stack(settings, runtime, keys, last, corpus)
    runtime.close()


@pytest.fixture(scope="session")
def client(stack):
    from fastapi.testclient import TestClient

    from services.api.app import create_app

    with TestClient(create_app(stack.settings, runtime=stack.runtime)) as test_client:
        yield test_client


def auth(stack: Stack, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.keys[who]}"}


@pytest.fixture
def audit_commit_fails(stack, monkeypatch):
    """The query service's database refuses to commit any transaction holding an audit record."""
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import sessionmaker

    from governance.records.audit import AuditRecord

    factory = sessionmaker(stack.runtime.engine, expire_on_commit=False)

    @event.listens_for(factory, "before_flush")
    def note_audit(session, flush_context, instances):
        if any(isinstance(obj, AuditRecord) for obj in session.new):
            session.info["audit"] = True

    @event.listens_for(factory, "before_commit")
    def refuse(session):
        if session.info.pop("audit", False):
            raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(stack.runtime.query, "session_factory", factory)


@dataclass
class RecordingEndpoint:
    """An OpenAI-compatible endpoint that records what it is sent and replies as told."""

    base_url: str
    requests: list[dict] = field(default_factory=list)
    reply: Callable[[dict], str] = lambda body: "recorded"
    status: int = 200
    delay_s: float = 0.0

    def reset(self) -> None:
        self.requests.clear()
        self.reply, self.status, self.delay_s = (lambda body: "recorded"), 200, 0.0

    def received_text(self) -> str:
        return "\n".join(json.dumps(body) for body in self.requests)


def _handler(endpoint: RecordingEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, body: dict, content: str, prompt_tokens: int) -> None:
            """The reply as server-sent events: one word a chunk, the finish, then usage if asked for."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()  # no length: the body ends when the connection closes
            base = {"id": f"rec-{len(endpoint.requests)}", "object": "chat.completion.chunk", "created": 0,
                    "model": body.get("model", "cloud-model")}
            words = content.split(" ")
            choices = [[{"index": 0, "delta": {"content": w if i == 0 else f" {w}"}, "finish_reason": None}]
                       for i, w in enumerate(words)]
            choices.append([{"index": 0, "delta": {}, "finish_reason": "stop"}])
            events = [{**base, "choices": c} for c in choices]
            if (body.get("stream_options") or {}).get("include_usage"):
                events.append({**base, "choices": [], "usage": {
                    "prompt_tokens": prompt_tokens, "completion_tokens": len(content.split()),
                    "total_tokens": prompt_tokens + len(content.split())}})
            for event in events:
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")

        def do_GET(self) -> None:  # noqa: N802
            self._send(200, {"object": "list", "data": [{"id": "cloud-model", "object": "model"}]})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            endpoint.requests.append(body)
            if endpoint.delay_s:
                time.sleep(endpoint.delay_s)
            if endpoint.status != 200:
                self._send(endpoint.status, {"error": {"message": "recording endpoint told to fail"}})
                return
            content = endpoint.reply(body)
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
            if body.get("stream"):
                self._stream(body, content, prompt_tokens)
                return
            self._send(200, {
                "id": f"rec-{len(endpoint.requests)}", "object": "chat.completion", "created": 0,
                "model": body.get("model", "cloud-model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(content.split()),
                          "total_tokens": prompt_tokens + len(content.split())}})

    return Handler


@pytest.fixture(scope="session")
def _recording_server() -> Iterator[RecordingEndpoint]:
    endpoint = RecordingEndpoint(base_url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(endpoint))
    endpoint.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield endpoint
    server.shutdown()
    server.server_close()


@pytest.fixture
def recording_endpoint(_recording_server: RecordingEndpoint) -> RecordingEndpoint:
    """The session's recording endpoint, emptied and reset for this test."""
    _recording_server.reset()
    return _recording_server


def policy_with_cloud_model(folder: Path, base_url: str, name: str, tier: int) -> Path:
    """The reviewed policy file plus an approved-able cloud model at `base_url` (a recording endpoint)."""
    import yaml

    from governance.policy import DEFAULT_POLICY_PATH

    document = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    document["models"].append({
        "name": name, "version": "1", "tier": tier, "zone": "cloud", "kind": "openai", "base_url": base_url,
        "api_model": name, "price_in_per_1k": 0.01, "price_out_per_1k": 0.03, "context_tokens": 8192,
        "typical_latency_ms": 3000, "timeout_s": 10})
    policy_file = folder / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return policy_file


def run_cli(*args: str):
    """Run the `policyhub` command line in-process, wide enough that no message wraps.

    Parse machine output (`--json`) from `result.stdout`: `result.output` also holds stderr,
    where a server thread of another test (the session `client`'s audit checkpointer) may log
    a line at any moment.
    """
    from typer.testing import CliRunner

    from services.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """Settings pointing at a throw-away data dir, for commands that build their own runtime."""
    from services.config import get_settings

    monkeypatch.setenv("POLICYHUB_ENV", "test")
    monkeypatch.setenv("POLICYHUB_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()
