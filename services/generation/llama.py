"""Tier-1: a small GGUF model run in-process through llama-cpp-python.

The model is loaded once in `warm_up()`. A llama.cpp context is not thread-safe, so calls are
serialised by a lock; a request that cannot get the lock within its timeout fails rather
than queueing without bound. The timeout is enforced inside llama.cpp through its abort
callback, which stops decoding between batches, so a slow generation cannot overrun
`spec.timeout_s` by more than one decode step.
"""

from __future__ import annotations

import ctypes
import threading
import time
from pathlib import Path

from governance.policy import ModelSpec
from services.generation.base import Generation, GenerationError, GenerationTimeout, resolve_model_path

DEFAULT_SEED = 42  # fixed so the same prompt gives the same answer (replayable audits, stable tests)

class LlamaCppGenerator:
    def __init__(self, spec: ModelSpec, n_threads: int = 2, seed: int = DEFAULT_SEED) -> None:
        if spec.kind != "llama_cpp" or not spec.path:
            raise ValueError(f"model {spec.key} is not a llama_cpp model with a path")
        self.spec = spec
        self.n_threads = n_threads
        self.seed = seed
        self.model_path: Path | None = None
        self._llm = None
        self._lock = threading.Lock()
        self._deadline = float("inf")
        self._abort_callback = None  # kept referenced: llama.cpp holds only a raw pointer to it

    def warm_up(self) -> None:
        if self._llm is not None:
            return
        # Passive OpenMP waiting (llama.cpp's workers must not spin on a shared host) is chosen when
        # the services package loads, before torch or llama.cpp can load libgomp: see services/__init__.py.
        import llama_cpp

        self.model_path = resolve_model_path(self.spec.path)
        self._llm = llama_cpp.Llama(model_path=str(self.model_path), n_ctx=self.spec.context_tokens,
                                    n_threads=self.n_threads, n_threads_batch=self.n_threads,
                                    seed=self.seed, verbose=False)

        @llama_cpp.ggml_abort_callback
        def abort(_data: ctypes.c_void_p) -> bool:
            return time.monotonic() > self._deadline

        self._abort_callback = abort
        llama_cpp.llama_set_abort_callback(self._llm.ctx, abort, None)

    def generate(self, messages: list[dict], max_tokens: int = 256, grammar: str | None = None) -> Generation:
        if self._llm is None:
            raise GenerationError(f"model {self.spec.key} was not warmed up")
        import llama_cpp

        # Parsed by llama.cpp when the sampler is built; an invalid grammar fails as a GenerationError below.
        compiled = llama_cpp.LlamaGrammar.from_string(grammar, verbose=False) if grammar else None
        started = time.perf_counter()
        timeout = self.spec.timeout_s
        if not self._lock.acquire(timeout=timeout):
            raise GenerationTimeout(f"model {self.spec.key}: busy for longer than {timeout:g} s")
        try:
            self._deadline = time.monotonic() + max(0.0, timeout - (time.perf_counter() - started))
            response = self._llm.create_chat_completion(messages=messages, temperature=0, max_tokens=max_tokens,
                                                        seed=self.seed, grammar=compiled)
        except Exception as exc:
            timed_out = time.monotonic() > self._deadline
            # After an abort the KV cache no longer matches llama-cpp-python's idea of it: start clean.
            self._llm.reset()
            if timed_out:
                raise GenerationTimeout(f"model {self.spec.key}: no answer within {timeout:g} s") from exc
            raise GenerationError(f"model {self.spec.key}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._deadline = float("inf")
            self._lock.release()
        try:
            text = response["choices"][0]["message"]["content"] or ""
            usage = response["usage"]
            return Generation(text=text.strip(), input_tokens=int(usage["prompt_tokens"]),
                              output_tokens=int(usage["completion_tokens"]),
                              latency_ms=(time.perf_counter() - started) * 1000)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise GenerationError(f"model {self.spec.key}: malformed completion: {exc!r}") from exc
