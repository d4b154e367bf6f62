from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.vectors.sparse import (
    DEFAULT_AVGDL,
    K1,
    encode_document,
    encode_query,
    light_stem,
    term_id,
    tokenize,
)

pytestmark = pytest.mark.unit


def test_tokenize_lowercases_and_drops_stopwords() -> None:
    assert tokenize("The Loan IS approved by the Credit Committee") == ["loan", "approv", "credit", "committe"]


def test_tokenize_keeps_clause_numbers_percentages_and_amounts_whole() -> None:
    tokens = tokenize("Under clause 4.1.2, loans above 80% LTV or EUR 10,000 (2.5% fee).")
    assert "4.1.2" in tokens
    assert "80%" in tokens
    assert "2.5%" in tokens
    assert "10000" in tokens  # thousands separators dropped: "10,000" == "10000"
    assert "1" not in tokens and "4" not in tokens
    assert tokenize("EUR 10000") == tokenize("EUR 10,000")


def test_tokenize_handles_punctuation_and_other_scripts() -> None:
    assert tokenize("anti-money-laundering (AML); café") == ["anti", "money", "launder", "aml", "café"]
    assert tokenize("") == []
    assert tokenize("the of and , ; !") == []


@pytest.mark.parametrize(
    ("forms", "why"),
    [
        (["policy", "policies"], "plural -ies"),
        (["loan", "loans"], "plural -s"),
        (["approve", "approved", "approving", "approves"], "-e / -ed / -ing / -es"),
        (["transfer", "transferring", "transferred"], "doubled consonant"),
        (["process", "processes", "processing", "processed"], "-ss stems"),
        (["requires", "required", "require"], "-e after -s"),
    ],
)
def test_light_stem_maps_inflections_to_one_key(forms: list[str], why: str) -> None:
    assert len({light_stem(w) for w in forms}) == 1, why


def test_light_stem_leaves_short_words_numbers_and_latin_endings_alone() -> None:
    assert light_stem("status") == "status"
    assert light_stem("analysis") == "analysis"
    assert light_stem("gas") == "gas"
    assert light_stem("4.1.2") == "4.1.2"


def test_term_id_is_a_stable_31_bit_blake2b_hash() -> None:
    # Fixed values: a salted or changed hash would orphan every stored vector.
    assert term_id("loan") == 1408405843
    assert term_id("4.1.2") == 1619050334
    # and the same in a fresh interpreter (Python's hash() would differ per process)
    out = subprocess.run(
        [sys.executable, "-c", "from services.vectors.sparse import term_id; print(term_id('loan'))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],  # repo root, so `services` imports
    )
    assert int(out.stdout) == 1408405843


@given(st.text(min_size=1, max_size=40))
def test_term_ids_fit_31_bits(token: str) -> None:
    assert 0 <= term_id(token) < 2**31


def test_encode_document_applies_bm25_tf_saturation() -> None:
    # dl == avgdl, so the length norm is k1: w(tf) = tf * (k1 + 1) / (tf + k1)
    vec = encode_document("loan loan collateral", avgdl=3)
    weights = dict(zip(vec.indices, vec.values, strict=True))
    assert weights[term_id("loan")] == pytest.approx(2 * 2.2 / (2 + 1.2))
    assert weights[term_id("collateral")] == pytest.approx(1.0)
    assert vec.indices == sorted(vec.indices)


def test_longer_documents_weigh_each_term_less() -> None:
    short = encode_document("collateral haircut")
    long = encode_document("collateral " + " ".join(f"word{i}" for i in range(300)))
    cid = term_id("collateral")
    assert dict(zip(short.indices, short.values))[cid] > dict(zip(long.indices, long.values))[cid]


def test_repeating_a_term_saturates_below_k1_plus_1() -> None:
    weights = [encode_document(" ".join(["loan"] * n)).values[0] for n in (1, 2, 5, 50)]
    assert weights == sorted(weights)
    assert weights[-1] < K1 + 1


def test_encode_query_gives_each_unique_term_weight_one() -> None:
    vec = encode_query("Loan loans LOAN approval?")
    assert vec.indices == sorted({term_id("loan"), term_id("approval")})
    assert vec.values == [1.0, 1.0]


def test_empty_text_encodes_to_an_empty_vector() -> None:
    assert encode_document("the of").indices == []
    assert encode_query("").values == []


def test_avgdl_must_be_positive() -> None:
    with pytest.raises(ValueError):
        encode_document("loan", avgdl=0)


@given(st.text(max_size=300))
def test_document_vectors_are_well_formed(text: str) -> None:
    vec = encode_document(text, avgdl=DEFAULT_AVGDL)
    assert len(vec.indices) == len(vec.values)
    assert vec.indices == sorted(set(vec.indices))
    assert all(0 < v < K1 + 1 for v in vec.values)
    assert set(encode_query(text).indices) == set(vec.indices)
