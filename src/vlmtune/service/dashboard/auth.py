"""Signing in to the dashboard with the service's API key: a login form sets a cookie, or send the header.

The cookie holds an HMAC of the key, not the key, so it is worthless once the key changes and the key never
sits in the browser's storage. It is HttpOnly and SameSite=Strict, and every POST must be JSON: another
site can neither read it nor make the browser send it with a request that changes anything.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request, Response

from vlmtune.service.errors import AccessDeniedError, ValidationError
from vlmtune.serving import BadRequest
from vlmtune.serving.auth import check_key

COOKIE = "vlmtune_session"
MAX_AGE = 7 * 24 * 3600


def session_token(api_key: str) -> str:
    return hmac.new(api_key.encode(), b"vlmtune-dashboard-session-v1", hashlib.sha256).hexdigest()


def signed_in(request: Request, api_key: str | None) -> bool:
    if api_key is None:
        return True
    cookie = request.cookies.get(COOKIE)
    if cookie and hmac.compare_digest(cookie.encode(), session_token(api_key).encode()):
        return True
    if request.headers.get("authorization"):
        try:
            check_key(request.headers["authorization"], api_key, allow_sigv4=False)
            return True
        except BadRequest:
            return False
    return False


def require(request: Request, api_key: str | None) -> None:
    """Refuse a request that is not signed in; a POST must also be JSON (see the module's docstring)."""
    if not signed_in(request, api_key):
        raise AccessDeniedError("sign in to the dashboard with the service's API key (or send 'Authorization: Bearer KEY')")
    if request.method == "POST" and not request.headers.get("content-type", "").startswith("application/json"):
        raise ValidationError("expected a JSON request body (content-type: application/json)")


def log_in(response: Response, api_key: str | None, presented: str) -> None:
    if api_key is not None and not hmac.compare_digest(presented.encode(), api_key.encode()):
        raise AccessDeniedError("that is not the service's API key")
    if api_key is not None:
        response.set_cookie(COOKIE, session_token(api_key), max_age=MAX_AGE, httponly=True, samesite="strict", path="/")


def log_out(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/")
