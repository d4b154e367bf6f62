"""The FastAPI application: lifespan builds the runtime once; one error shape for every failure."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.config import Settings, get_settings
from services.errors import PolicyHubError, validation_detail
from services.logging import configure_logging

log = structlog.get_logger()

JSON_BODY_LIMIT = 256 * 1024  # questions are at most a few KB; anything far larger is refused unread
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a caller's X-Request-Id kept for log correlation


def error_body(error: str, detail) -> dict:  # noqa: ANN001
    return {"error": error, "detail": detail}


class BodySizeLimit:
    """Refuses a request body over its path's limit, whether or not the client declared its length.

    A Content-Length over the limit is answered at once. A body sent without one (chunked) is
    counted as it arrives: FastAPI reads the body before it checks the API key, so uncounted,
    anyone could stream an unbounded body into memory (or, as an upload, onto disk). Past the
    limit the app sees the client disconnect, and its answer to that is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        too_large = JSONResponse(error_body("payload_too_large", f"request body over {limit:,} bytes"), 413)
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await too_large(scope, receive, send)
            return
        received, over, started = 0, False, False

        async def counted_receive() -> Message:
            nonlocal received, over
            message = {"type": "http.disconnect"} if over else await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                over = received > limit
                if over:
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return
            started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await too_large(scope, receive, send)


def create_app(settings: Settings | None = None, runtime=None) -> FastAPI:  # noqa: ANN001
    settings = settings or get_settings()
    configure_logging(settings.json_logs)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        from services.audit_checkpoints import AuditCheckpointer
        from services.runtime import build_runtime

        rt = runtime or build_runtime(settings)
        rt.ingestion.recover_pending()
        _ = rt.query  # warm every model before the first request
        app.state.runtime = rt
        checkpointer = AuditCheckpointer(rt.session_factory, rt.settings.audit_hmac_key.get_secret_value().encode(),
                                         rt.settings.checkpoint_file, rt.policy.audit.checkpoint_interval_seconds)
        checkpointer.start()
        log.info("serve.ready", index=rt.identity.index_name)
        try:
            yield
        finally:
            await run_in_threadpool(checkpointer.stop)  # signs the final heads, off the event loop
            if runtime is None:
                rt.close()

    # Swagger UI and ReDoc load their scripts from a CDN, with no CSP, onto the origin whose
    # cookies sign the web pages in, and list every endpoint to anyone: a developer's aid only.
    no_docs = {"docs_url": None, "redoc_url": None, "openapi_url": None} if settings.env == "prod" else {}
    app = FastAPI(title="policyhub", version="0.1.0", lifespan=lifespan,
                  description="Governed policy knowledge hub: cited answers, audited, model-risk gated.", **no_docs)

    def body_limit(path: str) -> int:
        return settings.max_upload_bytes + 64 * 1024 if path.startswith("/v1/documents") else JSON_BODY_LIMIT

    app.add_middleware(BodySizeLimit, limit_for=body_limit)  # inside request_context: a 413 has a request id too

    @app.middleware("http")
    async def request_context(request: Request, call_next):  # noqa: ANN001, ANN202
        # The request id keys the audit trail, so the server always makes it: a client-chosen one
        # could repeat another request's, and a lookup by id would show that request's record.
        # The caller's own id, if well-formed, only correlates the log lines with theirs.
        request_id = uuid.uuid4().hex
        request.state.request_id = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id, path=request.url.path)
        client_id = request.headers.get("x-request-id")
        if client_id is not None and CLIENT_REQUEST_ID.fullmatch(client_id):
            structlog.contextvars.bind_contextvars(client_request_id=client_id)
        response = await call_next(request)
        response.headers["x-request-id"] = request_id
        return response

    @app.exception_handler(PolicyHubError)
    async def domain_error(request: Request, exc: PolicyHubError) -> JSONResponse:
        log.info("request.error", error=exc.error, status=exc.status_code)
        return JSONResponse(error_body(exc.error, exc.detail), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = validation_detail(exc.errors())
        if request.url.path in (ask.ASK_PATH, ask.CHAT_PATH):
            # A question refused as malformed is still a request the audit trail must show.
            try:
                await run_in_threadpool(ask.audit_malformed, request, exc.body, detail)
            except PolicyHubError as audit_error:  # the audit store is down: no 422 without its record
                return await domain_error(request, audit_error)
        return JSONResponse(error_body("invalid_request", detail), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body("http_error", exc.detail), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request.unexpected_error")
        return JSONResponse(error_body("internal_error", "unexpected error; see the server log"), status_code=500)

    from services.api import ask, audit, documents, faq, health, registry

    from services.web.routes import router as web_router

    for module in (ask, documents, faq, audit, health, registry):
        app.include_router(module.router)
    app.include_router(registry.drift_router)
    app.include_router(web_router)
    return app
