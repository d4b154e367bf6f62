"""The browser pages: sign-in, staff chat, compliance audit, model risk, operations.

Server-rendered Jinja2 templates, one small script of our own, charts as inline SVG: no
front-end build and nothing fetched from the internet. Every page enforces the same
roles as the API it mirrors, every state-changing request carries the session's CSRF
token, and every response carries a strict Content-Security-Policy.

Handlers stay thin: they authenticate, call one service or governance function, and
render. The sign-off form calls `governance.approvals.record_signoff`, exactly as the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from governance.approvals import Actor, latest_report, record_signoff, signoff_status, thresholds_for
from governance.audit import load_checkpoints, verify_all_chains
from governance.audit_query import (
    AuditFilter,
    export_csv,
    export_jsonl,
    get_by_request_id,
    iter_records,
    list_records,
)
from governance.records.models import BenchmarkReport, DriftAlert, ModelSignoff, RegisteredModel
from governance.registry import get_model_or_raise
from services.api.deps import ALL_ROLES, COMPLIANCE_ROLES, MODEL_RISK_ROLES, RuntimeDep, SessionDep
from services.benchmark.runner import gold_dataset_version
from services.db.models import ROLES
from services.db.session import transaction
from services.errors import InvalidRequest, NotFound, PolicyHubError, Unauthenticated, validation_detail
from services.query.schemas import NOT_AVAILABLE, AskCreate
from services.users.service import Principal
from services.web import charts
from services.web.audit_view import PAGE_SIZES, parse_audit_params
from services.web.csrf import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    CsrfRejected,
    csrf_token_for,
    new_login_token,
    require_csrf,
    tokens_match,
)
from services.web.feedback import feedback_for, record_feedback
from services.web.operations import request_facts, summarize, tier_label, top_tier_model
from services.web.session import (
    SESSION_COOKIE,
    WebSession,
    clear_session_cookie,
    cookie_is_secure,
    decode_session,
    end_session,
    session_principal,
    set_session_cookie,
    start_session,
)

log = structlog.get_logger()

WEB_DIR = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=WEB_DIR / "templates")
STATIC_FILES = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}

OPERATIONS_ROLES = ("compliance", "admin")
LANDING = {"staff": "/chat", "compliance": "/audit", "model_risk": "/models", "admin": "/chat"}
NAVIGATION = (("Ask", "/chat", ALL_ROLES), ("Audit", "/audit", COMPLIANCE_ROLES),
              ("Models", "/models", MODEL_RISK_ROLES), ("Operations", "/operations", OPERATIONS_ROLES))

PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
# A stored benchmark report is shown in a sandboxed frame: its own inline styles only, no script.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; sandbox"


# -- errors a page turns into a redirect or an HTML page ---------------------------------------


class LoginRequired(Exception):
    """No valid session: pages redirect to the sign-in page, scripts get 401."""


class PageForbidden(Exception):
    """Signed in, but the role may not use this page."""


def is_script_endpoint(request: Request) -> bool:
    return request.url.path.startswith("/web/")


class WebRoute(APIRoute):
    """Renders the web pages' failures as pages (or JSON for script endpoints) and adds security headers.

    The application's handlers answer JSON, which is right for the API and wrong for a browser
    tab; wrapping the route keeps the web's error pages out of the application factory.
    """

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def web_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired:
                if is_script_endpoint(request):
                    response = JSONResponse({"error": "unauthenticated", "detail": "sign in again"}, 401)
                else:
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    response = RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)
            except PageForbidden as exc:
                response = error_response(request, 403, "Not permitted", str(exc))
            except CsrfRejected:
                response = error_response(request, 403, "Form expired",
                                          "The form was missing its security token or the token did not match "
                                          "your session. Reload the page and try again.")
            except RequestValidationError as exc:
                detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                                   for e in exc.errors())
                response = error_response(request, 422, "Invalid request", detail)
            except PolicyHubError as exc:
                response = error_response(request, exc.status_code, exc.error.replace("_", " ").capitalize(),
                                          exc.detail)
            # A body that stopped arriving — the client left, or BodySizeLimit cut it off and its 413
            # replaces this answer — is no bug: FastAPI reports it as a 400 while parsing a form, the
            # endpoints that read the body themselves see ClientDisconnect.
            except HTTPException as exc:
                response = error_response(request, exc.status_code, "Request refused", str(exc.detail))
            except ClientDisconnect:
                response = error_response(request, 400, "Request refused", "The request body did not arrive.")
            except Exception:
                log.exception("web.unexpected_error")
                response = error_response(request, 500, "Something went wrong",
                                          "An unexpected error occurred; it has been logged.")
            add_security_headers(response, PAGE_CSP)
            return response

        return web_handler


def add_security_headers(response: Response, csp: str) -> None:
    response.headers.setdefault("content-security-policy", csp)
    response.headers.setdefault("x-content-type-options", "nosniff")
    response.headers.setdefault("referrer-policy", "same-origin")
    response.headers.setdefault("x-frame-options", "DENY" if "frame-ancestors 'none'" in csp else "SAMEORIGIN")
    response.headers.setdefault("cache-control", "no-store")


router = APIRouter(route_class=WebRoute, include_in_schema=False)


# -- the signed-in user --------------------------------------------------------------------------


@dataclass(frozen=True)
class WebUser:
    principal: Principal
    csrf_token: str
    session: WebSession

    @property
    def role(self) -> str:
        return self.principal.role


def session_secret(runtime) -> str:  # noqa: ANN001
    return runtime.settings.session_secret.get_secret_value()


def web_user(request: Request, runtime: RuntimeDep) -> WebUser:
    secret = session_secret(runtime)
    session = decode_session(secret, request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise LoginRequired
    with runtime.session_factory() as db:
        principal = session_principal(db, secret, session)
    if principal is None:
        raise LoginRequired
    user = WebUser(principal, csrf_token_for(secret, session.sid), session)
    request.state.principal = principal
    request.state.web_user = user
    structlog.contextvars.bind_contextvars(actor=principal.name)
    return user


def page_for(*roles: str, csrf: bool = False) -> Callable:
    """A dependency: a signed-in user with one of `roles`; with `csrf`, the request must carry the token."""

    async def dependency(request: Request, user: Annotated[WebUser, Depends(web_user)]) -> WebUser:
        if csrf:
            await require_csrf(request, user.csrf_token)
        if user.role not in roles:
            raise PageForbidden(f"Your role ({user.role}) may not use this page; it needs one of: "
                                f"{', '.join(roles)}.")
        return user

    return dependency


AnyPage = Annotated[WebUser, Depends(page_for(*ALL_ROLES))]
AnyPost = Annotated[WebUser, Depends(page_for(*ALL_ROLES, csrf=True))]
CompliancePage = Annotated[WebUser, Depends(page_for(*COMPLIANCE_ROLES))]
ModelRiskPage = Annotated[WebUser, Depends(page_for(*MODEL_RISK_ROLES))]
ModelRiskPost = Annotated[WebUser, Depends(page_for(*MODEL_RISK_ROLES, csrf=True))]
OperationsPage = Annotated[WebUser, Depends(page_for(*OPERATIONS_ROLES))]


def navigation(role: str, path: str) -> list[dict]:
    """Only the pages the role may open."""
    return [{"label": label, "href": href, "current": path == href or path.startswith(href + "/")}
            for label, href, roles in NAVIGATION if role in roles]


def render(request: Request, name: str, user: WebUser | None, status_code: int = 200, **context: object) -> Response:
    nav = navigation(user.role, request.url.path) if user else []
    return templates.TemplateResponse(request, name, {"user": user, "nav": nav,
                                                      "csrf_token": user.csrf_token if user else "",
                                                      "csrf_field": CSRF_FIELD, **context},
                                      status_code=status_code)


def error_response(request: Request, status: int, title: str, detail: str) -> Response:
    if is_script_endpoint(request):
        return JSONResponse({"error": title.lower().replace(" ", "_"), "detail": detail}, status_code=status)
    user = getattr(request.state, "web_user", None)
    return render(request, "error.html", user, status_code=status, title=title, detail=detail, status=status)


def safe_next(target: str | None) -> str | None:
    """Only a path on this site: never another host (open redirect) and never the sign-in pages."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    if any(ch.isspace() or ord(ch) < 32 for ch in target):  # browsers drop tabs: "/\t/evil" is "//evil"
        return None
    if target.split("?")[0] in ("/login", "/logout"):
        return None
    return target


def as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone-aware columns; they were stored as UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def dt(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


templates.env.filters["dt"] = dt
templates.env.filters["fmt"] = charts.format_value
templates.env.globals["NOT_AVAILABLE"] = NOT_AVAILABLE


# -- static files and sign-in ------------------------------------------------------------------


@router.get("/static/web/{name}")
def static_file(name: str) -> Response:
    if name not in STATIC_FILES:
        raise NotFound(f"no static file {name!r}")
    return FileResponse(WEB_DIR / "static" / name, media_type=STATIC_FILES[name],
                        headers={"cache-control": "no-cache"})


@router.get("/")
def home(request: Request, runtime: RuntimeDep) -> Response:
    try:
        user = web_user(request, runtime)
    except LoginRequired:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse(LANDING.get(user.role, "/chat"), status_code=303)


def login_page(request: Request, status_code: int = 200, error: str | None = None,
               next_path: str | None = None) -> Response:
    token = new_login_token()
    response = render(request, "login.html", None, status_code=status_code, login_token=token, error=error,
                      next_path=next_path or "")
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=1800, path="/login", httponly=True, samesite="strict",
                        secure=cookie_is_secure(request))
    return response


@router.get("/login")
def login_form(request: Request, runtime: RuntimeDep, next: str | None = None) -> Response:
    try:
        user = web_user(request, runtime)
        return RedirectResponse(safe_next(next) or LANDING.get(user.role, "/chat"), status_code=303)
    except LoginRequired:
        return login_page(request, next_path=safe_next(next))


@router.post("/login")
def login(request: Request, runtime: RuntimeDep, api_key: Annotated[str, Form(max_length=512)] = "",
          csrf_token: Annotated[str, Form(max_length=256)] = "",
          next: Annotated[str, Form(max_length=2048)] = "") -> Response:
    """Exchange an API key for a session cookie; the key itself is never stored in the browser."""
    # No session exists yet, so the token is a double-submit cookie set with the form.
    if not tokens_match(request.cookies.get(LOGIN_CSRF_COOKIE), csrf_token):
        raise CsrfRejected("sign-in form token mismatch")
    try:
        with transaction(runtime.session_factory) as db:
            principal, cookie = start_session(db, session_secret(runtime), api_key)
    except Unauthenticated:
        log.info("web.sign_in_failed")
        return login_page(request, 401, "That API key was not accepted. Check it and try again.", safe_next(next))
    log.info("web.signed_in", actor=principal.name, role=principal.role)
    response = RedirectResponse(safe_next(next) or LANDING.get(principal.role, "/chat"), status_code=303)
    set_session_cookie(response, request, cookie)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, user: AnyPost, runtime: RuntimeDep) -> Response:
    """End the session on the server too: a copy of the cookie is refused from now on."""
    try:
        with transaction(runtime.session_factory) as db:
            end_session(db, user.session)
    except IntegrityError:
        pass  # the same session signed out twice at once (two tabs): it is revoked either way
    log.info("web.signed_out", actor=user.principal.name)
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(response, request)
    return response


# -- staff chat ----------------------------------------------------------------------------------


@router.get("/chat")
def chat_page(request: Request, user: AnyPage, runtime: RuntimeDep) -> Response:
    policy = runtime.policy
    return render(request, "chat.html", user, classifications=policy.classifications,
                  tiers={str(t.id): t.name for t in policy.tiers})


class WebAskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(max_length=20_000)
    classification: str | None = None
    as_of: date | None = None


def question_in(raw: bytes) -> object:
    """The question of a body its schema rejected, when one can be read, for the audit record."""
    try:
        fields = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested past what json.loads can read
        return None
    return fields.get("question") if isinstance(fields, dict) else None


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def answer_pieces(text: str, words: int = 6) -> Iterator[str]:
    parts = text.split(" ")
    for i in range(0, len(parts), words):
        piece = " ".join(parts[i:i + words])
        yield piece if i == 0 else " " + piece


@router.post("/web/ask")
async def web_ask(request: Request, user: AnyPost, runtime: RuntimeDep) -> Response:
    """Ask as the signed-in user; the audited answer streams back as server-sent events."""
    raw = await request.body()
    try:
        body = WebAskCreate.model_validate_json(raw)
    except ValidationError as exc:
        detail = validation_detail(exc.errors(include_url=False))
        # A malformed question is still a request the audit trail must show; if its record cannot
        # be written, AuditUnavailable answers 503 (as the API does), never the 422.
        await run_in_threadpool(runtime.query.audit_rejected, user.principal, InvalidRequest(detail), "web",
                                request.state.request_id, question_in(raw))
        return JSONResponse({"error": "invalid_request", "detail": detail}, 422)
    ask = AskCreate(question=body.question, classification=body.classification or None, as_of=body.as_of)
    request_id = request.state.request_id

    async def events() -> object:
        yield sse("status", {"message": "Searching the policies you may read…"})
        try:
            # The answer is complete and its audit record committed before any of it is sent.
            answer = await run_in_threadpool(runtime.query.ask, user.principal, ask, "web", request_id)
        except PolicyHubError as exc:
            yield sse("failure", {"error": exc.error, "detail": exc.detail, "status": exc.status_code})
            return
        except Exception:
            log.exception("web.ask_failed")
            yield sse("failure", {"error": "internal_error", "detail": "unexpected error; see the server log",
                                  "status": 500, "request_id": request_id})
            return
        for piece in answer_pieces(answer.answer):
            yield sse("delta", {"text": piece})
        yield sse("answer", answer.model_dump(mode="json"))

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"x-accel-buffering": "no", "cache-control": "no-store"})


class FeedbackCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=64)
    rating: Literal[1, -1]
    comment: str = Field(default="", max_length=2000)


@router.post("/web/feedback")
async def web_feedback(request: Request, user: AnyPost, runtime: RuntimeDep) -> Response:
    """Thumbs up or down on one of the caller's own answers."""
    try:
        body = FeedbackCreate.model_validate_json(await request.body())
    except ValidationError as exc:
        return JSONResponse({"error": "invalid_request", "detail": exc.errors(include_url=False)[0]["msg"]}, 422)

    def store() -> None:
        with transaction(runtime.session_factory) as db:
            record_feedback(db, user.principal, body.request_id, body.rating, body.comment.strip())

    await run_in_threadpool(store)
    log.info("web.feedback", request_id=body.request_id, rating=body.rating)
    return JSONResponse({"request_id": body.request_id, "rating": body.rating})


# -- compliance: audit trail ---------------------------------------------------------------------


@router.get("/audit")
def audit_page(request: Request, user: CompliancePage, session: SessionDep, runtime: RuntimeDep) -> Response:
    flt, params = parse_audit_params(request.query_params)
    records, total = list_records(session, flt, limit=params.limit, offset=params.offset)
    prev_offset = max(0, params.offset - params.limit) if params.offset else None
    next_offset = params.offset + params.limit if params.offset + params.limit < total else None
    return render(request, "audit_list.html", user, records=records, total=total, params=params,
                  roles=ROLES, classifications=runtime.policy.classifications,
                  tiers=[(t.id, t.name) for t in runtime.policy.tiers], page_sizes=PAGE_SIZES,
                  prev_offset=prev_offset, next_offset=next_offset)


@router.get("/audit/verify")
def audit_verify_page(request: Request, user: CompliancePage, session: SessionDep, runtime: RuntimeDep) -> Response:
    checkpoints = load_checkpoints(runtime.settings.checkpoint_file)
    # With the key, a checkpoint file rewritten to match a rewritten chain is caught too.
    verified = verify_all_chains(session, checkpoints, key=runtime.settings.audit_hmac_key.get_secret_value().encode())
    log.info("web.audit_verified", ok=verified.ok, records=verified.records, chains=len(verified.chains),
             broken=verified.broken)
    return render(request, "audit_verify.html", user, verified=verified, checkpoints=len(checkpoints),
                  checked_at=datetime.now(UTC))


@router.get("/audit/export")
def audit_export(request: Request, user: CompliancePage, runtime: RuntimeDep,
                 format: Literal["csv", "jsonl"] = "csv") -> Response:
    """The same export as GET /v1/audit/export, authorised by the browser session."""
    flt, params = parse_audit_params(request.query_params)
    if params.errors:
        raise InvalidRequest("; ".join(params.errors))

    def stream() -> Iterator[str]:
        with runtime.session_factory() as db:
            records = iter_records(db, flt)
            yield from (export_csv(records) if format == "csv" else export_jsonl(records))

    log.info("web.audit_exported", format=format, filters=params.query())
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(stream(), media_type=media,
                             headers={"content-disposition": f"attachment; filename=audit.{format}"})


@router.get("/audit/records/{request_id}")
def audit_record_page(request_id: str, request: Request, user: CompliancePage, session: SessionDep,
                      runtime: RuntimeDep) -> Response:
    record = get_by_request_id(session, request_id)
    if record is None:
        raise NotFound(f"no audit record for request {request_id!r}")
    payload = json.loads(record.payload) if isinstance(record.payload, str) else (record.payload or {})
    return render(request, "audit_record.html", user, record=record, payload=payload,
                  trace=payload.get("trace") or {}, response=payload.get("response") or {},
                  feedback=feedback_for(session, request_id),
                  payload_json=json.dumps(payload, indent=2, ensure_ascii=False, default=str))


# -- model risk ----------------------------------------------------------------------------------

DRIFT_WINDOW_DAYS = 30


def recent_alert_counts(session, since: datetime) -> dict[str, int]:  # noqa: ANN001
    counts: dict[str, int] = {}
    for key in session.scalars(select(DriftAlert.model_key).where(DriftAlert.created_at >= since)):
        counts[key] = counts.get(key, 0) + 1
    return counts


@router.get("/models")
def models_page(request: Request, user: ModelRiskPage, session: SessionDep, runtime: RuntimeDep) -> Response:
    since = datetime.now(UTC) - timedelta(days=DRIFT_WINDOW_DAYS)
    alert_counts = recent_alert_counts(session, since)
    rows = []
    for model in session.scalars(select(RegisteredModel).order_by(RegisteredModel.kind, RegisteredModel.id)):
        rows.append({"model": model, "signoffs": signoff_status(session, model, runtime.policy),
                     "report": latest_report(session, model.fingerprint),
                     "alerts": alert_counts.get(model.key, 0)})
    registered = {(r["model"].name, r["model"].version) for r in rows}
    unregistered = [m for m in runtime.policy.models if (m.name, m.version) not in registered]
    alerts = session.scalars(select(DriftAlert).order_by(DriftAlert.id.desc()).limit(50)).all()
    return render(request, "models.html", user, rows=rows, unregistered=unregistered, alerts=alerts,
                  drift_days=DRIFT_WINDOW_DAYS, required=runtime.policy.approvals.required_signoffs)


def report_charts(report: BenchmarkReport, thresholds: dict[str, float]) -> list[tuple[str, object]]:
    """Charts of a benchmark report's metrics (ranking, or a generation model's answer rates) against the
    policy's thresholds, and per category."""
    metrics = report.metrics or {}
    out = []
    ranking = [charts.Bar(name.replace("_", " "), float(value), marker=thresholds.get(name))
               for name, value in metrics.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "queries"
               and 0.0 <= float(value) <= 1.0]
    if ranking:
        caption = (("Answer metrics" if report.kind == "generation" else "Ranking metrics")
                   + (" (dashed line: the policy's minimum)" if thresholds else ""))
        out.append((caption, charts.bar_chart(ranking, title=f"Report {report.id}: {caption}", max_value=1.0)))
    per_category = metrics.get("per_category") or {}
    cat_bars = [charts.Bar(cat, float(entry["ranking"]["recall_at_5"]), series=1)
                for cat, entry in per_category.items()
                if isinstance(entry, dict)
                and isinstance((entry.get("ranking") or {}).get("recall_at_5"), (int, float))]
    if cat_bars:
        caption = "Recall@5 per question category"
        out.append((caption, charts.bar_chart(cat_bars, title=f"Report {report.id}: {caption}", max_value=1.0)))
    refusal = metrics.get("refusal") or {}
    refusal_bars = [charts.Bar(name.replace("_", " "), float(refusal[name]), series=2)
                    for name in ("accuracy", "refusal_recall", "false_refusal_rate")
                    if isinstance(refusal.get(name), (int, float))]
    if refusal_bars and refusal.get("queries"):
        caption = "Refusal behaviour"
        out.append((caption, charts.bar_chart(refusal_bars, title=f"Report {report.id}: {caption}", max_value=1.0)))
    return out


def load_model(session, model_id: int) -> RegisteredModel:  # noqa: ANN001
    model = session.get(RegisteredModel, model_id)
    if model is None:
        raise NotFound(f"no registered model with id {model_id}")
    return model


def model_detail(request: Request, user: WebUser, session, runtime, model: RegisteredModel,  # noqa: ANN001
                 status_code: int = 200, error: str | None = None, form: dict | None = None) -> Response:
    reports = session.scalars(select(BenchmarkReport).where(BenchmarkReport.fingerprint == model.fingerprint)
                              .order_by(BenchmarkReport.id.desc())).all()
    thresholds = thresholds_for(model.kind, runtime.policy)
    history = session.scalars(select(ModelSignoff).where(ModelSignoff.model_id == model.id)
                              .order_by(ModelSignoff.id.desc())).all()
    alerts = session.scalars(select(DriftAlert).where(DriftAlert.model_key == model.key)
                             .order_by(DriftAlert.id.desc()).limit(50)).all()
    return render(request, "model_detail.html", user, status_code=status_code, model=model,
                  status=signoff_status(session, model, runtime.policy), history=history, reports=reports,
                  charts_by_report={r.id: report_charts(r, thresholds) for r in reports[:3]},
                  thresholds=thresholds, alerts=alerts, required=runtime.policy.approvals.required_signoffs,
                  error=error, form=form or {}, done=request.query_params.get("done"))


@router.get("/models/{model_id}")
def model_page(model_id: int, request: Request, user: ModelRiskPage, session: SessionDep,
               runtime: RuntimeDep) -> Response:
    return model_detail(request, user, session, runtime, load_model(session, model_id))


@router.post("/models/{model_id}/signoff")
def model_signoff(model_id: int, request: Request, user: ModelRiskPost, session: SessionDep, runtime: RuntimeDep,
                  signoff_role: Annotated[str, Form(max_length=64)] = "",
                  decision: Annotated[str, Form(max_length=16)] = "",
                  reason: Annotated[str, Form(max_length=4000)] = "") -> Response:
    """Approve or reject a registered model as the signed-in user, for one required sign-off role."""
    model = load_model(session, model_id)
    form = {"signoff_role": signoff_role, "decision": decision, "reason": reason}
    try:
        if get_model_or_raise(session, model.key).id != model.id:
            raise NotFound(f"{model.key} has a newer registration; sign off that one")
        record_signoff(session, model.key, signoff_role, user.principal.name, decision, reason.strip(),
                       runtime.policy, gold_dataset_version(),
                       actor=Actor(user.principal.name, user.role, "web", request.state.request_id))
    except PolicyHubError as exc:
        session.rollback()  # nothing of a refused sign-off may be committed by the request's session
        return model_detail(request, user, session, runtime, load_model(session, model_id), exc.status_code,
                            exc.detail, form)
    log.info("web.model_signoff", model=model.key, role=signoff_role, decision=decision)
    return RedirectResponse(f"/models/{model_id}?{urlencode({'done': decision})}", status_code=303)


@router.get("/models/reports/{report_id}/html")
def report_html(report_id: int, user: ModelRiskPage, session: SessionDep) -> Response:
    report = session.get(BenchmarkReport, report_id)
    if report is None:
        raise NotFound(f"no benchmark report {report_id}")
    response = HTMLResponse(report.report_html or "<p>This report has no HTML rendering.</p>")
    add_security_headers(response, REPORT_CSP)
    return response


# -- operations ----------------------------------------------------------------------------------

MAX_RANGE_DAYS = 366
PRESETS = (1, 7, 30, 90)


def parse_range(start: str | None, end: str | None, today: date) -> tuple[date, date, list[str]]:
    errors = []
    try:
        last = date.fromisoformat(end) if end else today
    except ValueError:
        errors.append(f"to: {end!r} is not a date")
        last = today
    try:
        first = date.fromisoformat(start) if start else last - timedelta(days=6)
    except ValueError:
        errors.append(f"from: {start!r} is not a date")
        first = last - timedelta(days=6)
    if first > last:
        errors.append("from is after to: the dates were swapped")
        first, last = last, first
    if (last - first).days >= MAX_RANGE_DAYS:
        errors.append(f"the range is limited to {MAX_RANGE_DAYS} days")
        first = last - timedelta(days=MAX_RANGE_DAYS - 1)
    return first, last, errors


@router.get("/operations")
def operations_page(request: Request, user: OperationsPage, session: SessionDep, runtime: RuntimeDep) -> Response:
    today = datetime.now(UTC).date()
    first, last, errors = parse_range(request.query_params.get("from"), request.query_params.get("to"), today)
    since = datetime.combine(first, time.min, tzinfo=UTC)
    until = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
    flt = AuditFilter(since=since, until=until, actor=None, actor_role=None, classification=None, tier=None,
                      model_key=None, refused=None, pii_present=None, policy_id=None, text=None, event="ask")
    top = top_tier_model(runtime.policy)
    facts = []
    for r in iter_records(session, flt):
        if as_utc(r.created_at) >= until:
            continue  # the last day ends at midnight, whether or not the filter's `until` is inclusive
        payload = json.loads(r.payload) if isinstance(r.payload, str) else (r.payload or {})
        facts.append(request_facts(as_utc(r.created_at), r.tier, r.refused, r.cost, payload, top))
    names = {t.id: t.name for t in runtime.policy.tiers}
    summary = summarize(facts, names, first, last)
    n = summary.requests or 1
    figures = {
        "traffic": charts.bar_chart(
            [charts.Bar(label, 100.0 * count / n, series=i, note=f"{count:,}")
             for i, (label, count) in enumerate(summary.traffic.items())],
            title="Share of requests by tier served", unit="%", max_value=100.0),
        "cost": charts.grouped_bar_chart(
            ["per request"], [("actual", [summary.mean_cost]),
                              (f"all at top tier ({top.key})" if top else "all at top tier",
                               [summary.mean_counterfactual])],
            title="Mean cost per request: actual against all-top-tier", unit="$"),
        "cost_daily": charts.line_chart(
            [d[5:] for d in summary.days],
            [("actual", summary.daily_cost), ("all at top tier", summary.daily_counterfactual)],
            title="Mean cost per request by day", unit="$"),
        "latency": charts.bar_chart(
            [charts.Bar(tier_label(t, names), v, series=t) for t, v in summary.p95_latency_by_tier.items()],
            title="p95 end-to-end latency by tier (answered requests)", unit="ms"),
        "rates": charts.bar_chart(
            [charts.Bar("refused", summary.refusal_rate, series=1),
             charts.Bar("escalated", summary.escalation_rate, series=2),
             charts.Bar("human review", summary.human_review_rate, series=3)],
            title="Refusal, escalation and human-review rates", unit="%", max_value=100.0),
        "rates_daily": charts.line_chart(
            [d[5:] for d in summary.days],
            [("refusal rate", summary.daily_refusal_rate), ("escalation rate", summary.daily_escalation_rate)],
            title="Refusal and escalation rates by day", unit="%", max_value=100.0),
        "volume": charts.line_chart([d[5:] for d in summary.days], [("requests", summary.daily_requests)],
                                    title="Requests per day"),
    }
    return render(request, "operations.html", user, summary=summary, figures=figures, first=first, last=last,
                  errors=errors, presets=[(days, (today - timedelta(days=days - 1)).isoformat(), today.isoformat())
                                          for days in PRESETS], top=top)
