"""`policyhub` through the CLI runner: what it prints, and what it leaves on disk."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from services.cli import app

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("as_of", ["[bold]2025[/bold]", "[/x]", "[1]"])
def test_an_error_message_with_brackets_is_printed_as_written(as_of):
    # Rich markup would swallow "[bold]" or raise a MarkupError on "[/x]" instead of showing the error.
    result = CliRunner().invoke(app, ["ask", "What is the meal allowance?", "--as-of", as_of],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"error (invalid_request): --as-of '{as_of}' is not a date (YYYY-MM-DD)" in result.output
