"""Fine-tune a sentence-transformers embedding model on ObliQA question -> passage pairs, on CPU, seeded.

Contrastive training (MultipleNegativesRankingLoss): each question should sit closer to its
gold passage than to every other passage in its batch, and than to one hard negative — the
passage of the same document that the base model ranks highest but is no gold passage of
that question. Only training splits are accepted (`dev-train`, the odd-numbered half of dev),
so the held-out half (`dev-heldout`) stays unseen for `benchmark run --split dev-heldout`.

A plain loop rather than SentenceTransformerTrainer: it needs no `datasets`/`accelerate`,
and one process on a fixed seed gives the same weights on every run.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import structlog

from services.bench.obliqa import obliqa_passages, obliqa_split, obliqa_version
from services.errors import InvalidRequest

log = structlog.get_logger()

TRAINING_SPLITS = ("dev-train",)  # never dev or dev-heldout: the benchmark measures on those
MINING_DEPTH = 30  # base-model candidates scanned per question for a hard negative

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.1
    max_seq_length: int = 128  # training only: passages are short; the saved model keeps the base window
    hard_negatives: int = 1
    seed: int = 42
    threads: int = 2


@dataclass(frozen=True)
class TrainingExample:
    question_id: str
    question: str
    positive: str
    negatives: tuple[str, ...]


@dataclass(frozen=True)
class FinetuneResult:
    output: Path
    examples: int
    questions: int
    steps: int
    seconds: float
    final_loss: float


def _key(passage: dict) -> tuple[int, str]:
    return int(passage["DocumentID"]), str(passage["PassageID"])


def training_examples(questions: Sequence[dict], passages: Sequence[dict],
                      embed: Callable[[list[str]], np.ndarray] | None, hard_negatives: int) -> list[TrainingExample]:
    """One example per (question, gold passage); hard negatives mined with `embed` from the gold's document."""
    negatives: dict[str, tuple[str, ...]] = {}
    if hard_negatives and questions:
        gold_documents = {int(p["DocumentID"]) for q in questions for p in q["Passages"]}
        passages = [p for p in passages if int(p["DocumentID"]) in gold_documents]  # negatives come from these
        keys = [_key(p) for p in passages]
        documents = np.array([k[0] for k in keys])
        p_vecs = embed([p["Passage"] for p in passages])
        q_vecs = embed([q["Question"] for q in questions])
        for q, q_vec in zip(questions, q_vecs, strict=True):
            gold = {_key(p) for p in q["Passages"]}
            gold_texts = {p["Passage"] for p in q["Passages"]}
            scores = p_vecs @ q_vec
            scores[~np.isin(documents, list({k[0] for k in gold}))] = -np.inf
            ranked = np.argsort(-scores, kind="stable")[:MINING_DEPTH]
            picks = [passages[j]["Passage"] for j in ranked
                     if np.isfinite(scores[j]) and keys[j] not in gold and passages[j]["Passage"] not in gold_texts]
            negatives[q["QuestionID"]] = tuple(picks[:hard_negatives])
    return [TrainingExample(q["QuestionID"], q["Question"], p["Passage"], negatives.get(q["QuestionID"], ()))
            for q in questions for p in q["Passages"] if p["Passage"].strip()]


def plan_batches(examples: Sequence[TrainingExample], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches in which no question or positive occurs twice (they would be each other's false negatives)."""
    pending = list(range(len(examples)))
    rng.shuffle(pending)
    batches = []
    while pending:
        batch, questions, positives, rest = [], set(), set(), []
        for i in pending:
            ex = examples[i]
            if len(batch) < batch_size and ex.question_id not in questions and ex.positive not in positives:
                batch.append(i)
                questions.add(ex.question_id)
                positives.add(ex.positive)
            else:
                rest.append(i)
        batches.append(batch)
        pending = rest
    return batches


def finetune(base_path: Path, output: Path, examples: Sequence[TrainingExample], config: FinetuneConfig,
             progress: Progress | None = None, manifest: dict | None = None) -> FinetuneResult:
    """Train a copy of the model at base_path and save it (with a training manifest) to output."""
    if not examples:
        raise InvalidRequest("no training examples")
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import get_linear_schedule_with_warmup

    torch.set_num_threads(config.threads)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = SentenceTransformer(str(base_path), device="cpu", local_files_only=True)
    window = model.max_seq_length
    model.max_seq_length = config.max_seq_length
    loss_fn = MultipleNegativesRankingLoss(model)
    rng = random.Random(config.seed)
    plan = [plan_batches(examples, config.batch_size, rng) for _ in range(config.epochs)]
    steps = sum(len(epoch) for epoch in plan)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    schedule = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * steps), steps)
    started, step, loss_value = time.perf_counter(), 0, float("nan")
    model.train()
    for epoch in plan:
        for batch in epoch:
            columns = [[examples[i].question for i in batch], [examples[i].positive for i in batch]]
            # a negative column only where every example has one (a document may have no non-gold passage left)
            mined = min(len(examples[i].negatives) for i in batch)
            columns += [[examples[i].negatives[h] for i in batch] for h in range(min(mined, config.hard_negatives))]
            loss = loss_fn([model.preprocess(column) for column in columns], None)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            loss_value = float(loss.detach())
            if progress:
                progress("train", step, steps)
    model.eval()
    model.max_seq_length = window  # serve with the base model's window, as the embedder windows text by it
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    model.save(str(output))
    seconds = time.perf_counter() - started
    result = FinetuneResult(output, len(examples), len({e.question_id for e in examples}), steps,
                            round(seconds, 1), round(loss_value, 4))
    (output / "policyhub_finetune.json").write_text(json.dumps(
        {**(manifest or {}), "base": str(base_path), "config": asdict(config),
         "examples": result.examples, "questions": result.questions, "steps": steps, "seconds": result.seconds,
         "final_loss": result.final_loss}, indent=2), encoding="utf-8")
    log.info("finetune.saved", output=str(output), steps=steps, seconds=result.seconds, loss=result.final_loss)
    return result


def finetune_obliqa(root: Path, split: str, base_path: Path, output: Path, config: FinetuneConfig = FinetuneConfig(),
                    *, limit: int | None = None, progress: Progress | None = None) -> FinetuneResult:
    """Fine-tune on an ObliQA training split (`dev-train`); refuses any split the benchmark measures on."""
    if split not in TRAINING_SPLITS:
        raise InvalidRequest(f"{split!r} is not a training split; train on {', '.join(TRAINING_SPLITS)} and "
                             "measure on dev-heldout")
    if Path(output).exists() and any(Path(output).iterdir()):
        raise InvalidRequest(f"{output}: not empty; choose a new directory for the fine-tuned model")
    questions = obliqa_split(root, split)[:limit]
    passages = obliqa_passages(root)
    embed = None
    if config.hard_negatives:
        from services.embedding.sentence import SentenceTransformerEmbedder

        base = SentenceTransformerEmbedder(base_path, "base", "0")
        base.warm_up()
        embed = base.embed
    if progress:
        progress("mine", 0, 1)
    examples = training_examples(questions, passages, embed, config.hard_negatives)
    if progress:
        progress("mine", 1, 1)
    manifest = {"dataset": "obliqa", "split": split, "dataset_version": obliqa_version(root, split),
                "limit": limit}
    return finetune(base_path, output, examples, config, progress, manifest)
