"""The `policyhub` command: a thin CLI grouped by noun; each command calls one service."""

from __future__ import annotations

import getpass
import json
import os
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from services.cli_support import cli_errors, err_console, load_settings as _settings, print_error, staged
from services.benchmark.cli import benchmark_app, drift_app, models_app

app = typer.Typer(help="policyhub: governed knowledge hub for bank policies and procedures.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
users_app = typer.Typer(help="Users, roles and API keys.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)
docs_app = typer.Typer(help="Published policy documents.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks (figures for the README's Performance section).", no_args_is_help=True)
policy_app = typer.Typer(help="The governance policy file.", no_args_is_help=True)
faq_app = typer.Typer(help="FAQ templates: approved answers bound to clauses, served at Tier-0.", no_args_is_help=True)
for sub, name in ((db_app, "db"), (users_app, "users"), (docs_app, "documents"), (audit_app, "audit"),
                  (models_app, "models"), (benchmark_app, "benchmark"), (drift_app, "drift"),
                  (bench_app, "bench"), (policy_app, "policy"), (faq_app, "faq")):
    app.add_typer(sub, name=name)

console = Console(markup=False)  # printed values come from outside: see cli_support


def _runtime(with_models: bool = True):  # noqa: ANN202
    from services.runtime import build_runtime

    return build_runtime(_settings(), with_models=with_models)


def _cli_principal(runtime, user: str | None):  # noqa: ANN001, ANN202
    """Local CLI use runs as a named user, or as an operator with the highest clearance."""
    from sqlalchemy import select

    from services.db.models import User
    from services.errors import NotFound
    from services.users.service import Principal

    if user is None:
        return Principal(id=0, name=f"cli:{getpass.getuser()}", role="admin",
                         clearance=runtime.policy.classifications[-1])
    with runtime.session_factory() as session:
        row = session.scalars(select(User).where(User.name == user)).first()
        if row is None:
            raise NotFound(f"no user {user!r}")
        return Principal(id=row.id, name=row.name, role=row.role, clearance=row.clearance)


# -- db -------------------------------------------------------------------------------


@db_app.command("upgrade")
@cli_errors
def db_upgrade() -> None:
    """Apply all migrations to the configured database."""
    from services.db.session import upgrade

    settings = _settings()
    upgrade(settings.sqlalchemy_url)
    console.print("database schema is up to date")


@db_app.command("current")
@cli_errors
def db_current() -> None:
    """Show the database's schema revision and the one this release needs."""
    from services.db.session import current_revision, head_revision, make_engine

    engine = make_engine(_settings().sqlalchemy_url)
    console.print(f"current: {current_revision(engine) or 'none'}  head: {head_revision()}")


# -- policy ---------------------------------------------------------------------------


@policy_app.command("check")
@cli_errors
def policy_check(path: Annotated[Optional[Path], typer.Argument()] = None) -> None:
    """Validate a governance policy file (default: the configured one)."""
    from governance.policy import load_policy

    policy = load_policy(path or _settings().policy_file)
    console.print(f"policy OK: {len(policy.classifications)} classifications, {len(policy.models)} models, "
                  f"{len(policy.prohibited_uses.categories)} prohibited-use categories")


# -- users ----------------------------------------------------------------------------


@users_app.command("add")
@cli_errors
def users_add(
    name: str,
    role: Annotated[str, typer.Option(help="staff | compliance | model_risk | admin")],
    clearance: Annotated[str, typer.Option(help="public | internal | confidential")] = "internal",
) -> None:
    """Add a user and print their API key once (only its hash is stored)."""
    from governance.audit import AuditEntry, append
    from services.db.session import transaction
    from services.users.service import create_user

    runtime = _runtime(with_models=False)
    with transaction(runtime.session_factory) as session:
        user, key = create_user(session, name, role, clearance, runtime.policy.classifications)
        append(session, AuditEntry(request_id=f"user-{user.id}", event="user.added",
                                   actor=f"cli:{getpass.getuser()}", actor_role="admin", channel="cli",
                                   payload={"user": user.name, "role": role, "clearance": clearance,
                                            "key_prefix": user.key_prefix}))
    console.print(f"user {name} ({role}, clearance {clearance}) added. API key (shown once):")
    print(key)


@users_app.command("list")
@cli_errors
def users_list() -> None:
    """List users (never their keys)."""
    from services.users.service import list_users

    runtime = _runtime(with_models=False)
    table = Table("name", "role", "clearance", "key prefix", "active")
    with runtime.session_factory() as session:
        for u in list_users(session):
            table.add_row(u.name, u.role, u.clearance, u.key_prefix + "…", str(u.active))
    console.print(table)


# -- ingest / documents ------------------------------------------------------------------


@app.command()
@cli_errors
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders")],
    policy_id: Annotated[Optional[str], typer.Option()] = None,
    title: Annotated[Optional[str], typer.Option()] = None,
    version: Annotated[Optional[str], typer.Option()] = None,
    effective_date: Annotated[Optional[str], typer.Option(help="YYYY-MM-DD")] = None,
    classification: Annotated[Optional[str], typer.Option()] = None,
    owner: Annotated[Optional[str], typer.Option()] = None,
) -> None:
    """Ingest policy documents (Markdown, text, DOCX, PDF, HTML) into the version-locked index."""
    from rich.progress import Progress

    from services.ingestion.service import iter_document_paths

    overrides = {k: v for k, v in dict(policy_id=policy_id, title=title, version=version,
                                       effective_date=effective_date, classification=classification,
                                       owner=owner).items() if v is not None}
    runtime = _runtime()
    files = iter_document_paths(paths)
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("ingesting", total=len(files))
        summary = runtime.ingestion.ingest_paths(files, overrides,
                                                 on_progress=lambda r: progress.advance(task))
    for r in summary.results:
        if r.status == "rejected":
            print_error("rejected", f"{r.source}: {r.error}")
        else:
            console.print(f"{r.status:<10} {r.policy_id} v{r.version}  {r.clauses} clauses, {r.chunks} chunks",
                          highlight=False)
    console.print(f"documents: {len(summary.published)} published, "
                  f"{sum(r.status == 'unchanged' for r in summary.results)} unchanged, "
                  f"{len(summary.rejected)} rejected; clauses: {summary.clauses}; chunks: {summary.chunks}; "
                  f"seconds: {summary.seconds:.1f}")
    runtime.close()
    if summary.rejected:
        raise typer.Exit(2)


@docs_app.command("list")
@cli_errors
def documents_list() -> None:
    """List policy versions with their status."""
    from sqlalchemy import select

    from services.db.models import DocumentVersion

    runtime = _runtime(with_models=False)
    table = Table("policy", "version", "title", "class", "effective", "status", "clauses", "chunks")
    with runtime.session_factory() as session:
        for v in session.scalars(select(DocumentVersion).order_by(DocumentVersion.policy_id,
                                                                  DocumentVersion.effective_date)):
            table.add_row(v.policy_id, v.version, v.title, v.classification, v.effective_date.isoformat(),
                          v.status, str(v.clause_count), str(v.chunk_count))
    console.print(table)


# -- faq ------------------------------------------------------------------------------

FaqUser = Annotated[Optional[str], typer.Option(
    "--user", help="act as this user (their role applies; default: the CLI operator, as admin)")]


def read_faq_file(path: Path) -> list:  # noqa: ANN201
    """FAQ entries from a YAML or JSON file: one mapping, or a list of them."""
    import yaml
    from pydantic import ValidationError

    from services.errors import FaqRejected, validation_detail
    from services.faq.schemas import FaqCreate

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise FaqRejected(f"{path}: not valid YAML or JSON: {exc}") from exc
    items = data if isinstance(data, list) else [data]
    entries = []
    for i, item in enumerate(items, start=1):
        try:
            entries.append(FaqCreate.model_validate(item))
        except ValidationError as exc:
            where = f"{path} entry {i}" if isinstance(data, list) else str(path)
            raise FaqRejected(f"{where}: {validation_detail(exc.errors())}") from None
    return entries


def _faq_screen(runtime):  # noqa: ANN001, ANN202
    """The request path's prohibited-use check, on the version-locked embedder (no vector index needed)."""
    from services.query.guards import ProhibitedUseDetector
    from services.runtime import load_locked_embedder

    embedder = runtime.embedder or load_locked_embedder(runtime.settings, runtime.session_factory)[0]
    detector = ProhibitedUseDetector(runtime.policy.prohibited_uses, embedder.embed)
    detector.warm_up()
    return detector.check


def _faq_line(entry) -> str:  # noqa: ANN001
    bound = ", ".join(f"{c['policy_id']} v{c['version']} clause {c['clause']}" for c in entry.clauses)
    return f"FAQ {entry.id} {entry.status} (author {entry.author}): bound to {bound}"


@faq_app.command("add")
@cli_errors
def faq_add(file: Annotated[Path, typer.Argument(help="YAML or JSON: questions, answer, clauses (or a list)")],
            user: FaqUser = None) -> None:
    """Propose FAQ entries (role admin); all are stored or, naming what is wrong, none."""
    from services.db.session import transaction
    from services.faq.service import FaqActor, create_faq

    entries = read_faq_file(file)
    runtime = _runtime(with_models=False)
    actor = FaqActor(_cli_principal(runtime, user), channel="cli")
    screen = _faq_screen(runtime)
    with transaction(runtime.session_factory) as session:
        added = [create_faq(session, runtime.policy, data, actor, screen) for data in entries]
        lines = [_faq_line(e) for e in added]
    for line in lines:
        console.print(line, highlight=False)


@faq_app.command("approve")
@cli_errors
def faq_approve(faq_id: int, user: FaqUser = None) -> None:
    """Approve a proposed FAQ (compliance or admin, never its author)."""
    from services.db.session import transaction
    from services.faq.service import FaqActor, approve_faq

    runtime = _runtime(with_models=False)
    actor = FaqActor(_cli_principal(runtime, user), channel="cli")
    with transaction(runtime.session_factory) as session:
        entry = approve_faq(session, runtime.policy, faq_id, actor)
        line = _faq_line(entry)
    console.print(f"{line}; approved by {actor.principal.name}", highlight=False)


@faq_app.command("retire")
@cli_errors
def faq_retire(faq_id: int, user: FaqUser = None,
               reason: Annotated[str, typer.Option(help="why (kept in the audit record)")] = "") -> None:
    """Retire an FAQ (compliance or admin): it is never served again."""
    from services.db.session import transaction
    from services.faq.service import FaqActor, retire_faq

    runtime = _runtime(with_models=False)
    actor = FaqActor(_cli_principal(runtime, user), channel="cli")
    with transaction(runtime.session_factory) as session:
        line = _faq_line(retire_faq(session, runtime.policy, faq_id, actor, reason))
    console.print(line, highlight=False)


@faq_app.command("list")
@cli_errors
def faq_list(user: FaqUser = None,
             status: Annotated[Optional[str], typer.Option(help="proposed | approved | retired")] = None,
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List FAQs the user may see (staff: approved ones within their clearance)."""
    from services.faq.service import list_faqs

    runtime = _runtime(with_models=False)
    principal = _cli_principal(runtime, user)
    with runtime.session_factory() as session:
        rows = list_faqs(session, runtime.policy, principal, status)
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in rows], indent=2, ensure_ascii=False))
        return
    table = Table("id", "status", "author", "approver", "questions", "bound clauses", "answer")
    for r in rows:
        table.add_row(str(r.id), r.status, r.author, r.approver or "", str(len(r.questions)),
                      ", ".join(f"{c.policy_id} v{c.version} {c.clause}" for c in r.clauses), r.answer[:60])
    console.print(table)
    console.print(f"{len(rows)} FAQs")


# -- ask / serve ----------------------------------------------------------------------


@app.command()
@cli_errors
def ask(
    question: str,
    classification: Annotated[Optional[str], typer.Option()] = None,
    as_of: Annotated[Optional[str], typer.Option("--as-of", help="YYYY-MM-DD")] = None,
    user: Annotated[Optional[str], typer.Option(help="answer as this user (their clearance applies)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Ask a policy question; prints the answer and a citation table."""
    from services.errors import InvalidRequest
    from services.query.schemas import AskCreate

    runtime = _runtime()
    principal = _cli_principal(runtime, user)
    try:
        as_of_date = date.fromisoformat(as_of) if as_of else None
    except ValueError as exc:
        # Refused before the service reads it, so audited here like any other invalid request.
        error = InvalidRequest(f"--as-of {as_of!r} is not a date (YYYY-MM-DD)")
        runtime.query.audit_rejected(principal, error, "cli", question=question)
        raise error from exc
    answer = runtime.query.ask(principal, AskCreate(question=question, classification=classification,
                                                    as_of=as_of_date), channel="cli")
    if as_json:
        print(json.dumps(answer.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    console.print(answer.answer, highlight=False)  # no markup: quoted policy text may hold "[see 4.2]"
    if answer.citations:
        table = Table("policy", "clause", "version", "effective", "score")
        for c in answer.citations:
            table.add_row(f"{c.policy_title} ({c.policy_id})", c.clause, c.version, c.effective_date,
                          f"{c.score:.3f}")
        console.print(table)
    model = f"{answer.model.name}@{answer.model.version} ({answer.model.zone})" if answer.model else "no model"
    console.print(f"tier {answer.tier} · {model} · {answer.effective_classification} · "
                  f"{answer.latency_ms.total:.0f} ms · request {answer.request_id}", highlight=False)


@app.command()
@cli_errors
def serve(
    host: Annotated[Optional[str], typer.Option()] = None,
    port: Annotated[Optional[int], typer.Option()] = None,
) -> None:
    """Run the HTTP API (and web pages)."""
    import uvicorn

    from services.api.app import create_app
    from services.db.session import make_engine, require_current_schema

    settings = _settings()
    require_current_schema(make_engine(settings.sqlalchemy_url))  # refuse an old schema before loading models
    uvicorn.run(create_app(settings), host=host or settings.host, port=port or settings.port,
                log_level="warning")


@app.command()
@cli_errors
def demo(
    corpus: Annotated[Path, typer.Option(help="folder of policy documents")] = Path("gold_dataset/policies"),
    keys_file: Annotated[Path, typer.Option(help="where to write the demo users' API keys")] = Path(
        ".policyhub/demo-keys.json"),
    faqs: Annotated[Optional[Path], typer.Option(
        help="FAQ file to seed: added by demo-admin, approved by demo-compliance")] = None,
) -> None:
    """Prepare a demo: migrate, ingest the demo corpus, create one user per role, seed FAQs."""
    from sqlalchemy import select

    from governance.audit import AuditEntry, append
    from services.db.models import User
    from services.db.session import transaction, upgrade
    from services.users.service import create_user

    settings = _settings()
    upgrade(settings.sqlalchemy_url)
    runtime = _runtime()
    summary = runtime.ingestion.ingest_paths([corpus])
    console.print(f"demo corpus: {len(summary.published)} published, {len(summary.rejected)} rejected, "
                  f"{summary.clauses} clauses, {summary.chunks} chunks")
    keys = json.loads(keys_file.read_text()) if keys_file.exists() else {}
    demo_users = {"demo-staff": ("staff", "internal"), "demo-compliance": ("compliance", "confidential"),
                  "demo-model-risk": ("model_risk", "confidential"), "demo-admin": ("admin", "confidential")}
    with transaction(runtime.session_factory) as session:
        for name, (role, clearance) in demo_users.items():
            if session.scalars(select(User).where(User.name == name)).first() is None:
                user, key = create_user(session, name, role, clearance, runtime.policy.classifications)
                append(session, AuditEntry(request_id=f"user-{user.id}", event="user.added", actor="cli:demo",
                                           actor_role="admin", channel="cli",
                                           payload={"user": name, "role": role, "clearance": clearance}))
                keys[name] = key
    write_private_file(keys_file, json.dumps(keys, indent=2))
    console.print(f"demo users' API keys written to {keys_file}")
    if faqs is not None:
        _seed_demo_faqs(runtime, faqs)
    runtime.close()


def _seed_demo_faqs(runtime, path: Path) -> None:  # noqa: ANN001
    """Each FAQ of `path` not yet there is added by demo-admin and approved by demo-compliance."""
    from services.db.session import transaction
    from services.faq.service import FaqActor, approve_faq, create_faq, find_same

    screen = _faq_screen(runtime)
    author = FaqActor(_cli_principal(runtime, "demo-admin"), channel="cli")
    approver = FaqActor(_cli_principal(runtime, "demo-compliance"), channel="cli")
    for data in read_faq_file(path):
        with transaction(runtime.session_factory) as session:
            entry = find_same(session, data) or create_faq(session, runtime.policy, data, author, screen)
            if entry.status == "proposed":
                approve_faq(session, runtime.policy, entry.id, approver)
            console.print(_faq_line(entry), highlight=False)


def write_private_file(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only, at no moment by anyone else.

    mkstemp creates the file 0600 whatever the umask, and the rename puts it in place whole; a
    file written first and narrowed after is readable by every local user in between, and an
    existing file with a wider mode would keep it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# -- audit ----------------------------------------------------------------------------


@audit_app.command("verify")
@cli_errors
def audit_verify(
    checkpoints: Annotated[Optional[Path], typer.Option(help="checkpoint file (default: in the data dir)")] = None,
) -> None:
    """Verify every audit chain; with checkpoints also detect truncation, a recomputed chain and a deleted one."""
    from governance.audit import load_checkpoints, verify_all_chains

    runtime = _runtime(with_models=False)
    cps = load_checkpoints(checkpoints or runtime.settings.checkpoint_file)
    key = runtime.settings.audit_hmac_key.get_secret_value().encode()
    with runtime.session_factory() as session:
        verified = verify_all_chains(session, cps, key=key)
    for chain, result in verified.chains.items():
        status = "OK" if result.ok else "BROKEN"
        if result.first_bad_seq is not None:
            status += f" at seq {result.first_bad_seq}"
        reason = f": {result.reason}" if result.reason else ""
        console.print(f"chain {chain}: {status}, {result.records} records, head seq {result.head_seq}{reason}")
    if verified.ok:
        console.print(f"audit chain OK: {len(verified.chains)} chains, {verified.records} records, "
                      f"{len(cps)} checkpoints checked")
        return
    print_error("audit chain BROKEN", f"{len(verified.broken)} of {len(verified.chains)} chains: "
                                      f"{', '.join(verified.broken)}")
    raise typer.Exit(1)


@audit_app.command("checkpoint")
@cli_errors
def audit_checkpoint(
    out: Annotated[Optional[Path], typer.Option(help="append the checkpoint to this file")] = None,
) -> None:
    """Emit a signed {seq, head_hash, time} checkpoint to store outside the database."""
    from dataclasses import asdict

    from governance.audit import checkpoint_file_lock, load_checkpoints, make_checkpoint, save_checkpoint

    runtime = _runtime(with_models=False)
    path = out or runtime.settings.checkpoint_file
    with checkpoint_file_lock(path), runtime.session_factory() as session:  # running servers append to it too
        cp = make_checkpoint(session, runtime.settings.audit_hmac_key.get_secret_value().encode(),
                             checkpoints=load_checkpoints(path))
        save_checkpoint(path, cp)
    print(json.dumps(asdict(cp)))


def _audit_filter(user, role, tier, refused, q, since, until):  # noqa: ANN001, ANN202
    from datetime import datetime

    from governance.audit_query import AuditFilter

    return AuditFilter(since=datetime.fromisoformat(since) if since else None,
                       until=datetime.fromisoformat(until) if until else None, actor=user, actor_role=role,
                       classification=None, tier=tier, model_key=None, refused=refused, pii_present=None,
                       policy_id=None, text=q, event=None)


@audit_app.command("list")
@cli_errors
def audit_list(
    user: Annotated[Optional[str], typer.Option()] = None,
    role: Annotated[Optional[str], typer.Option()] = None,
    tier: Annotated[Optional[int], typer.Option()] = None,
    refused: Annotated[Optional[bool], typer.Option()] = None,
    q: Annotated[Optional[str], typer.Option(help="text in the question")] = None,
    since: Annotated[Optional[str], typer.Option()] = None,
    until: Annotated[Optional[str], typer.Option()] = None,
    limit: int = 50,
) -> None:
    """List audit records, newest first."""
    from governance.audit_query import list_records

    runtime = _runtime(with_models=False)
    with runtime.session_factory() as session:
        records, total = list_records(session, _audit_filter(user, role, tier, refused, q, since, until), limit=limit)
        table = Table("seq", "time", "user", "event", "tier", "refused", "question")
        for r in records:
            table.add_row(str(r.seq), r.created_at.isoformat(timespec="seconds"), r.actor, r.event,
                          "" if r.tier is None else str(r.tier), str(r.refused), (r.question or "")[:60])
    console.print(table)
    console.print(f"{len(records)} of {total}")


@audit_app.command("show")
@cli_errors
def audit_show(request_id: str) -> None:
    """Show the full trace of one request."""
    from governance.audit_query import get_by_request_id, record_to_dict
    from services.errors import NotFound

    runtime = _runtime(with_models=False)
    with runtime.session_factory() as session:
        record = get_by_request_id(session, request_id)
        if record is None:
            raise NotFound(f"no audit record for request {request_id!r}")
        print(json.dumps(record_to_dict(record, include_payload=True), indent=2, ensure_ascii=False, default=str))


@audit_app.command("export")
@cli_errors
def audit_export(
    format: Annotated[str, typer.Option(help="csv | jsonl")] = "jsonl",
    out: Annotated[Optional[Path], typer.Option()] = None,
    user: Annotated[Optional[str], typer.Option()] = None,
    since: Annotated[Optional[str], typer.Option()] = None,
    until: Annotated[Optional[str], typer.Option()] = None,
) -> None:
    """Export audit records as CSV or JSON lines."""
    from governance.audit_query import export_csv, export_jsonl, iter_records
    from services.errors import InvalidRequest

    if format not in ("csv", "jsonl"):
        raise InvalidRequest(f"unknown format {format!r}; expected csv or jsonl")
    runtime = _runtime(with_models=False)
    sink = out.open("w", encoding="utf-8") if out else sys.stdout
    with runtime.session_factory() as session:
        records = iter_records(session, _audit_filter(user, None, None, None, None, since, until))
        for piece in (export_csv(records) if format == "csv" else export_jsonl(records)):
            sink.write(piece)
    if out:
        sink.close()


# -- bench ----------------------------------------------------------------------------


@bench_app.command("ingest")
@cli_errors
def bench_ingest_cmd(limit: Annotated[Optional[int], typer.Option(help="first N documents only")] = None) -> None:
    """Ingest the 40 ObliQA documents: clauses/s, chunks/s, peak memory, ratio to raw encode."""
    from services.bench.ingest import bench_ingest

    _settings()
    print(json.dumps(bench_ingest(limit=limit), indent=2))


@bench_app.command("query")
@cli_errors
def bench_query_cmd(
    big_chunks: Annotated[int, typer.Option(help="synthetic chunks for the large-index search figure")] = 100_000,
) -> None:
    """Tier-0 end-to-end p50/p95, retrieval alone (gold corpus and a 100k-chunk index), guard chain."""
    from services.bench.query import bench_query

    _settings()
    print(json.dumps(bench_query(big_chunks=big_chunks), indent=2))


@bench_app.command("faq")
@cli_errors
def bench_faq_cmd(
    faqs: Annotated[list[int], typer.Option("--faqs", help="approved FAQs (repeat for several sizes)")] = [0, 1000],  # noqa: B006
    requests: Annotated[int, typer.Option(help="requests timed per size")] = 2000,
) -> None:
    """FAQ check per request (signature query + matrix product), p50/p95, with no FAQs and with many."""
    from services.bench.faq import bench_faq

    _settings()
    print(json.dumps(bench_faq(sizes=tuple(faqs), n=requests), indent=2))


@bench_app.command("audit")
@cli_errors
def bench_audit_cmd(n: Annotated[int, typer.Option(help="records to append")] = 100_000) -> None:
    """Append cost per record (p95), verify throughput and export throughput on a fresh SQLite database."""
    import tempfile

    from governance.audit import bench_audit
    from services.db.session import make_engine, make_session_factory, upgrade

    _settings()
    with tempfile.TemporaryDirectory(prefix="policyhub-bench-") as tmp:
        url = f"sqlite:///{tmp}/audit.db"
        upgrade(url)
        engine = make_engine(url)
        print(json.dumps(bench_audit(make_session_factory(engine), n=n), indent=2))
        engine.dispose()


@bench_app.command("tiering")
@cli_errors
def bench_tiering_cmd(
    limit: Annotated[Optional[int], typer.Option(help="a stratified subset of N gold queries (every category)")] = None,
) -> None:
    """Tiered routing on the gold workload: traffic, cost against all-top-tier, correctness and p95 per tier."""
    from rich.progress import Progress

    from services.bench.tiering import bench_tiering

    _settings()
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("gold queries", total=None)
        result = bench_tiering(limit=limit, progress=lambda done, total: bar.update(task, completed=done, total=total))
    print(json.dumps(result, indent=2))


@bench_app.command("tier1")
@cli_errors
def bench_tier1_cmd(
    limit: Annotated[Optional[int], typer.Option(help="a stratified subset of N answerable gold queries")] = 40,
    min_clauses: Annotated[int, typer.Option(help="corpus size: gold policies, then ObliQA documents")] = 1000,
) -> None:
    """Tier-1 answer latency (p50/p95, CPU), tokens and verification on a corpus of at least 1,000 clauses."""
    from rich.progress import Progress

    from services.bench.tier1 import bench_tier1

    _settings()
    with Progress(console=err_console, transient=True) as bar:
        result = bench_tier1(limit=limit, min_clauses=min_clauses, progress=staged(bar))
    print(json.dumps(result, indent=2))


@bench_app.command("router")
@cli_errors
def bench_router_cmd(n: Annotated[int, typer.Option(help="decisions to time")] = 20_000) -> None:
    """Routing decision p50/p99 over the policy file's models (goal p99 <= 1 ms)."""
    from services.bench.tier1 import bench_router

    _settings()
    print(json.dumps(bench_router(n=n), indent=2))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
