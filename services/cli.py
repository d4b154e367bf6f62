"""The `policyhub` command: a thin CLI grouped by noun; each command calls one service."""

from __future__ import annotations

import functools
import getpass
import json
import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from governance.errors import PolicyHubError

app = typer.Typer(help="policyhub: governed knowledge hub for bank policies and procedures.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
users_app = typer.Typer(help="Users, roles and API keys.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)
docs_app = typer.Typer(help="Published policy documents.", no_args_is_help=True)
models_app = typer.Typer(help="Model registry and approvals.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks (figures for the README's Performance section).", no_args_is_help=True)
policy_app = typer.Typer(help="The governance policy file.", no_args_is_help=True)
for sub, name in ((db_app, "db"), (users_app, "users"), (docs_app, "documents"), (audit_app, "audit"),
                  (models_app, "models"), (bench_app, "bench"), (policy_app, "policy")):
    app.add_typer(sub, name=name)

console = Console()
err_console = Console(stderr=True)


def cli_errors(fn):  # noqa: ANN001, ANN201
    """Domain errors print the same message the API would return and exit non-zero."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        try:
            return fn(*args, **kwargs)
        except PolicyHubError as exc:
            err_console.print(f"[red]error ({exc.error}):[/red] {exc.detail}", highlight=False)
            raise typer.Exit(1) from None
        except ValueError as exc:  # settings and policy-file validation
            err_console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


def _settings():  # noqa: ANN202
    from services.config import get_settings
    from services.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.json_logs)
    return settings


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
            err_console.print(f"[red]rejected[/red] {r.source}: {r.error}", highlight=False)
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

    try:
        as_of_date = date.fromisoformat(as_of) if as_of else None
    except ValueError as exc:
        raise InvalidRequest(f"--as-of {as_of!r} is not a date (YYYY-MM-DD)") from exc
    runtime = _runtime()
    principal = _cli_principal(runtime, user)
    answer = runtime.query.ask(principal, AskCreate(question=question, classification=classification,
                                                    as_of=as_of_date), channel="cli")
    if as_json:
        print(json.dumps(answer.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    console.print(answer.answer, highlight=False)
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
) -> None:
    """Prepare a demo: migrate, ingest the demo corpus, and create one user per role."""
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
    keys_file.parent.mkdir(parents=True, exist_ok=True)
    keys_file.write_text(json.dumps(keys, indent=2))
    keys_file.chmod(0o600)
    console.print(f"demo users' API keys written to {keys_file}")
    runtime.close()


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
