"""Question answering: the native API and an OpenAI-compatible chat completions API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.api.deps import AnyUser, RuntimeDep, api_key_from, get_runtime
from services.errors import InvalidRequest, Unauthenticated
from services.query.schemas import AskCreate, AskRead
from services.users.service import authenticate

router = APIRouter(prefix="/v1", tags=["ask"])
OPENAI_MODEL_ID = "policyhub"
ASK_PATH, CHAT_PATH = "/v1/ask", "/v1/chat/completions"


@router.post(ASK_PATH.removeprefix("/v1"), response_model=AskRead)
async def ask(body: AskCreate, request: Request, principal: AnyUser, runtime: RuntimeDep) -> AskRead:
    """Answer a policy question with cited clauses, or "Not available in policy"."""
    return await run_in_threadpool(runtime.query.ask, principal, body, "api", request.state.request_id)


def audit_malformed(request: Request, body: object, detail: str) -> None:
    """Audit a question refused as malformed, as `QueryService.ask` audits every other outcome.

    FastAPI parses a JSON body before the endpoint's dependencies run, so a malformed one
    arrives here unauthenticated; a caller who cannot be identified is not audited (no 401 is).
    """
    runtime = get_runtime(request)
    principal = getattr(request.state, "principal", None)
    if principal is None:
        try:
            with runtime.session_factory() as session:
                principal = authenticate(session, api_key_from(request))
        except Unauthenticated:
            return
    fields = body if isinstance(body, dict) else {}
    if request.url.path == ASK_PATH:
        channel, question = "api", fields.get("question")
    else:
        channel, question = ("chat-stream" if fields.get("stream") is True else "chat"), None
        messages = fields.get("messages")
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"] \
            if isinstance(messages, list) else []
        if users:
            question = users[-1].get("content")
    runtime.query.audit_rejected(principal, InvalidRequest(detail), channel, request.state.request_id, question)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionCreate(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = OPENAI_MODEL_ID
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    classification: str | None = None  # policyhub extension (extra_body)
    as_of: date | None = None
    sla_ms: int | None = None


def _message_text(message: ChatMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    if isinstance(message.content, list):
        return " ".join(part.get("text", "") for part in message.content if part.get("type") == "text")
    return ""


def format_with_citations(answer: AskRead) -> str:
    """Citations in the message text, for chat front ends that show only text."""
    if not answer.citations:
        return answer.answer
    lines = [answer.answer, "", "Sources:"]
    for c in answer.citations:
        lines.append(f"- {c.policy_title} ({c.policy_id}), clause {c.clause}, version {c.version}, "
                     f"effective {c.effective_date}")
    return "\n".join(lines)


@router.get("/models")
def list_models(principal: AnyUser) -> dict:
    """OpenAI-compatible model list: the governed hub is one model to chat clients."""
    return {"object": "list", "data": [{"id": OPENAI_MODEL_ID, "object": "model", "owned_by": "policyhub"}]}


@router.post(CHAT_PATH.removeprefix("/v1"))
async def chat_completions(body: ChatCompletionCreate, request: Request, principal: AnyUser,
                           runtime: RuntimeDep):  # noqa: ANN201
    """OpenAI-compatible chat completions (non-streaming and SSE); the last user message is the question."""
    # Raised as validation errors so that, like a body the schema rejects, they are audited.
    user_messages = [m for m in body.messages if m.role == "user"]
    if not user_messages:
        raise RequestValidationError([{"loc": ("body", "messages"),
                                       "msg": "must contain at least one message with role 'user'"}],
                                     body=body.model_dump(mode="json"))
    try:
        ask_body = AskCreate(question=_message_text(user_messages[-1]), classification=body.classification,
                             as_of=body.as_of, sla_ms=body.sla_ms)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False), body=body.model_dump(mode="json")) from exc
    channel = "chat-stream" if body.stream else "chat"
    # The whole answer is audited before the first byte is sent, streaming or not.
    answer = await run_in_threadpool(runtime.query.ask, principal, ask_body, channel, request.state.request_id)
    content = format_with_citations(answer)
    created = int(time.time())
    extension = answer.model_dump(mode="json")
    completion_id = f"chatcmpl-{answer.request_id}"
    if not body.stream:
        return {
            "id": completion_id, "object": "chat.completion", "created": created, "model": OPENAI_MODEL_ID,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "policyhub": extension,
        }
    return StreamingResponse(_sse(completion_id, created, content, extension), media_type="text/event-stream")


def _sse(completion_id: str, created: int, content: str, extension: dict) -> Iterator[str]:
    def chunk(delta: dict, finish: str | None = None, extra: dict | None = None) -> str:
        data = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                "model": OPENAI_MODEL_ID, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if extra:
            data["policyhub"] = extra
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    words = content.split(" ")
    for i in range(0, len(words), 8):
        piece = " ".join(words[i : i + 8])
        yield chunk({"content": piece if i == 0 else " " + piece})
    yield chunk({}, "stop", extension)
    yield "data: [DONE]\n\n"
