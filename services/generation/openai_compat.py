"""Tier-2/3: any OpenAI-compatible chat endpoint (llama.cpp server, vLLM, a VPC or cloud API).

Retries are off (`max_retries=0`): the escalation loop owns retrying, on the next candidate,
within the request's retry budget, and every try is recorded there.
"""

from __future__ import annotations

import time

from governance.policy import ModelSpec
from governance.redaction import redact_url, redact_urls
from services.generation.base import FINISH_LENGTH, FINISH_STOP, Generation, GenerationError, GenerationTimeout

# Rough size of a token for endpoints that leave `usage` out, so cost is never silently zero.
CHARS_PER_TOKEN = 4


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

    @property
    def model_name(self) -> str:
        return self.spec.api_model or self.spec.name

    def generate(self, messages: list[dict], max_tokens: int = 256, grammar: str | None = None) -> Generation:
        """`grammar` is not sent: GBNF is a llama.cpp extension that vLLM and cloud APIs reject or ignore."""
        import openai

        if self._client is None:
            raise GenerationError(f"model {self.spec.key} was not warmed up")
        started = time.perf_counter()
        try:
            response = self._client.chat.completions.create(model=self.model_name, messages=messages,
                                                            temperature=0, max_tokens=max_tokens)
        except openai.APITimeoutError as exc:
            raise GenerationTimeout(f"model {self.spec.key}: no answer within {self.spec.timeout_s:g} s") from exc
        except openai.APIConnectionError as exc:
            raise GenerationError(f"model {self.spec.key}: cannot reach {self.shown_url}: "
                                  f"{redact_urls(str(exc))}") from exc
        except openai.APIStatusError as exc:
            raise GenerationError(f"model {self.spec.key}: HTTP {exc.status_code} from {self.shown_url}") from exc
        except Exception as exc:  # malformed JSON and the like: still a failed generation, not a crash
            raise GenerationError(f"model {self.spec.key}: {type(exc).__name__}: {redact_urls(str(exc))}") from exc
        latency_ms = (time.perf_counter() - started) * 1000
        if not getattr(response, "choices", None) or response.choices[0].message is None:
            raise GenerationError(f"model {self.spec.key}: the response has no choices")
        text = (response.choices[0].message.content or "").strip()
        usage = response.usage
        if usage is not None and usage.prompt_tokens is not None and usage.completion_tokens is not None:
            input_tokens, output_tokens = int(usage.prompt_tokens), int(usage.completion_tokens)
        else:
            input_tokens = sum(len(str(m.get("content", ""))) for m in messages) // CHARS_PER_TOKEN + 1
            output_tokens = len(text) // CHARS_PER_TOKEN + (1 if text else 0)
        finish = FINISH_LENGTH if response.choices[0].finish_reason == "length" else FINISH_STOP
        return Generation(text=text, input_tokens=input_tokens, output_tokens=output_tokens, latency_ms=latency_ms,
                          finish=finish)
