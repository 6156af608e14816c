"""Who may do what, for the JSON API and the console alike (see `cloud.people`).

* The API takes `Authorization: Bearer fgl_...`; a console session cookie works too, and
  then every write must also carry the session's CSRF token (`X-CSRF-Token`).
* Nobody (401, `WWW-Authenticate: Bearer`) vs not allowed (403, naming the role needed).
* Reads need `viewer`, alert and silence actions `operator`, models and people `admin`.
* Console forms carry the session's CSRF token in a `csrf` field; the sign-in form, made
  before any session exists, a double-submit cookie. Cookies are HttpOnly,
  SameSite=Strict, and Secure when the page was served over HTTPS (behind a proxy, uvicorn
  takes the scheme from `X-Forwarded-Proto` sent by 127.0.0.1).
* Sign-in is throttled per account and per source address (`cloud.throttle`); sessions
  end after an idle time and after an absolute lifetime (`cloud.people`).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import HTMLResponse

from cloud.metrics import CloudMetrics
from cloud.people import (
    SESSION_HOURS,
    Principal,
    close_session,
    count_users,
    open_session,
    session_principal,
    sign_in,
    token_principal,
)
from cloud.render import page
from cloud.throttle import SignInThrottle

SESSION_COOKIE = "fogline_session"
LOGIN_COOKIE = "fogline_login"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FIRST_ADMIN = "fogline cloud user add NAME --role admin --db <the cloud's --db URL>"

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token: `fogline cloud token add --user NAME` prints one.",
)
cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    scheme_name="session",
    description="The console's session (sign in at /login); writes also need X-CSRF-Token.",
)


class SignInRequired(Exception):  # noqa: N818 - an outcome, not a failure of ours
    """Raised by page dependencies; answered with a redirect to the sign-in page."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def _now(request: Request) -> float:
    now: float = request.app.state.clock()
    return now


def _identify(request: Request, token: str | None, session: str | None) -> Principal | None:
    engine = request.app.state.engine
    if token is not None:
        return token_principal(engine, token, _now(request))
    if session is not None:
        return session_principal(engine, session, _now(request))
    return None


def current(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    session: Annotated[str | None, Depends(cookie)],
) -> Principal | None:
    """The caller, if they proved who they are (a bad token is no identity)."""
    return _identify(request, credentials.credentials if credentials else None, session)


Caller = Annotated[Principal | None, Depends(current)]


def csrf_ok(user: Principal, offered: str | None) -> bool:
    return user.csrf is not None and hmac.compare_digest(user.csrf, offered or "")


class Require:
    """An API dependency: the caller, with at least `role`, or 401/403."""

    def __init__(self, role: str) -> None:
        self.role = role

    def __call__(self, request: Request, user: Caller) -> Principal:
        if user is None:
            raise HTTPException(
                401,
                detail="not signed in: send Authorization: Bearer <token> "
                "(fogline cloud token add --user NAME)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if (
            user.via == "session"
            and request.method not in SAFE_METHODS
            and not csrf_ok(user, request.headers.get("x-csrf-token"))
        ):
            raise HTTPException(403, detail="missing or wrong X-CSRF-Token for this session")
        if not user.can(self.role):
            raise HTTPException(
                403, detail=f"needs the {self.role} role; {user.name} is {user.role}"
            )
        return user


Viewer = Annotated[Principal, Depends(Require("viewer"))]
Operator = Annotated[Principal, Depends(Require("operator"))]
Admin = Annotated[Principal, Depends(Require("admin"))]


def signed_in(request: Request, session: Annotated[str | None, Depends(cookie)]) -> Principal:
    """A console page's user; anyone else is sent to sign in first."""
    user = session_principal(request.app.state.engine, session, _now(request)) if session else None
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target)
    return user


PageUser = Annotated[Principal, Depends(signed_in)]


def local_path(target: str | None, default: str = "/") -> str:
    """`target` if it is a path on this site (never `//host` or a scheme): no open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


async def sign_in_redirect(_request: Request, exc: Exception) -> Response:
    target = exc.next_url if isinstance(exc, SignInRequired) else "/"
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


router = APIRouter(include_in_schema=False)


def _login_page(
    request: Request, next_url: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = page(
        request,
        "login.html",
        None,
        status_code=status_code,
        login_csrf=token,
        next_url=local_path(next_url),
        error=error,
        no_users=count_users(request.app.state.engine) == 0,
        first_admin=FIRST_ADMIN,
    )
    _set_cookie(request, response, LOGIN_COOKIE, token, 600)
    return response


@router.get("/login")
def login_form(request: Request, next: str = "/") -> HTMLResponse:  # noqa: A002 - a URL word
    return _login_page(request, next)


@router.post("/login", response_model=None)
async def login(
    request: Request,
    name: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    csrf: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/",  # noqa: A002 - a URL word
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf):
        return _login_page(request, next, "The form expired: please sign in again.", 403)
    engine = request.app.state.engine
    throttle: SignInThrottle = request.app.state.signin_throttle
    metrics: CloudMetrics = request.app.state.metrics
    address = request.client.host if request.client else "?"
    refused = throttle.check(name, address, _now(request))
    if refused is not None:  # before argon2: a refused guess costs no CPU
        metrics.signin_refused[refused.by] += 1
        busy = _login_page(request, next, refused.message(), 429)
        busy.headers["Retry-After"] = str(max(1, round(refused.retry_after)))
        return busy
    user = await run_in_threadpool(sign_in, engine, name, password)  # argon2: ~0.1 s of CPU
    if user is None:
        metrics.signin_failures += 1
        throttle.failed(name, address, _now(request))
        return _login_page(request, next, "Wrong name or password.", 401)
    throttle.succeeded(name)
    value, _ = await run_in_threadpool(open_session, engine, user.user_id, _now(request))
    response = RedirectResponse(local_path(next), status_code=303)
    _set_cookie(request, response, SESSION_COOKIE, value, round(SESSION_HOURS * 3600))
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/logout", response_model=None)
def logout(
    request: Request, user: PageUser, csrf: Annotated[str, Form(max_length=128)] = ""
) -> Response:
    if not csrf_ok(user, csrf):
        raise HTTPException(403, detail="missing or wrong CSRF token")
    value = request.cookies.get(SESSION_COOKIE)
    if value:
        close_session(request.app.state.engine, value)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
