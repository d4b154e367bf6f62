"""The streamed Tier-2/3 call: finish reasons and token counts through the real llama.cpp server, and
a loop cut off, a stall, a trickle, a silent server and a server without usage against a real local
streaming server."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from openai import OpenAI

from governance.policy import ModelSpec, load_policy
from services.generation.base import (FINISH_LENGTH, FINISH_LOOP, FINISH_STOP, GenerationTimeout, build_generator,
                                      generation_cost)
from services.generation.openai_compat import CHARS_PER_TOKEN, OpenAICompatibleGenerator
from services.generation.prompts import build_messages
from services.query.verify import RetrievedClause, repetition

pytestmark = pytest.mark.integration

ONPREM = load_policy().model("onprem-large@1").model_copy(update={"timeout_s": 120.0})
REMOTE = ModelSpec(name="remote-large", version="1", tier=2, zone="onprem", kind="openai", api_model="remote-large",
                   price_in_per_1k=0.001, price_out_per_1k=0.002, context_tokens=8192, typical_latency_ms=800,
                   timeout_s=5)
PUBLIC = RetrievedClause(ref="C1", policy_id="CUST-CHARTER", policy_title="Customer Charter", clause="2.1",
                         version="1", effective_date="2024-07-01", classification="public", score=0.9,
                         text="Complaints are acknowledged within 2 working days and resolved within 30 days.")
MESSAGES = [{"role": "user", "content": "What does Band B pay?"}]
LOOPING = "[1] Band B: INR 2,200;"  # the tiering bench's observed loop, said forever
LOOP_CHUNKS = 5000  # what the looping server would send if nobody stopped reading


def estimate(chars: int) -> int:
    """The generator's chars/4 token estimate, for a text of `chars` characters."""
    return chars // CHARS_PER_TOKEN + (1 if chars else 0)


def prompt_estimate(messages: list[dict]) -> int:
    return sum(len(str(m.get("content", ""))) for m in messages) // CHARS_PER_TOKEN + 1


# --- the real llama.cpp server -------------------------------------------------------------------


def server_sends_usage(client: OpenAI, messages: list[dict]) -> bool:
    """Does the server honour `stream_options.include_usage`? (llama-cpp-python's server 0.3.x does not.)"""
    chunks = client.chat.completions.create(model=ONPREM.api_model, messages=messages, temperature=0, max_tokens=2,
                                            stream=True, stream_options={"include_usage": True})
    return any(chunk.usage is not None for chunk in chunks)


@pytest.mark.parametrize(("question", "max_tokens", "finish"), [
    ("What is 2,345 + 1,002? Show digits.", 40, FINISH_STOP),  # digits: more tokens than chars/4
    ("How fast are complaints acknowledged?", 3, FINISH_LENGTH),
])
def test_real_server_streams_finish_and_tokens_as_the_unstreamed_call(llama_server: str, question: str,
                                                                      max_tokens: int, finish: str) -> None:
    messages = build_messages(question, [PUBLIC])
    client = OpenAI(base_url=llama_server, api_key="none", max_retries=0, timeout=120)

    def unstreamed():
        return client.chat.completions.create(model=ONPREM.api_model, messages=messages, temperature=0,
                                              max_tokens=max_tokens)

    unstreamed()  # the server's first pass over a new prompt can decode differently from its cached passes
    reference = unstreamed()
    generator = build_generator(ONPREM, llama_server)
    generator.warm_up()
    result = generator.generate(messages, max_tokens=max_tokens)

    assert result.finish == finish == reference.choices[0].finish_reason
    assert result.text == reference.choices[0].message.content.strip()
    served = reference.usage.completion_tokens
    if server_sends_usage(client, messages):
        assert (result.input_tokens, result.output_tokens) == (reference.usage.prompt_tokens, served)
    else:  # one content chunk per token, never below the chars/4 estimate; the prompt estimated
        assert result.output_tokens == max(served, estimate(len(result.text)))
        assert result.input_tokens == prompt_estimate(messages)
        assert abs(result.input_tokens - reference.usage.prompt_tokens) < 0.2 * reference.usage.prompt_tokens
    if finish == FINISH_STOP:
        assert served > estimate(len(result.text)), "the answer no longer shows chunks being counted"


# --- a local streaming server ---------------------------------------------------------------------


@dataclass
class StreamScript:
    """What the streaming server sends: `pieces` of content, one a chunk, `pause_s` apart."""

    pieces: Callable[[], Iterator[str]] = lambda: iter(["Complaints", " are", " acknowledged", "."])
    pause_s: float = 0.0
    stall_after: int | None = None  # chunks sent before the server goes quiet
    stall_s: float = 0.0
    silent_s: float = 0.0  # before the response starts: the server has not begun the answer
    finish_reason: str = "stop"
    send_usage: bool = True  # when the client asks for it
    usage: tuple[int, int] = (42, 7)


@dataclass
class StreamingServer:
    base_url: str = ""
    script: StreamScript = field(default_factory=StreamScript)
    requests: list[dict] = field(default_factory=list)
    chunks_sent: int = 0
    finished: threading.Event = field(default_factory=threading.Event)  # the handler has returned
    disconnected: threading.Event = field(default_factory=threading.Event)  # a write failed: the client left


def _streaming_handler(server: StreamingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # chunked and keep-alive, as uvicorn serves llama.cpp's and vLLM's streams

        def log_message(self, *args) -> None:
            pass

        def _event(self, payload: dict | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            body = f"data: {data}\n\n".encode()
            self.wfile.write(f"{len(body):x}\r\n".encode() + body + b"\r\n")
            self.wfile.flush()

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            server.requests.append(body)
            script = server.script
            time.sleep(script.silent_s)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
            try:
                self._event({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
                for sent, piece in enumerate(script.pieces()):
                    if script.stall_after is not None and sent == script.stall_after:
                        time.sleep(script.stall_s)
                    self._event({**base, "choices": [{"index": 0, "delta": {"content": piece},
                                                      "finish_reason": None}]})
                    server.chunks_sent += 1
                    if script.pause_s:
                        time.sleep(script.pause_s)
                self._event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": script.finish_reason}]})
                if script.send_usage and (body.get("stream_options") or {}).get("include_usage"):
                    prompt_tokens, completion_tokens = script.usage
                    self._event({**base, "choices": [], "usage": {
                        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens}})
                self._event("[DONE]")
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                server.disconnected.set()
                self.close_connection = True
            finally:
                server.finished.set()

    return Handler


@pytest.fixture
def streaming_server() -> Iterator[StreamingServer]:
    server = StreamingServer()
    http = ThreadingHTTPServer(("127.0.0.1", 0), _streaming_handler(server))
    http.daemon_threads = True
    server.base_url = f"http://127.0.0.1:{http.server_address[1]}/v1"
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield server
    http.shutdown()
    http.server_close()


def remote(server: StreamingServer, timeout_s: float = 5) -> OpenAICompatibleGenerator:
    generator = OpenAICompatibleGenerator(REMOTE.model_copy(update={"timeout_s": timeout_s}), server.base_url)
    generator.warm_up()
    return generator


def looping_words() -> Iterator[str]:
    words = LOOPING.split()
    return (f" {w}" if i else w for i, w in enumerate(itertools.islice(itertools.cycle(words), LOOP_CHUNKS)))


def test_a_loop_is_cut_off_and_the_connection_closed(streaming_server: StreamingServer) -> None:
    streaming_server.script = StreamScript(pieces=looping_words, pause_s=0.002)  # 10 s of loop, if read to the end
    started = time.perf_counter()
    result = remote(streaming_server).generate(MESSAGES, max_tokens=LOOP_CHUNKS)
    assert result.finish == FINISH_LOOP
    assert time.perf_counter() - started < 3
    assert repetition(result.text) is not None  # the verifier calls it a loop too
    assert streaming_server.disconnected.wait(5), "the server never saw its client go"
    assert streaming_server.finished.wait(5)
    assert streaming_server.chunks_sent < LOOP_CHUNKS / 10
    # no usage comes on a cut stream: one token per content chunk read, the prompt estimated
    assert 8 <= result.output_tokens < 40
    assert result.output_tokens >= estimate(len(result.text))
    assert result.input_tokens == prompt_estimate(MESSAGES)
    assert generation_cost(REMOTE, result.input_tokens, result.output_tokens) > 0


def test_a_loop_is_judged_on_whole_words(streaming_server: StreamingServer) -> None:
    """"... Slab 5" would read as a loop while "000" is still on its way; the verifier passes the whole answer."""
    pieces = ["Slab", " 5", " Slab", " 5", " Slab", " 5", " Slab", " 5", "000", " applies", "."]
    answer = "".join(pieces)
    assert repetition(answer) is None and repetition("".join(pieces[:8])) is not None
    streaming_server.script = StreamScript(pieces=lambda: iter(pieces), send_usage=False)
    result = remote(streaming_server).generate(MESSAGES)
    assert (result.text, result.finish) == (answer, FINISH_STOP)


def test_content_chunks_are_counted_above_the_estimate(streaming_server: StreamingServer) -> None:
    answer = "Band B pays INR 2,200 per night."
    streaming_server.script = StreamScript(pieces=lambda: iter(answer), send_usage=False)  # a character a chunk
    result = remote(streaming_server).generate(MESSAGES)
    assert (result.text, result.finish) == (answer, FINISH_STOP)
    assert result.output_tokens == len(answer) > estimate(len(answer))


def test_the_environment_names_the_endpoint_without_its_credentials() -> None:
    generator = OpenAICompatibleGenerator(REMOTE, "https://svc:pa55@llm.bank.internal/v1")
    env = generator.environment()
    assert env["api_model"] == "remote-large" and "llm.bank.internal" in env["endpoint"]
    assert "pa55" not in str(env)


def test_the_request_streams_asks_for_usage_and_uses_it(streaming_server: StreamingServer) -> None:
    result = remote(streaming_server).generate(MESSAGES, max_tokens=64, grammar='root ::= "x"')
    (body,) = streaming_server.requests
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 64 and body["temperature"] == 0 and "grammar" not in body
    assert (result.text, result.finish) == ("Complaints are acknowledged.", FINISH_STOP)
    assert (result.input_tokens, result.output_tokens) == (42, 7)  # the server's usage, not an estimate


def test_a_server_that_sends_no_usage_is_counted(streaming_server: StreamingServer) -> None:
    answer = "Complaints are acknowledged within 2 working days [C1]."
    streaming_server.script = StreamScript(pieces=lambda: iter([answer]), send_usage=False, finish_reason="length")
    result = remote(streaming_server).generate(MESSAGES)
    assert (result.text, result.finish) == (answer, FINISH_LENGTH)
    # one chunk holding the whole answer: the chars/4 estimate, not 1
    assert result.output_tokens == estimate(len(answer))
    assert result.input_tokens == prompt_estimate(MESSAGES)


def test_a_stream_that_stalls_past_the_timeout_is_a_timeout(streaming_server: StreamingServer) -> None:
    streaming_server.script = StreamScript(pieces=lambda: iter(["Complaints", " are", " acknowledged", " within"]),
                                           stall_after=2, stall_s=3)
    started = time.perf_counter()
    with pytest.raises(GenerationTimeout) as stalled:
        remote(streaming_server, timeout_s=0.5).generate(MESSAGES)
    assert time.perf_counter() - started < 2
    # what streamed before the stall is charged: the prompt, and two chunks of "Complaints are"
    assert stalled.value.input_tokens == prompt_estimate(MESSAGES)
    assert stalled.value.output_tokens == max(2, estimate(len("Complaints are")))


def test_a_server_that_never_starts_answering_is_a_timeout_charging_nothing(streaming_server: StreamingServer) -> None:
    streaming_server.script = StreamScript(silent_s=3)
    with pytest.raises(GenerationTimeout, match="no answer within 0.5 s") as silent:
        remote(streaming_server, timeout_s=0.5).generate(MESSAGES)
    assert (silent.value.input_tokens, silent.value.output_tokens) == (0, 0)  # nothing is known to be processed


def test_a_trickling_stream_is_cut_at_the_timeout(streaming_server: StreamingServer) -> None:
    """No read waits long, but the whole answer is still held to `timeout_s`."""
    streaming_server.script = StreamScript(pieces=lambda: (f" clause {n}" for n in range(100)), pause_s=0.05)
    started = time.perf_counter()
    with pytest.raises(GenerationTimeout, match="not finished within 0.5 s") as cut:
        remote(streaming_server, timeout_s=0.5).generate(MESSAGES)
    assert time.perf_counter() - started < 1.5
    assert streaming_server.disconnected.wait(5)  # and the connection is dropped there too
    # the chunks that did arrive are paid for
    assert cut.value.input_tokens == prompt_estimate(MESSAGES)
    assert 1 <= cut.value.output_tokens <= estimate(len("".join(f" clause {n}" for n in range(100))))
