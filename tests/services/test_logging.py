"""Log lines: secrets never reach them, and a logged error keeps its traceback."""

from __future__ import annotations

import pytest
import structlog

from services.logging import configure_logging

pytestmark = pytest.mark.unit

API_KEY = "phk_" + "k" * 40
SESSION_SECRET = "session-secret-that-matches-no-pattern"


def fail_while_holding_secrets() -> None:
    api_key = API_KEY  # noqa: F841  (a local, as in a sign-in handler)
    secret = SESSION_SECRET  # noqa: F841  (a local, as in web_user)
    raise RuntimeError(f"upstream refused Authorization: Bearer {API_KEY}")


@pytest.mark.parametrize("json_logs", [True, False])
def test_a_logged_exception_keeps_its_traceback_but_no_secret(capsys, json_logs):
    configure_logging(json_logs)
    try:
        fail_while_holding_secrets()
    except RuntimeError:
        structlog.get_logger().exception("request.unexpected_error")
    err = capsys.readouterr().err
    assert "request.unexpected_error" in err
    # "see the server log" must lead somewhere, in production's JSON lines too
    assert "fail_while_holding_secrets" in err and "RuntimeError" in err
    assert API_KEY not in err
    assert SESSION_SECRET not in err  # a traceback that prints frame locals would show it


@pytest.mark.parametrize("json_logs", [True, False])
def test_credentials_inside_a_logged_url_are_scrubbed(capsys, json_logs):
    configure_logging(json_logs)
    structlog.get_logger().warning("generation.failed", endpoint="https://svc:pa55word@llm.bank.internal/v1",
                                   error="cannot reach https://llm.bank.internal/v1?api_key=k3y-in-url: refused")
    err = capsys.readouterr().err
    assert "llm.bank.internal/v1" in err
    assert "pa55word" not in err and "k3y-in-url" not in err
