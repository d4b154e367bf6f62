"""What every `policyhub` command group shares: error printing and settings start-up."""

from __future__ import annotations

import functools
from collections.abc import Callable

import typer
from rich.console import Console
from rich.progress import Progress
from rich.text import Text

from governance.errors import PolicyHubError

# markup=False on every CLI console: what they print (names, ids, titles, clause text, questions,
# error messages, table cells) comes from outside and may hold "[bold]" or "[/x]"; the few styled
# words are Text objects.
err_console = Console(stderr=True, markup=False)


def print_error(label: str, message: object) -> None:
    """`label` in red, then `message` exactly as written: brackets in it ("[/x]") are not Rich markup."""
    err_console.print(Text.assemble((label, "red"), " ", str(message)), highlight=False)


def cli_errors(fn):  # noqa: ANN001, ANN201
    """Domain errors print the same message the API would return and exit non-zero."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        try:
            return fn(*args, **kwargs)
        except PolicyHubError as exc:
            print_error(f"error ({exc.error}):", exc.detail)
            raise typer.Exit(1) from None
        except (ValueError, FileNotFoundError) as exc:  # settings, policy file, missing files
            print_error("error:", exc)
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
