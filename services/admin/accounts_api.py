"""The accounts API: ``/api/accounts`` (create, list, show, update, delete, enable,
disable), the connection check of a stored or an unsaved account, and ``/api/audit``.

A refused account is a 422 whose ``detail`` lists each field (``field``, dotted, and
``loc``) with why (``msg``); the input is never echoed, since it may be a password.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.admin.access import AuditLog
from services.admin.account_editing import (
    AccountDraft,
    AccountEditor,
    AccountExists,
    AccountNotFound,
    AccountView,
    FieldProblem,
    InvalidAccount,
)
from services.admin.authentication import Authenticated
from services.admin.tickets_api import UtcDatetime
from services.fetcher.account_store import StoredAccountInvalid
from services.fetcher.connection_check import CheckReport
from services.fetcher.password_cipher import EncryptionKeyError, PasswordDecryptionError


def account_editor(request: Request) -> AccountEditor:
    """The app's editor, made on first use: only account routes need the encryption key."""
    return request.app.state.account_editor()


Editor = Annotated[AccountEditor, Depends(account_editor)]

router = APIRouter(prefix="/api", tags=["accounts"])

_NOT_FOUND = {404: {"description": "No account has this id."}}
_REFUSED = {422: {"description": "A field is refused: `detail` names each field and why."}}


@router.get("/accounts", response_model=list[AccountView], summary="List the accounts with their fetch status")
def list_accounts(editor: Editor, _: Authenticated) -> list[AccountView]:
    return editor.views()


@router.post(
    "/accounts", status_code=201, response_model=AccountView, summary="Create an account",
    responses={409: {"description": "The id is taken."}, **_REFUSED},
)
def create_account(draft: AccountDraft, editor: Editor, actor: Authenticated) -> AccountView:
    editor.create(draft, actor.name)
    return editor.view(draft.id)


@router.post(
    "/accounts/check", response_model=CheckReport, summary="Check an unsaved account's connection",
    description="Each step (connect, tls, capabilities, authentication, select or folder) with its time, outcome and "
    "the server's exact reply (OAuth2 accounts: token first, with the identity provider's). An empty password or "
    "OAuth2 secret takes the stored one of the account with the same id.",
    responses=_REFUSED,
)
def check_unsaved_account(draft: AccountDraft, editor: Editor, _: Authenticated) -> CheckReport:
    return editor.check_draft(draft)


@router.get("/accounts/{account_id}", response_model=AccountView, summary="One account", responses=_NOT_FOUND)
def show_account(account_id: str, editor: Editor, _: Authenticated) -> AccountView:
    return editor.view(account_id)


@router.put(
    "/accounts/{account_id}", response_model=AccountView, summary="Replace an account's settings",
    description="An empty or absent password, oauth2.client_secret or oauth2.refresh_token keeps the stored one, "
    "as long as the server (for the password) or the identity provider, tenant, authority, client id and CA file "
    "(for the OAuth2 secrets) stay the same.", responses={**_NOT_FOUND, **_REFUSED},
)
def update_account(account_id: str, draft: AccountDraft, editor: Editor, actor: Authenticated) -> AccountView:
    editor.update(account_id, draft, actor.name)
    return editor.view(account_id)


@router.delete("/accounts/{account_id}", status_code=204, summary="Delete an account", responses=_NOT_FOUND)
def delete_account(account_id: str, editor: Editor, actor: Authenticated) -> Response:
    editor.delete(account_id, actor.name)
    return Response(status_code=204)


@router.post("/accounts/{account_id}/enable", response_model=AccountView, summary="Poll the account", responses=_NOT_FOUND)
def enable_account(account_id: str, editor: Editor, actor: Authenticated) -> AccountView:
    editor.set_enabled(account_id, True, actor.name)
    return editor.view(account_id)


@router.post("/accounts/{account_id}/disable", response_model=AccountView, summary="Stop polling the account", responses=_NOT_FOUND)
def disable_account(account_id: str, editor: Editor, actor: Authenticated) -> AccountView:
    editor.set_enabled(account_id, False, actor.name)
    return editor.view(account_id)


@router.post(
    "/accounts/{account_id}/check", response_model=CheckReport, summary="Check a stored account's connection",
    description="The same check as `mailintake accounts check ID`.", responses=_NOT_FOUND,
)
def check_stored_account(account_id: str, editor: Editor, _: Authenticated) -> CheckReport:
    return editor.check_stored(account_id)


class AuditEntryOut(BaseModel):
    at: UtcDatetime
    actor: str
    action: str
    target: str
    fields: list[str]


@router.get("/audit", response_model=list[AuditEntryOut], tags=["audit"], summary="Changes made, newest first")
def audit_entries(
    request: Request,
    _: Authenticated,
    target: Annotated[str | None, Query(description="Only changes of this account id.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntryOut]:
    log: AuditLog = request.app.state.audit_log
    return [AuditEntryOut(**vars(entry) | {"fields": list(entry.fields)}) for entry in log.entries(target, limit)]


def problems_response(problems: list[FieldProblem] | tuple[FieldProblem, ...], location: str = "body") -> JSONResponse:
    detail = [
        {"loc": [location, *filter(None, p.field.split("."))], "field": p.field, "msg": p.message} for p in problems
    ]
    return JSONResponse(status_code=422, content={"detail": detail})


def install_error_handlers(app: FastAPI) -> None:
    """Turn the editor's errors into HTTP answers, and keep inputs out of every 422."""

    @app.exception_handler(RequestValidationError)
    def refused_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {
                "loc": list(error["loc"]),
                "field": ".".join(str(part) for part in error["loc"][1:]),
                "msg": error["msg"],
                "type": error["type"],
            }
            for error in exc.errors()
        ]
        return JSONResponse(status_code=422, content=jsonable_encoder({"detail": detail}))

    @app.exception_handler(InvalidAccount)
    def refused_account(_: Request, exc: InvalidAccount) -> JSONResponse:
        return problems_response(exc.problems)

    @app.exception_handler(AccountNotFound)
    def not_found(_: Request, exc: AccountNotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(AccountExists)
    def exists(_: Request, exc: AccountExists) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(EncryptionKeyError)
    def no_key(_: Request, exc: EncryptionKeyError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.exception_handler(PasswordDecryptionError)
    @app.exception_handler(StoredAccountInvalid)
    def broken_store(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=500, content={"detail": str(exc)})
