"""What every `policyhub` command group shares: error printing and settings start-up."""

from __future__ import annotations

import functools
from collections.abc import Callable

import typer
from rich.console import Console
from rich.progress import Progress

from governance.errors import PolicyHubError

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
        except (ValueError, FileNotFoundError) as exc:  # settings, policy file, missing files
            err_console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


def load_settings():  # noqa: ANN201
    from services.config import get_settings
    from services.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.json_logs)
    return settings


def staged(bar: Progress) -> Callable[[str, int, int], None]:
    """A `progress(stage, done, total)` callback that shows one bar per stage on `bar`."""
    tasks: dict[str, int] = {}

    def advance(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return advance
