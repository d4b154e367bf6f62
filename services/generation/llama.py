"""Tier-1: a small GGUF model run in-process through llama-cpp-python.

The model is loaded once in `warm_up()`. A llama.cpp context is not thread-safe, so calls are
serialised by a lock; a request that cannot get the lock within its timeout fails rather
than queueing without bound. The timeout is enforced inside llama.cpp through its abort
callback, which stops decoding between batches, so a slow generation cannot overrun
`spec.timeout_s` by more than one decode step.

Decoding is greedy (temperature 0), in a loop of our own rather than llama-cpp-python's
`create_chat_completion`, for one reason: its grammar sampler filters the whole vocabulary
(49,152 tokens for SmolLM2) at every step. Greedy decoding under a grammar picks the most
likely token the grammar allows, so it is enough to check the most likely token and filter
the whole vocabulary only when the grammar rejects it (a handful of times per answer: the
opening "[", the end of the line). The answers are the same token for token as
`create_chat_completion(temperature=0, grammar=...)` (tests/services/generation/test_llama.py
compares them). The prompt is the GGUF's own chat template, rendered as llama-cpp-python
renders it, and the KV cache of the longest common prefix with the previous call (the
system prompt) is kept, as llama-cpp-python keeps it.

A tier-1 answer mostly copies words of the clause it was shown, so each decoding step also
feeds, as a draft, the prompt tokens that followed the answer's last two tokens where they
occur in the prompt (prompt-lookup decoding). One batch gives the model's choice after every
fed token; a draft token is kept only while it equals that choice, so the answer is the
greedy one. About four tokens are kept per step, and CPU per answer drops by ~18%. A batch
is computed in another order than single tokens, so a near-tie could flip a token: on the
test prompts tier-1 answers are identical with and without drafts (`lookahead=0` turns them
off).
"""

from __future__ import annotations

import ctypes
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from governance.policy import ModelSpec
from services.generation.base import (FINISH_LENGTH, FINISH_LOOP, FINISH_STOP, Generation, GenerationError,
                                      GenerationTimeout, cpu_model_name, repeated_run, resolve_model_path)

DEFAULT_SEED = 42  # fixed so the same prompt gives the same answer (replayable audits, stable tests)
DEFAULT_LOOKAHEAD = 8  # draft tokens taken from the prompt per decoding step (0: one token per step)
DRAFT_NGRAM = 2  # answer tokens matched against the prompt to find a draft


@dataclass
class _Consumed:
    """What one call has computed so far: the evaluated prompt's tokens, the answer tokens chosen."""

    prompt_tokens: int = 0
    answer: list[int] = field(default_factory=list)


class LlamaCppGenerator:
    def __init__(self, spec: ModelSpec, n_threads: int = 2, seed: int = DEFAULT_SEED,
                 lookahead: int = DEFAULT_LOOKAHEAD) -> None:
        if spec.kind != "llama_cpp" or not spec.path:
            raise ValueError(f"model {spec.key} is not a llama_cpp model with a path")
        self.spec = spec
        self.n_threads = n_threads
        self.seed = seed
        self.lookahead = lookahead
        self.model_path: Path | None = None
        self._llm = None
        self._lock = threading.Lock()
        self._deadline = float("inf")
        self._abort_callback = None  # kept referenced: llama.cpp holds only a raw pointer to it
        self._chat_format = None
        self._vocab = None
        self._one = self._one_array = self._all = self._all_array = None  # grammar-check buffers

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

        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise GenerationError(f"model {self.spec.key}: the GGUF carries no chat template")
        model, eos, bos = self._llm._model, self._llm.token_eos(), self._llm.token_bos()
        # The arguments llama-cpp-python itself builds its metadata chat handler with.
        self._chat_format = Jinja2ChatFormatter(template=template, eos_token=model.token_get_text(eos),
                                                bos_token=model.token_get_text(bos), stop_token_ids=[eos],
                                                add_generation_prompt=True)
        self._vocab = llama_cpp.llama_model_get_vocab(model.model)
        n_vocab = self._llm.n_vocab()
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_array = llama_cpp.llama_token_data_array(data=self._one, size=1, selected=-1, sorted=False)
        self._all = np.zeros(n_vocab, dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)],
                                                       align=True))
        self._all_array = llama_cpp.llama_token_data_array(
            data=self._all.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)), size=n_vocab, selected=-1,
            sorted=False)

    def environment(self) -> dict:
        import llama_cpp

        # "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | ...": the kernels this build of llama.cpp uses here
        info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").replace("CPU :", "")
        features = [item.split("=")[0].strip() for item in info.split("|") if item.strip().endswith("= 1")]
        return {"runtime": f"llama-cpp-python {llama_cpp.__version__}", "threads": self.n_threads,
                "lookahead": self.lookahead, "seed": self.seed, "machine": platform.machine(),
                "cpu": cpu_model_name(), "cpu_features": " ".join(features)}

    def generate(self, messages: list[dict], max_tokens: int = 256, grammar: str | None = None) -> Generation:
        if self._llm is None:
            raise GenerationError(f"model {self.spec.key} was not warmed up")
        started = time.perf_counter()
        timeout = self.spec.timeout_s
        consumed = _Consumed()
        if not self._lock.acquire(timeout=timeout):
            raise GenerationTimeout(f"model {self.spec.key}: busy for longer than {timeout:g} s")
        try:
            self._deadline = time.monotonic() + max(0.0, timeout - (time.perf_counter() - started))
            text, input_tokens, output_tokens, finish = self._complete(messages, max_tokens, grammar, consumed)
        except GenerationError:
            self._llm.reset()
            raise
        except Exception as exc:
            timed_out = time.monotonic() > self._deadline
            # After an abort the KV cache no longer matches llama-cpp-python's idea of it: start clean.
            self._llm.reset()
            if timed_out:  # what it computed before the abort is charged all the same
                raise GenerationTimeout(f"model {self.spec.key}: no answer within {timeout:g} s",
                                        consumed.prompt_tokens, len(consumed.answer)) from exc
            raise GenerationError(f"model {self.spec.key}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._deadline = float("inf")
            self._lock.release()
        return Generation(text=text.strip(), input_tokens=input_tokens, output_tokens=output_tokens,
                          latency_ms=(time.perf_counter() - started) * 1000, finish=finish)

    def _complete(self, messages: list[dict], max_tokens: int, grammar: str | None,
                  consumed: _Consumed) -> tuple[str, int, int, str]:
        """Greedy completion of the chat; (text, prompt tokens, answer tokens, finish). Runs under the lock,
        keeping in `consumed` what was computed so far, for an abort to charge."""
        import llama_cpp

        llm = self._llm
        rendered = self._chat_format(messages=messages)
        tokens = llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)
        room = llm.n_ctx() - len(tokens)
        if room <= 0:
            raise GenerationError(f"model {self.spec.key}: prompt of {len(tokens)} tokens exceeds the context "
                                  f"window of {llm.n_ctx()}")
        sampler = None
        if grammar:
            sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
            if not sampler:
                raise GenerationError(f"model {self.spec.key}: llama.cpp rejected the grammar")
        try:
            self._eval_prompt(tokens)
            consumed.prompt_tokens = len(tokens)
            answer, finish = self._decode(tokens, min(max_tokens, room), sampler, consumed.answer)
        finally:
            if sampler is not None:
                llama_cpp.llama_sampler_free(sampler)
        return llm.detokenize(answer).decode("utf-8", errors="ignore"), len(tokens), len(answer), finish

    def _decode(self, prompt: list[int], limit: int, sampler,  # noqa: ANN001
                answer: list[int]) -> tuple[list[int], str]:
        """Greedy answer tokens after the evaluated prompt, at most `limit`, with prompt-lookup drafts,
        and why decoding ended (`sampler` is a llama_sampler_p or None). They are appended to
        `answer` as they are chosen, so an abort leaves the count made.

        Each step feeds the last chosen token plus up to `lookahead` draft tokens: what followed
        the answer's last `DRAFT_NGRAM` tokens where they occur in the prompt. One batch yields
        the model's choice after every fed token; drafts are kept while they equal those choices,
        and the KV cache is cut after the last one kept.

        A model caught in a loop is stopped as soon as the loop shows (`repeated_run`): its answer
        would fail verification anyway, and running on to `limit` only adds latency.
        """
        import llama_cpp

        llm, n_vocab = self._llm, len(self._all)

        def choose(index: int) -> int:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, index), shape=(n_vocab,))
            token = int(np.argmax(logits))
            if sampler is not None:
                token = self._grammar_choice(sampler, token, logits)
                llama_cpp.llama_sampler_accept(sampler, token)
            return token

        token = choose(-1)
        while not llama_cpp.llama_vocab_is_eog(self._vocab, token):
            answer.append(token)
            if len(answer) >= limit:
                break
            draft = self._draft(prompt, answer)[:limit - len(answer)]
            fed = [token, *draft]
            start = llm.n_tokens
            llm._batch.set_batch(batch=fed, n_past=start, logits_all=True)
            llm._ctx.decode(llm._batch)
            llm.input_ids[start:start + len(fed)] = fed
            kept = 1
            for index in range(len(fed)):
                token = choose(index)
                if index == len(draft) or token != draft[index] or llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    break  # `token` is the next answer token (or the end), not yet in the KV cache
                answer.append(token)  # the draft token was right, and is already in the KV cache
                kept += 1
                if len(answer) >= limit:
                    break
            if kept < len(fed):
                llm._ctx.kv_cache_seq_rm(-1, start + kept, -1)
            llm.n_tokens = start + kept
            if len(answer) >= limit:
                break
            if repeated_run(answer, at_end=True) is not None:
                return answer, FINISH_LOOP
        else:
            return answer, FINISH_STOP
        return answer, (FINISH_LOOP if repeated_run(answer, at_end=True) is not None else FINISH_LENGTH)

    def _draft(self, prompt: list[int], answer: list[int]) -> list[int]:
        """The `lookahead` prompt tokens after the last occurrence of the answer's final n-gram, or none."""
        if not self.lookahead or len(answer) < DRAFT_NGRAM:
            return []
        key = answer[-DRAFT_NGRAM:]
        for at in range(len(prompt) - DRAFT_NGRAM, -1, -1):
            if prompt[at:at + DRAFT_NGRAM] == key:
                return prompt[at + DRAFT_NGRAM:at + DRAFT_NGRAM + self.lookahead]
        return []

    def _eval_prompt(self, tokens: list[int]) -> None:
        """Evaluate the prompt, keeping the KV cache of the longest prefix shared with the last call."""
        llm = self._llm
        keep = 0
        for cached, token in zip(llm.input_ids[:llm.n_tokens], tokens[:-1]):  # the last one is always evaluated
            if cached != token:
                break
            keep += 1
        if keep and not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            keep = 0
        if not keep:
            llm.reset()
        llm.n_tokens = keep
        llm.eval(tokens[keep:])

    def _grammar_choice(self, sampler, token: int, logits: np.ndarray) -> int:  # noqa: ANN001 (a llama_sampler_p)
        """The greedy token under the grammar: `token` when allowed, else the most likely allowed token."""
        import llama_cpp

        one, one_array = self._one, self._one_array
        one[0].id, one[0].logit, one[0].p = token, 0.0, 0.0
        one_array.size, one_array.selected, one_array.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(one_array))
        if np.isfinite(one[0].logit):
            return token
        full, full_array = self._all, self._all_array
        full["id"] = np.arange(len(full), dtype=np.intc)
        full["logit"] = logits
        full_array.size, full_array.selected, full_array.sorted = len(full), -1, False
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(full_array))
        allowed = full["logit"][:full_array.size]
        if not np.isfinite(allowed).any():
            raise GenerationError(f"model {self.spec.key}: the grammar allows no token here")
        return int(full["id"][int(np.argmax(allowed))])
