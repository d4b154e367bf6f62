"""Tier-2/3: any OpenAI-compatible chat endpoint (llama.cpp server, vLLM, a VPC or cloud API).

Retries are off (`max_retries=0`): the escalation loop owns retrying, on the next candidate,
within the request's retry budget, and every try is recorded there.

The answer is streamed, so that a model caught in a loop is stopped where the loop shows
instead of running (and being paid for) to `max_tokens`. As the words of the answer arrive
they are judged with the verifier's own rule (`loop_words`, `repeated_run` at the end), on
whole words only: a loop found there is one verification would fail in the finished answer
too. On a loop the response is closed, which drops the connection; llama.cpp's server and
vLLM stop generating when their client goes away. The answer so far returns with finish
"loop", and the escalation fails it like the in-process Tier-1 decoder's loops.

`spec.timeout_s` bounds both the wait for each read (a stream that stalls that long is a
`GenerationTimeout`, as a server that never answers is) and the whole answer, checked as each
chunk arrives, so a server trickling tokens cannot hold a request past its timeout either.

Tokens: the server's `usage` when it sends one; it is asked for with
`stream_options.include_usage` and comes in the stream's last chunk. A stream cut on a loop
never gets that far, and some servers ignore the option (llama-cpp-python's server does).
Then output tokens are the chunks that carried text, since llama.cpp's server and vLLM send
one token per chunk, but never fewer than the answer's characters / `CHARS_PER_TOKEN` (a
server may send several tokens a chunk), and input tokens are the prompt's characters /
`CHARS_PER_TOKEN`. So cost is an estimate there, never silently zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from governance.policy import ModelSpec
from governance.redaction import redact_url, redact_urls
from services.generation.base import (FINISH_LENGTH, FINISH_LOOP, FINISH_STOP, Generation, GenerationError,
                                      GenerationTimeout, loop_words, repeated_run)

# Rough size of a token for endpoints that leave `usage` out, so cost is never silently zero.
CHARS_PER_TOKEN = 4


@dataclass
class _StreamedAnswer:
    text: str = ""
    chunks_with_text: int = 0
    finish_reason: str | None = None
    looped: bool = False
    usage: object | None = None  # the server's CompletionUsage, when it sent one
    saw_choices: bool = False
    overdue: bool = False  # the deadline passed before the stream ended


class OpenAICompatibleGenerator:
    def __init__(self, spec: ModelSpec, base_url: str, api_key: str | None = None) -> None:
        if spec.kind != "openai":
            raise ValueError(f"model {spec.key} is not an OpenAI-compatible model")
        self.spec = spec
        self.base_url = base_url
        self.shown_url = redact_url(base_url)  # errors land in audit records and logs: no credentials in them
        self._api_key = api_key or "none"  # local servers accept any key; the client insists on one
        self._client = None

    def warm_up(self) -> None:
        """Build the HTTP client. No request is sent: a down endpoint must not stop the service starting."""
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(base_url=self.base_url, api_key=self._api_key, timeout=self.spec.timeout_s,
                                  max_retries=0)

    def environment(self) -> dict:
        return {"runtime": "OpenAI-compatible endpoint", "endpoint": self.shown_url, "api_model": self.model_name,
                "cpu": "not observable: the server's hardware and build are its operator's"}

    @property
    def model_name(self) -> str:
        return self.spec.api_model or self.spec.name

    def generate(self, messages: list[dict], max_tokens: int = 256, grammar: str | None = None) -> Generation:
        """`grammar` is not sent: GBNF is a llama.cpp extension that vLLM and cloud APIs reject or ignore."""
        import openai

        if self._client is None:
            raise GenerationError(f"model {self.spec.key} was not warmed up")
        started = time.perf_counter()
        answer = _StreamedAnswer()
        try:
            stream = self._client.chat.completions.create(model=self.model_name, messages=messages, temperature=0,
                                                          max_tokens=max_tokens, stream=True,
                                                          stream_options={"include_usage": True})
            with stream:  # leaving it closes the response: on a loop or when overdue, the server sees its client go
                self._read(stream, answer, started + self.spec.timeout_s)
        except openai.APITimeoutError as exc:  # no answer, or a stream that stalled part-way
            raise GenerationTimeout(f"model {self.spec.key}: no answer within {self.spec.timeout_s:g} s",
                                    *_tokens(answer, messages)) from exc
        except openai.APIConnectionError as exc:
            raise GenerationError(f"model {self.spec.key}: cannot reach {self.shown_url}: "
                                  f"{redact_urls(str(exc))}") from exc
        except openai.APIStatusError as exc:
            raise GenerationError(f"model {self.spec.key}: HTTP {exc.status_code} from {self.shown_url}") from exc
        except Exception as exc:  # malformed JSON and the like: still a failed generation, not a crash
            raise GenerationError(f"model {self.spec.key}: {type(exc).__name__}: {redact_urls(str(exc))}") from exc
        if answer.overdue:  # the whole answer took too long: what streamed is charged
            raise GenerationTimeout(f"model {self.spec.key}: the answer was not finished within "
                                    f"{self.spec.timeout_s:g} s", *_tokens(answer, messages))
        latency_ms = (time.perf_counter() - started) * 1000
        if not answer.saw_choices:
            raise GenerationError(f"model {self.spec.key}: the response has no choices")
        text = answer.text.strip()
        input_tokens, output_tokens = _tokens(answer, messages)
        if answer.looped:
            finish = FINISH_LOOP
        else:
            finish = FINISH_LENGTH if answer.finish_reason == "length" else FINISH_STOP
        return Generation(text=text, input_tokens=input_tokens, output_tokens=output_tokens, latency_ms=latency_ms,
                          finish=finish)

    def _read(self, stream, answer: _StreamedAnswer, deadline: float) -> None:  # noqa: ANN001 (a Stream)
        """Read the chunks into `answer` until the stream ends, the answer so far ends in a loop, or
        `deadline` passes (`answer.overdue`)."""
        words: list[str] = []
        judged = 0  # characters of the answer already split into `words`
        for chunk in stream:
            if getattr(chunk, "usage", None) is not None:
                answer.usage = chunk.usage
            for choice in getattr(chunk, "choices", None) or []:
                answer.saw_choices = True
                answer.finish_reason = getattr(choice, "finish_reason", None) or answer.finish_reason
                piece = getattr(getattr(choice, "delta", None), "content", None)
                if piece:
                    answer.text += piece
                    answer.chunks_with_text += 1
            whole = _whole_words(answer.text)
            if len(whole) > judged:
                words += loop_words(whole[judged:])
                judged = len(whole)
                if repeated_run(words, at_end=True) is not None:
                    answer.looped = True
                    return
            if time.perf_counter() > deadline:
                answer.overdue = True
                return


def _tokens(answer: _StreamedAnswer, messages: list[dict]) -> tuple[int, int]:
    """(input, output) tokens of a whole or cut-off stream: the server's usage, else the estimate.

    Before any chunk arrives nothing is known to have been processed: (0, 0). After one, the
    prompt was read, and is charged even if no text came yet.
    """
    usage = answer.usage
    if usage is not None and usage.prompt_tokens is not None and usage.completion_tokens is not None:
        return int(usage.prompt_tokens), int(usage.completion_tokens)
    if not answer.saw_choices:
        return 0, 0
    text = answer.text.strip()
    input_tokens = sum(len(str(m.get("content", ""))) for m in messages) // CHARS_PER_TOKEN + 1
    return input_tokens, max(answer.chunks_with_text, len(text) // CHARS_PER_TOKEN + (1 if text else 0))


def _whole_words(text: str) -> str:
    """`text` without its last word unless whitespace follows it: that word may still be arriving ("4." of "4.2").

    It ends just before whitespace, so its words are a prefix of the words of any longer text.
    """
    if not text or text[-1].isspace():
        return text.rstrip()
    head = text.rsplit(None, 1)
    return head[0] if len(head) == 2 else ""
