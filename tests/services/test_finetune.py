"""Fine-tuning the embedding model on ObliQA training questions: batching, mining, the split guard, and a
real (tiny) training run with the bundled model."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from services.embedding.finetune import (
    FinetuneConfig,
    TrainingExample,
    finetune_obliqa,
    plan_batches,
    training_examples,
)
from services.errors import InvalidRequest

PASSAGES = {
    1: [("1.1", "A firm must keep customer due diligence records for six years."),
        ("1.2", "A firm must appoint a money laundering reporting officer."),
        ("1.3", "Suspicious activity reports go to the Financial Intelligence Unit."),
        ("1.4", "")],
    2: [("2.1", "A fund manager must value fund property at least monthly."),
        ("2.2", "A fund manager must tell unitholders of a change of auditor.")],
}
QUESTIONS = [("q0", "How long are due diligence records kept?", [(1, "1.1")]),
             ("q1", "Who must a firm appoint for money laundering reporting?", [(1, "1.2")]),
             ("q2", "Where do suspicious activity reports go?", [(1, "1.3")]),
             ("q3", "How often is fund property valued?", [(2, "2.1"), (2, "2.2")])]


@pytest.fixture
def obliqa_dir(tmp_path):
    (tmp_path / "structured").mkdir()
    text = {}
    for doc, rows in PASSAGES.items():
        passages = [{"ID": f"{doc}-{pid}", "DocumentID": doc, "PassageID": pid, "Passage": t} for pid, t in rows]
        (tmp_path / "structured" / f"{doc}.json").write_text(json.dumps(passages))
        text.update({(doc, pid): t for pid, t in rows})
    questions = [{"QuestionID": qid, "Question": q, "Group": 1,
                  "Passages": [{"DocumentID": d, "PassageID": p, "Passage": text[(d, p)]} for d, p in gold]}
                 for qid, q, gold in QUESTIONS]
    (tmp_path / "ObliQA_dev.json").write_text(json.dumps(questions))
    return tmp_path


def _passages(root):
    from services.embedding.finetune import obliqa_passages

    return obliqa_passages(root)


@pytest.mark.unit
def test_batches_cover_every_example_once_without_in_batch_duplicates():
    examples = [TrainingExample(f"q{n % 7}", f"question {n % 7}", f"passage {n % 5}", ()) for n in range(40)]
    batches = plan_batches(examples, 4, random.Random(1))
    assert sorted(i for b in batches for i in b) == list(range(40))
    for batch in batches:
        assert len(batch) <= 4
        assert len({examples[i].question_id for i in batch}) == len(batch)
        assert len({examples[i].positive for i in batch}) == len(batch)
    assert plan_batches(examples, 4, random.Random(1)) == batches  # seeded: the same plan every run


@pytest.mark.unit
def test_hard_negatives_come_from_the_gold_document_and_are_never_gold(obliqa_dir):
    questions = json.loads((obliqa_dir / "ObliQA_dev.json").read_text())
    passages = _passages(obliqa_dir)
    assert all(p["Passage"] for p in passages), "empty passages are left out"
    # a fake embedder under which every passage is equally close: the mining rule alone decides
    examples = training_examples(questions, passages, lambda texts: np.ones((len(texts), 3), np.float32), 1)
    assert [(e.question_id, e.positive[:12]) for e in examples][-2:] == [("q3", PASSAGES[2][0][1][:12]),
                                                                        ("q3", PASSAGES[2][1][1][:12])]
    doc_of = {t: d for d, rows in PASSAGES.items() for _, t in rows}
    for e in examples:
        gold = {p["Passage"] for q in questions if q["QuestionID"] == e.question_id for p in q["Passages"]}
        gold_docs = {doc_of[g] for g in gold}
        for negative in e.negatives:
            assert negative not in gold and doc_of[negative] in gold_docs
    # q3's document has no passage left that is not gold: no negative rather than a wrong one
    assert [e.negatives for e in examples if e.question_id == "q3"] == [(), ()]


@pytest.mark.unit
@pytest.mark.parametrize("split", ["dev", "dev-heldout"])
def test_the_splits_the_benchmark_measures_on_are_refused(obliqa_dir, tmp_path, split):
    with pytest.raises(InvalidRequest, match="not a training split"):
        finetune_obliqa(obliqa_dir, split, tmp_path / "base", tmp_path / "out")


@pytest.mark.integration
@pytest.mark.slow
def test_a_seeded_run_trains_the_bundled_model_reproducibly(obliqa_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    from services.embedding.sentence import default_model_path

    base = default_model_path()
    config = FinetuneConfig(batch_size=2, learning_rate=1e-4, max_seq_length=32, hard_negatives=1, seed=7)
    first = finetune_obliqa(obliqa_dir, "dev-train", base, tmp_path / "a", config)
    second = finetune_obliqa(obliqa_dir, "dev-train", base, tmp_path / "b", config)
    assert (first.questions, first.examples, first.steps) == (2, 3, 2)  # q1, q3 (two gold passages)
    probe = ["How often is fund property valued?"]
    vectors = [SentenceTransformer(str(path), device="cpu", local_files_only=True).encode(probe)
               for path in (base, first.output, second.output)]
    np.testing.assert_array_equal(vectors[1], vectors[2])
    assert not np.allclose(vectors[0], vectors[1])
    trained = SentenceTransformer(str(first.output), device="cpu", local_files_only=True)
    assert trained.max_seq_length == SentenceTransformer(str(base), device="cpu").max_seq_length
    manifest = json.loads((first.output / "policyhub_finetune.json").read_text())
    assert manifest["split"] == "dev-train" and manifest["dataset_version"].startswith("dev-train-")
    with pytest.raises(InvalidRequest, match="not empty"):
        finetune_obliqa(obliqa_dir, "dev-train", base, first.output, config)


@pytest.mark.unit
def test_the_cli_refuses_to_train_on_the_held_out_half(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from services.benchmark.cli import models_app
    from services.config import get_settings

    monkeypatch.setenv("POLICYHUB_ENV", "test")
    monkeypatch.setenv("POLICYHUB_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(models_app, ["finetune", "--split", "dev-heldout", "--out", str(tmp_path / "m")],
                                    env={"COLUMNS": "400"})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "'dev-heldout' is not a training split" in result.output
    assert not (tmp_path / "m").exists()
