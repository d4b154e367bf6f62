"""structlog set-up: dotted event names, a request id bound per request, secrets scrubbed."""

from __future__ import annotations

import logging
import re
import sys

import structlog

from governance.redaction import redact_urls

# API keys and bearer tokens never reach a log line, whatever field they hide in; nor do
# credentials written into a URL (`https://user:pass@host`, `?api_key=`).
SECRET_PATTERN = re.compile(r"(phk_[A-Za-z0-9_\-]{8,}|Bearer\s+\S+|sk-[A-Za-z0-9_\-]{8,})")


def _scrub(value):  # noqa: ANN001, ANN202
    if isinstance(value, str):
        return redact_urls(SECRET_PATTERN.sub("[redacted]", value))
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return value


def scrub_secrets(_logger, _method, event_dict):  # noqa: ANN001, ANN201
    return {k: _scrub(v) for k, v in event_dict.items()}


class _CurrentStderr:
    """Whatever `sys.stderr` is when a line is written, not when logging was configured.

    A CLI runner or test harness that swaps and later closes stderr must not leave the
    logger writing to a closed file.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(json_logs: bool, level: int = logging.INFO) -> None:
    renderer = structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # The traceback becomes plain text here, before scrubbing: JSON lines then carry it
            # (the renderer alone would write `"exc_info": true`), and the console renderer's
            # own formatter, which prints every frame's locals (API keys, the session secret),
            # is never used.
            structlog.processors.format_exc_info,
            scrub_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=False,
    )
