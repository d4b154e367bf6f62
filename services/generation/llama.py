"""Tier-1: a small GGUF model run in-process through llama-cpp-python.

The model is loaded once in `warm_up()`. A llama.cpp context is not thread-safe, so calls are
serialised by a lock; a request that cannot get the lock within its timeout fails rather
than queueing without bound. The timeout is enforced inside llama.cpp through its abort
callback, which stops decoding between batches, so a slow generation cannot overrun
`spec.timeout_s` by more than one decode step.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from pathlib import Path

import structlog

from governance.policy import ModelSpec
from services.generation.base import Generation, GenerationError, GenerationTimeout, resolve_model_path

DEFAULT_SEED = 42  # fixed so the same prompt gives the same answer (replayable audits, stable tests)

log = structlog.get_logger()


def _openmp_loaded() -> bool:
    """Whether an OpenMP runtime (GNU libgomp) is already mapped into this process (Linux; else False)."""
    try:
        return "libgomp.so" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


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
        # llama.cpp's OpenMP workers spin while they wait. On a machine whose cores are shared (the
        # embedder, the API, other services) a spinning worker whose partner was descheduled burns
        # the core the partner needs: measured here, 3x the CPU time and up to 10x the latency.
        # Passive waiting must be chosen before the OpenMP runtime loads. torch loads the same
        # libgomp.so.1, so in a process that built the embedder first, setting it here is too late:
        # measured in the query service, 4-15x the CPU time per answer (10-42 s instead of 1-4 s).
        # The process start must set it; say so loudly when it did not.
        if "OMP_WAIT_POLICY" not in os.environ and _openmp_loaded():
            log.warning("llama.openmp_already_loaded", model=self.spec.key,
                        hint="set OMP_WAIT_POLICY=PASSIVE before the process starts (torch loaded libgomp "
                             "first); llama.cpp's OpenMP workers will spin")
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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
