"""The held-out halves of ObliQA dev: a model trained on one half is measured on the other."""

from __future__ import annotations

import json

import pytest

from services.benchmark.runner import obliqa_split, obliqa_version, run_benchmark
from services.errors import InvalidRequest
from tests.services.conftest import make_settings

pytestmark = pytest.mark.unit


@pytest.fixture
def obliqa_dir(tmp_path):
    questions = [{"QuestionID": f"q{n}", "Question": f"question {n}", "Group": 1,
                  "Passages": [{"DocumentID": 1, "PassageID": f"{n}.1", "Passage": "text"}]} for n in range(7)]
    (tmp_path / "ObliQA_dev.json").write_text(json.dumps(questions))
    return tmp_path


def ids(questions):
    return [q["QuestionID"] for q in questions]


def test_the_halves_are_the_odd_and_even_questions_in_file_order(obliqa_dir):
    assert ids(obliqa_split(obliqa_dir, "dev-train")) == ["q1", "q3", "q5"]
    assert ids(obliqa_split(obliqa_dir, "dev-heldout")) == ["q0", "q2", "q4", "q6"]
    assert ids(obliqa_split(obliqa_dir, "dev")) == [f"q{n}" for n in range(7)]


def test_a_half_is_versioned_by_its_name_and_the_file_it_comes_from(obliqa_dir):
    dev, heldout = obliqa_version(obliqa_dir, "dev"), obliqa_version(obliqa_dir, "dev-heldout")
    assert heldout.startswith("dev-heldout-") and heldout.removeprefix("dev-heldout-") == dev.removeprefix("dev-")


def test_an_unknown_split_is_refused(obliqa_dir):
    with pytest.raises(InvalidRequest, match="unknown ObliQA split 'test'"):
        obliqa_split(obliqa_dir, "test")


def test_the_benchmark_refuses_an_unknown_split_before_it_loads_a_model(obliqa_dir, tmp_path):
    with pytest.raises(InvalidRequest, match="unknown ObliQA split"):
        run_benchmark(make_settings(tmp_path / "data"), "obliqa", "test", obliqa_dir=obliqa_dir, store=False)
