"""The accounts web page: server-rendered jinja2 (autoescaped) and one small script, no build step.

``/login`` takes an admin token and sets it as an HttpOnly, SameSite=Strict session
cookie (Secure over HTTPS). Every form carries the session's CSRF token
(:func:`~services.admin.access.csrf_token_for`); the login form, before there is a
session, uses a double-submit cookie instead. A form post without the right token is
refused with 403 before anything is read from it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from sqlalchemy import select

from services.admin.access import csrf_token_matches
from services.admin import consent_flow
from services.admin.account_editing import (
    AccountDraft,
    AccountEditor,
    AccountExists,
    AccountNotFound,
    FieldProblem,
    InvalidAccount,
    kept_secrets,
    parse_draft,
    revealed_document,
)
from services.admin.account_form import (
    GROUPS,
    NEW_ACCOUNT,
    WRITE_ONLY,
    flat_values,
    form_document,
    prefilled_values,
    submitted_values,
)
from services.admin.accounts_api import problems_response
from services.admin.authentication import SESSION_COOKIE, Actor, actor_from_cookie, token_store
from services.admin.pending_consents import FLOW_COOKIE, LIFETIME, ConsentNotFound
from services.fetcher.account import Account, Authentication
from services.fetcher.account_store import StoredAccountInvalid
from services.fetcher.password_cipher import PasswordDecryptionError
from services.ticketer.tables import AutoAnswerTemplate, Category, Priority, Resource, User

HERE = Path(__file__).parent
LOGIN_CSRF_COOKIE = "mailintake_admin_login_csrf"
MAX_FORM_BYTES = 64 * 1024
templates = Jinja2Templates(directory=HERE / "templates")
# A second line behind escaping: only our own script and styles run, no other site may
# frame the page (clickjacking) and forms post only back here.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class PageRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of an urlencoded form post (the last value of a repeated name)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise PageRefused(415, "expected a form post (application/x-www-form-urlencoded)")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise PageRefused(413, "form too large")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError:
        raise PageRefused(400, "the form is not UTF-8") from None


async def in_session(request: Request, handle: Callable[[Actor, dict[str, str]], Response]) -> Response:
    """Read the posted form, then, in the threadpool (it queries the database and may
    check a mail server), check the session and its CSRF token and call ``handle``.

    PageRefused: 401 without a session, 403 without the session's CSRF token.
    """
    fields = await form_fields(request)

    def checked() -> Response:
        actor = actor_from_cookie(request)
        if actor is None:
            raise PageRefused(401, "your session has ended: log in again")
        if not csrf_token_matches(actor.session_token, fields.get("csrf_token")):
            raise PageRefused(403, "CSRF token missing or wrong: reload the page and try again")
        return handle(actor, fields)

    return await run_in_threadpool(checked)


def _editor(request: Request) -> AccountEditor:
    return request.app.state.account_editor()


def _choices(request: Request) -> dict[str, list[str]]:
    with request.app.state.engine.connect() as connection:
        return {
            "resources": list(connection.scalars(select(Resource.name).order_by(Resource.name))),
            "categories": list(connection.scalars(select(Category.name).order_by(Category.name))),
            "priorities": list(connection.scalars(select(Priority.name).order_by(Priority.name))),
            "users": list(connection.scalars(select(User.login).order_by(User.login).limit(2000))),
            "templates": list(connection.scalars(select(AutoAnswerTemplate.name).order_by(AutoAnswerTemplate.name))),
        }


def _page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context, status_code=status, headers=PAGE_HEADERS)


def _to_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


def _form_page(
    request: Request, actor: Actor, *, editing: str | None, values: dict[str, Any], problems=(), status: int = 200
) -> HTMLResponse:
    refresh_token_stored = editing is not None and _has_refresh_token(request, editing)
    by_field: dict[str, list[str]] = {}
    for problem in problems:
        by_field.setdefault(problem.field, []).append(problem.message)
    return _page(
        request, "account_form.html", status,
        actor=actor, groups=GROUPS, values=values, editing=editing, problems=by_field,
        choices=_choices(request), csrf_token=actor.csrf_token, refresh_token_stored=refresh_token_stored,
    )


def _has_refresh_token(request: Request, account_id: str) -> bool:
    try:
        stored = _editor(request).stored(account_id)
    except (PasswordDecryptionError, StoredAccountInvalid):
        # The form still opens for an account whose secrets no longer decrypt: it is how they are entered again.
        return False
    return stored is not None and stored.oauth2 is not None and stored.oauth2.refresh_token is not None


def mount_pages(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(PageRefused)
    def refused(request: Request, exc: PageRefused) -> Response:
        if exc.status == 401:
            return _to_login()
        return _page(request, "refused.html", exc.status, message=str(exc))

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/accounts", status_code=303)

    @app.get("/login", include_in_schema=False)
    def login_page(request: Request) -> HTMLResponse:
        return _login_page(request)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        fields = await form_fields(request)
        return await run_in_threadpool(_log_in, request, fields)

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        def log_out(actor: Actor, fields: dict[str, str]) -> Response:
            response = _to_login()
            response.delete_cookie(SESSION_COOKIE, path="/")
            return response

        return await in_session(request, log_out)

    @app.get("/accounts", include_in_schema=False)
    def accounts_page(request: Request, saved: str | None = None) -> Response:
        actor = actor_from_cookie(request)
        if actor is None:
            return _to_login()
        return _page(
            request, "accounts.html", actor=actor, views=_editor(request).views(), saved=saved, csrf_token=actor.csrf_token
        )

    @app.get("/accounts/new", include_in_schema=False)
    def new_account_page(request: Request) -> Response:
        actor = actor_from_cookie(request)
        if actor is None:
            return _to_login()
        return _form_page(request, actor, editing=None, values=dict(NEW_ACCOUNT) | prefilled_values(request.query_params))

    @app.post("/accounts/new", include_in_schema=False)
    async def create_account(request: Request) -> Response:
        def create(actor: Actor, fields: dict[str, str]) -> Response:
            try:
                draft = parse_draft(form_document(fields))
                _editor(request).create(draft, actor.name)
            except InvalidAccount as exc:
                return _form_page(
                    request, actor, editing=None, values=submitted_values(fields), problems=exc.problems, status=422
                )
            except AccountExists as exc:
                problems = [FieldProblem("id", str(exc))]
                return _form_page(
                    request, actor, editing=None, values=submitted_values(fields), problems=problems, status=409
                )
            return RedirectResponse(f"/accounts?saved={quote(draft.id)}", status_code=303)

        return await in_session(request, create)

    @app.get("/accounts/{account_id}/edit", include_in_schema=False)
    def edit_account_page(request: Request, account_id: str) -> Response:
        actor = actor_from_cookie(request)
        if actor is None:
            return _to_login()
        try:
            view = _editor(request).view(account_id)
        except AccountNotFound as exc:
            raise PageRefused(404, str(exc)) from None
        return _form_page(request, actor, editing=account_id, values=flat_values(view.account.model_dump(mode="json")))

    @app.post("/accounts/{account_id}/edit", include_in_schema=False)
    async def update_account(request: Request, account_id: str) -> Response:
        def update(actor: Actor, fields: dict[str, str]) -> Response:
            fields["id"] = account_id
            try:
                _editor(request).update(account_id, parse_draft(form_document(fields)), actor.name)
            except InvalidAccount as exc:
                return _form_page(
                    request, actor, editing=account_id, values=submitted_values(fields), problems=exc.problems, status=422
                )
            except AccountNotFound as exc:
                raise PageRefused(404, str(exc)) from None
            return RedirectResponse(f"/accounts?saved={quote(account_id)}", status_code=303)

        return await in_session(request, update)

    # Before the routes with an account id: 'oauth' is no account.
    @app.post("/accounts/oauth/start", include_in_schema=False)
    async def start_consent(request: Request) -> Response:
        return await in_session(request, lambda actor, fields: _start_consent(request, actor, fields))

    @app.get(consent_flow.CALLBACK_PATH, include_in_schema=False)
    def finish_consent(request: Request) -> Response:
        # No session cookie here (see pending_consents): the flow's own cookie and state bind the answer.
        return _finish_consent(request)

    @app.post("/accounts/{account_id}/{action}", include_in_schema=False)
    async def account_action(request: Request, account_id: str, action: str) -> Response:
        if action not in ("delete", "enable", "disable"):
            raise PageRefused(404, f"no action {action!r}")

        def act(actor: Actor, fields: dict[str, str]) -> Response:
            editor = _editor(request)
            try:
                if action == "delete":
                    editor.delete(account_id, actor.name)
                else:
                    editor.set_enabled(account_id, action == "enable", actor.name)
            except AccountNotFound as exc:
                raise PageRefused(404, str(exc)) from None
            return RedirectResponse("/accounts", status_code=303)

        return await in_session(request, act)

    @app.post("/accounts/check", include_in_schema=False)
    async def check_form(request: Request) -> Response:
        """The form's "Check connection": the report as JSON, which the page's script shows."""

        def check(actor: Actor, fields: dict[str, str]) -> Response:
            try:
                report = _editor(request).check_draft(parse_draft(form_document(fields)))
            except InvalidAccount as exc:
                return problems_response(exc.problems)
            return JSONResponse(report.model_dump(mode="json"))

        return await in_session(request, check)


def _start_consent(request: Request, actor: Actor, fields: dict[str, str]) -> Response:
    """"Connect with Microsoft": check the form, keep the flow, and send the browser to the provider."""
    editing = fields.get("editing") or None
    if editing is not None:
        fields["id"] = editing

    def refused(problems, status: int = 422) -> HTMLResponse:
        return _form_page(request, actor, editing=editing, values=submitted_values(fields), problems=problems, status=status)

    settings = request.app.state.settings
    if settings.public_url is None:
        return refused([FieldProblem(
            "oauth2.refresh_token",
            "this admin service does not know its own address: set MAILINTAKE_ADMIN_PUBLIC_URL (the identity provider "
            f"sends the browser back to PUBLIC_URL{consent_flow.CALLBACK_PATH}, which must be registered there)",
        )], 409)
    editor = _editor(request)
    try:
        draft = parse_draft(form_document(fields))
        if draft.authentication is not Authentication.OAUTH2_REFRESH_TOKEN:
            raise InvalidAccount([FieldProblem(
                "authentication", f"Connect gets a refresh token: choose oauth2_refresh_token (not {draft.authentication.value})"
            )])
        stored = editor.stored(draft.id)
        if editing is None and stored is not None:
            return refused([FieldProblem("id", f"an account with id {draft.id!r} exists already; edit it and connect from there")], 409)
        if editing is not None and stored is None:
            raise PageRefused(404, f"no account with id {editing!r}")
        account = kept_secrets(draft, stored, connecting=True)
        pending = consent_flow.begin(account, settings.public_url, timeout=settings.check_timeout_seconds)
    except InvalidAccount as exc:
        return refused(exc.problems)
    except consent_flow.ConsentFailed as exc:
        return refused([FieldProblem("oauth2.refresh_token", str(exc))], 502)
    browser = request.app.state.pending_consents().keep(
        state=pending.state, session_token=actor.session_token, actor=actor.name, account_id=draft.id,
        editing=editing is not None, flow=pending.flow, account=revealed_document(account),
    )
    response = _page(
        request, "consent_redirect.html", actor=actor, csrf_token=actor.csrf_token,
        authorize_url=pending.authorize_url, issuer=account.oauth2.issuer, account_id=draft.id,
    )
    # Lax, not Strict: the provider's redirect back is a navigation from another site.
    response.set_cookie(
        FLOW_COOKIE, browser, max_age=int(LIFETIME.total_seconds()), path=consent_flow.CALLBACK_PATH, httponly=True,
        samesite="lax", secure=settings.public_url.startswith("https://"),
    )
    return response


def _finish_consent(request: Request) -> Response:
    """The provider's answer: take the kept flow, exchange the code, store the account with its refresh token."""
    answer = dict(request.query_params)
    settings = request.app.state.settings

    def result(status: int, **context: Any) -> HTMLResponse:
        response = _page(request, "consent_result.html", status, **context)
        response.delete_cookie(FLOW_COOKIE, path=consent_flow.CALLBACK_PATH)
        return response

    try:
        taken = request.app.state.pending_consents().take(answer.get("state"), request.cookies.get(FLOW_COOKIE))
    except ConsentNotFound as exc:
        return result(400, connected=False, problem=f"Refused: {exc}.")
    if taken.editing:
        back = f"/accounts/{quote(taken.account_id)}/edit"
    else:
        # A new account was not saved: the way back fills the form in again, secrets aside.
        secret = WRITE_ONLY | {"oauth2.refresh_token"}
        settings_only = {k: v for k, v in flat_values(taken.account).items() if k not in secret and v not in ("", None)}
        back = "/accounts/new?" + urlencode(settings_only)
    try:
        account = AccountDraft.model_validate(taken.account)
        consented = consent_flow.complete(account, taken.flow, answer, timeout=settings.check_timeout_seconds)
        document = taken.account | {"oauth2": taken.account["oauth2"] | {"refresh_token": consented.refresh_token.get_secret_value()}}
        _editor(request).connect(Account.model_validate(document), taken.actor, editing=taken.editing)
    except consent_flow.ProviderRefused as exc:
        return result(400, connected=False, back=back, provider_error=exc.error, provider_error_description=exc.description)
    except consent_flow.ConsentFailed as exc:
        return result(502, connected=False, back=back, problem=str(exc))
    except InvalidAccount as exc:
        return result(422, connected=False, back=back, problem=str(exc))
    except (AccountExists, AccountNotFound) as exc:
        return result(409, connected=False, back=back, problem=str(exc))
    return result(
        200, connected=True, account_id=taken.account_id, issuer=account.oauth2.issuer, signed_in_as=consented.signed_in_as
    )


def _log_in(request: Request, fields: dict[str, str]) -> Response:
    """Check the login form's double-submit CSRF token and the admin token, then set the session cookie."""
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or not secrets.compare_digest(expected, fields.get("csrf_token", "")):
        raise PageRefused(403, "CSRF token missing or wrong: reload the login page and try again")
    token = fields.get("token", "").strip()
    if not token or token_store(request).holder(token) is None:
        return _login_page(request, error="This token is unknown or revoked.", status=401)
    response = RedirectResponse("/accounts", status_code=303)
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/"
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


def _login_page(request: Request, error: str | None = None, status: int = 200) -> HTMLResponse:
    csrf = secrets.token_urlsafe(32)
    response = _page(request, "login.html", status, csrf_token=csrf, error=error)
    response.set_cookie(
        LOGIN_CSRF_COOKIE, csrf, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/login"
    )
    return response
