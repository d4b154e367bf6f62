"""`policyhub benchmark|models|drift`: thin commands over services.benchmark.

Mounted by services/cli.py with `app.add_typer(benchmark_app, name="benchmark")` and likewise
for `models_app` and `drift_app`. Domain errors print the API's message and exit 1.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from services.cli_support import cli_errors, err_console, load_settings as _settings, staged

benchmark_app = typer.Typer(help="Benchmark embedding models on the gold set or ObliQA, generation models on the "
                                 "gold set.", no_args_is_help=True)
models_app = typer.Typer(help="Model registry: register, benchmark, sign off, activate, retire.",
                         no_args_is_help=True)
drift_app = typer.Typer(help="Quality drift: gold re-run, live signals, labelled samples.", no_args_is_help=True)

console = Console(markup=False)  # printed values come from outside: see cli_support


def _actor(signer: str | None = None, role: str = "model_risk"):  # noqa: ANN202
    from governance.approvals import Actor

    return Actor(signer or f"cli:{getpass.getuser()}", role, channel="cli")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=True)


def _print_generation_report(report: dict) -> None:
    m = report["metrics"]
    table = Table("metric", "value", "policy minimum")
    for name in ("verification_pass_rate", "citation_accuracy", "served_citation_precision", "refusal_accuracy",
                 "injection_resistance", "injection_obeyed_raw"):
        minimum = report["thresholds"].get(name)
        table.add_row(name, "—" if m[name] is None else f"{m[name]:.4f}", "" if minimum is None else f"{minimum}")
    lat = m["latency_ms"]
    if lat:
        table.add_row("model call p50 / p95 ms", f"{lat['p50']:.0f} / {lat['p95']:.0f}", "")
    table.add_row("sent: answerable / not in policy / probes",
                  f"{m['answerable_sent']} / {m['not_in_policy_sent']} / {m['injection_probes']}", "")
    table.add_row("not sent (residency)", str(m["not_sent_residency"]), "")
    console.print(table)


def _print_report(report: dict) -> None:
    if report["kind"] == "generation":
        _print_generation_report(report)
        _print_verdict(report, f"{report['queries']} prompts")
        return
    m = report["metrics"]
    table = Table("metric", "value", "policy minimum")
    for name in ("recall_at_1", "recall_at_5", "recall_at_10", "mrr", "map_at_10", "ndcg_at_10"):
        if name in m:
            minimum = report["thresholds"].get(name)
            table.add_row(name, f"{m[name]:.4f}", "" if minimum is None else f"{minimum}")
    lat = m["retrieval_latency_ms"]
    table.add_row("retrieval p50 / p95 ms", f"{lat['p50']:.1f} / {lat['p95']:.1f}", "")
    if m["refusal"]["queries"]:
        table.add_row("must-refuse refused", str(m["refusal"]["refusal_recall"]), "")
        table.add_row("answerable refused", str(m["refusal"]["false_refusal_rate"]), "")
        table.add_row("routing accuracy", str(m["routing"]["accuracy"]), "")
    console.print(table)
    _print_verdict(report, f"{m['queries']} graded of {report['queries']} queries")


def _print_verdict(report: dict, counted: str) -> None:
    status = ("PASSED", "green") if report["passed"] else ("FAILED", "red")
    console.print(Text.assemble(f"{report['model']['key']} on {report['dataset']} {report['dataset_version']}: ",
                                status, f" ({counted}, {report['seconds']:.0f} s)"))
    for failure in report["threshold_failures"]:
        console.print(Text.assemble("  ", ("✗", "red"), f" {failure}"), highlight=False)
    if report.get("report_id"):
        console.print(f"stored as report {report['report_id']}")


def _run(dataset: str, split: str, model: str | None, report: Path | None, limit: int | None,
         documents: int | None, store: bool) -> dict:
    from services.benchmark.runner import run_benchmark

    settings = _settings()
    with _progress() as progress:
        result = run_benchmark(settings, dataset, split, model, report, limit=limit, documents=documents,
                               store=store, actor=_actor(), progress=staged(progress))
    _print_report(result)
    if report:
        console.print(f"report written to {report.with_suffix('.json')} and {report.with_suffix('.html')}")
    return result


# -- benchmark ------------------------------------------------------------------------------


@benchmark_app.command("run")
@cli_errors
def benchmark_run(
    dataset: Annotated[str, typer.Option(help="gold | obliqa")] = "gold",
    split: Annotated[str, typer.Option(help="ObliQA: dev, dev-train (odd) or dev-heldout (even)")] = "dev",
    model: Annotated[Optional[str], typer.Option(help="registered NAME@VERSION (default: the configured model)")] = None,
    report: Annotated[Optional[Path], typer.Option(help="write PATH.json and PATH.html")] = None,
    limit: Annotated[Optional[int], typer.Option(help="first N questions only (a partial run)")] = None,
    documents: Annotated[Optional[int], typer.Option(help="ObliQA: first N documents only")] = None,
    store: Annotated[bool, typer.Option(help="store the report in the database")] = True,
) -> None:
    """Benchmark a model (embedding: its own temporary index; generation: the gold prompts and injection probes).

    Exit 1 when the gold thresholds are missed.
    """
    result = _run(dataset, split, model, report, limit, documents, store)
    if dataset == "gold" and not result["passed"]:
        raise typer.Exit(1)


# -- models ---------------------------------------------------------------------------------


@models_app.command("register")
@cli_errors
def models_register(
    key: Annotated[Optional[str], typer.Argument(help="generation: a policy-file model NAME@VERSION")] = None,
    kind: Annotated[str, typer.Option(help="embedding | generation")] = "embedding",
    path: Annotated[Optional[Path], typer.Option(help="embedding: model directory")] = None,
    name: Annotated[Optional[str], typer.Option(help="embedding: model name")] = None,
    version: Annotated[Optional[str], typer.Option(help="embedding: version label")] = None,
) -> None:
    """Register a model as `proposed` (embedding: after its determinism check)."""
    from services.benchmark.service import register_embedding, register_generation
    from services.db.session import transaction
    from services.errors import InvalidRequest
    from services.runtime import build_runtime

    runtime = build_runtime(_settings(), with_models=False)
    try:
        with transaction(runtime.session_factory) as session:
            if kind == "generation":
                if not key:
                    raise InvalidRequest("give the policy-file model as NAME@VERSION")
                model = register_generation(session, runtime.policy, key, _actor())
            elif kind == "embedding":
                if not (path and name and version):
                    raise InvalidRequest("an embedding model needs --path, --name and --version")
                model = register_embedding(session, path, name, version, _actor(),
                                           runtime.settings.embedding_batch_size)
            else:
                raise InvalidRequest(f"unknown kind {kind!r}; expected embedding or generation")
            console.print(f"{model.key} ({model.kind}) is {model.status}; fingerprint {model.fingerprint[:16]}")
    finally:
        runtime.close()


@models_app.command("benchmark")
@cli_errors
def models_benchmark(
    key: Annotated[str, typer.Argument(help="registered model NAME@VERSION (embedding or generation)")],
    report: Annotated[Optional[Path], typer.Option(help="write PATH.json and PATH.html")] = None,
) -> None:
    """Run the gold benchmark for a registered model and store the report against its fingerprint."""
    result = _run("gold", "dev", key, report, None, None, True)
    if not result["passed"]:
        raise typer.Exit(1)


def _sign(key: str, role: str, decision: str, reason: str, signer: str | None) -> None:
    from services.benchmark.runner import gold_dataset_version
    from services.benchmark.service import sign_off
    from services.db.session import transaction
    from services.runtime import build_runtime

    runtime = build_runtime(_settings(), with_models=False)
    try:
        with transaction(runtime.session_factory) as session:
            detail = sign_off(session, runtime.policy, key, role, decision, reason, _actor(signer),
                              gold_dataset_version())
    finally:
        runtime.close()
    pending = ", ".join(detail["pending_signoffs"]) or "none"
    console.print(f"{key}: {decision} recorded for {role}; status {detail['status']}; pending sign-offs: {pending}")


@models_app.command("approve")
@cli_errors
def models_approve(
    key: str,
    role: Annotated[str, typer.Option(help="the sign-off role (see approvals.required_signoffs)")],
    reason: Annotated[str, typer.Option()] = "",
    signer: Annotated[Optional[str], typer.Option(help="who signs (default: the CLI user)")] = None,
) -> None:
    """Approve a benchmarked model for one sign-off role (refused when the evidence misses the policy)."""
    _sign(key, role, "approve", reason, signer)


@models_app.command("reject")
@cli_errors
def models_reject(
    key: str,
    role: Annotated[str, typer.Option(help="the sign-off role")],
    reason: Annotated[str, typer.Option(help="why (required)")],
    signer: Annotated[Optional[str], typer.Option()] = None,
) -> None:
    """Reject a model for one sign-off role."""
    _sign(key, role, "reject", reason, signer)


def _index(runtime):  # noqa: ANN001, ANN202
    from services.vectors import open_vector_index

    s = runtime.settings
    return open_vector_index(s.shard_dir, s.qdrant_url, s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None)


@models_app.command("activate")
@cli_errors
def models_activate(key: str) -> None:
    """Activate an approved model; an embedding model is re-embedded into its own index first (blue/green)."""
    from services.benchmark.activation import activate_model
    from services.runtime import build_runtime

    runtime = build_runtime(_settings(), with_models=False)
    index = _index(runtime)
    try:
        with _progress() as progress:
            task = progress.add_task("re-embedding versions", total=None)
            result = activate_model(runtime.session_factory, index, runtime.policy, key, _actor(role="admin"),
                                    batch_size=runtime.settings.embedding_batch_size,
                                    progress=lambda done, total: progress.update(task, completed=done, total=total))
    finally:
        index.close()
        runtime.close()
    console.print(f"{key} is active" + (f" (index {result.index_name}, {result.versions} versions, "
                                        f"{result.points} points)" if result.index_name else "")
                  + (f"; {result.previous_key} stands by until retired" if result.previous_key else ""))
    if result.kind == "embedding":
        console.print("restart the API with this model configured (POLICYHUB_EMBEDDING_MODEL_*) to serve from "
                      "the new index")


@models_app.command("retire")
@cli_errors
def models_retire(key: str, reason: Annotated[str, typer.Option()] = "") -> None:
    """Retire a model; an embedding model's index is dropped."""
    from services.benchmark.activation import retire_model
    from services.runtime import build_runtime

    runtime = build_runtime(_settings(), with_models=False)
    index = _index(runtime)
    try:
        result = retire_model(runtime.session_factory, index, key, _actor(role="admin"), reason)
    finally:
        index.close()
        runtime.close()
    console.print(f"{key} retired" + (f"; index {result['dropped_index']} dropped" if result["dropped_index"] else ""))


@models_app.command("list")
@cli_errors
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Registered models with status, latest gold report and pending sign-offs."""
    from services.benchmark.service import list_models
    from services.runtime import build_runtime

    runtime = build_runtime(_settings(), with_models=False)
    try:
        with runtime.session_factory() as session:
            rows = list_models(session, runtime.policy)
    finally:
        runtime.close()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("model", "kind", "status", "fingerprint", "gold R@5", "R@10", "MRR", "report", "pending sign-offs")
    for r in rows:
        rep = r["latest_gold_report"] or {}
        m = rep.get("metrics", {})
        fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
        table.add_row(r["key"], r["kind"], r["status"], r["fingerprint"][:12], fmt(m.get("recall_at_5")),
                      fmt(m.get("recall_at_10")), fmt(m.get("mrr")),
                      f"#{rep['id']} {rep['dataset_version']} {'pass' if rep['passed'] else 'FAIL'}" if rep else "",
                      ", ".join(r["pending_signoffs"]))
    console.print(table)


@models_app.command("finetune")
@cli_errors
def models_finetune(
    out: Annotated[Path, typer.Option(help="new or empty directory for the fine-tuned model")],
    split: Annotated[str, typer.Option(help="ObliQA training split")] = "dev-train",
    base: Annotated[Optional[Path], typer.Option(help="base model directory (default: the configured model)")] = None,
    epochs: Annotated[int, typer.Option()] = 1,
    batch_size: Annotated[int, typer.Option()] = 32,
    learning_rate: Annotated[float, typer.Option()] = 3e-5,
    hard_negatives: Annotated[int, typer.Option(help="mined from the gold passage's document")] = 1,
    seed: Annotated[int, typer.Option()] = 42,
    limit: Annotated[Optional[int], typer.Option(help="first N training questions only")] = None,
) -> None:
    """Fine-tune the embedding model on ObliQA training questions (CPU, seeded); register the result to use it."""
    from services.bench.obliqa import DEFAULT_OBLIQA_DIR
    from services.embedding.finetune import FinetuneConfig, finetune_obliqa
    from services.embedding.sentence import default_model_path

    settings = _settings()
    base = base or Path(settings.embedding_model_path or default_model_path())
    config = FinetuneConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                            hard_negatives=hard_negatives, seed=seed)
    with _progress() as progress:
        result = finetune_obliqa(DEFAULT_OBLIQA_DIR, split, base, out, config, limit=limit,
                                 progress=staged(progress))
    console.print(f"fine-tuned on {result.questions} questions ({result.examples} pairs, {result.steps} steps, "
                  f"{result.seconds:.0f} s, last loss {result.final_loss}) -> {result.output}")
    console.print(f"next: policyhub models register --path {result.output} --name NAME --version VERSION, then "
                  "policyhub benchmark run --dataset obliqa --split dev-heldout --model NAME@VERSION")


# -- drift ----------------------------------------------------------------------------------


@drift_app.command("run")
@cli_errors
def drift_run(
    window_days: Annotated[float, typer.Option(help="length of each live-signal window")] = 7.0,
    gold: Annotated[bool, typer.Option(help="re-run the gold set against the approved baseline")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Gold re-run vs the approved baseline, and live signals vs the previous window; exit 1 on any alert."""
    from services.benchmark.drift import run_drift
    from services.runtime import build_runtime

    runtime = build_runtime(_settings())  # the active model, version-locked to the active index
    try:
        result = run_drift(runtime, window_days=window_days, gold=gold, actor=f"cli:{getpass.getuser()}")
    finally:
        runtime.close()
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        table = Table("signal", "test", "baseline", "current", "change", "p", "n (base/cur)", "flag")
        fmt = lambda v, spec=".4f": "" if v is None else format(v, spec)  # noqa: E731
        shifts = ([result["gold"]["shift"]] if "gold" in result else []) + result["live"]["shifts"]
        for s in shifts:
            table.add_row(s["signal"], s["test"], fmt(s["baseline"]), fmt(s["current"]),
                          fmt(s["relative_change"], "+.1%"), fmt(s["p_value"], ".2g"),
                          f"{s['n_baseline']}/{s['n_current']}",
                          Text("ALERT", style="red") if s["significant"] else "ok")
        console.print(table)
        if "gold" in result:
            console.print(f"gold set on the {result['gold']['source']}; baseline report "
                          f"#{result['gold']['baseline_report']}")
        for s in shifts:
            if s["note"] and s["significant"]:
                console.print(f"  {s['signal']}: {s['note']}", highlight=False)
    if result["alerts"]:
        err_console.print(Text(f"{len(result['alerts'])} drift alert(s) recorded", style="red"))
        raise typer.Exit(1)


@drift_app.command("sample")
@cli_errors
def drift_sample(
    n: Annotated[int, typer.Option("--n", help="how many questions")] = 100,
    out: Annotated[Path, typer.Option(help="JSON-lines file to write")] = Path("drift-sample.jsonl"),
    days: Annotated[float, typer.Option(help="sample from the last N days")] = 30.0,
    seed: Annotated[Optional[int], typer.Option()] = None,
    include_pii: Annotated[bool, typer.Option(help="also questions in which PII was found")] = False,
) -> None:
    """Export a random sample of recent audited questions for manual labelling."""
    from services.benchmark.drift import sample_questions, write_sample
    from services.runtime import build_runtime

    runtime = build_runtime(_settings(), with_models=False)
    try:
        with runtime.session_factory() as session:
            rows = sample_questions(session, n, days=days, seed=seed, include_pii=include_pii)
    finally:
        runtime.close()
    write_sample(rows, out)
    console.print(f"{len(rows)} questions written to {out}: fill in `gold` (policy_id, version, clause) "
                  "or set `not_in_policy: true`, then run `policyhub drift label FILE`")


@drift_app.command("label")
@cli_errors
def drift_label(file: Path) -> None:
    """Import labels and report Recall@5 of what was served on live traffic."""
    from services.benchmark.drift import import_labels
    from services.db.session import transaction
    from services.runtime import build_runtime

    runtime = build_runtime(_settings(), with_models=False)
    try:
        with transaction(runtime.session_factory) as session:
            result = import_labels(session, file, actor=f"cli:{getpass.getuser()}")
    finally:
        runtime.close()
    print(json.dumps(result, indent=2))
