"""Who may use the console, and the record of what they did.

The console sits behind the dashboard's credentials (HTTP basic auth): DASHBOARD_USERNAME
and DASHBOARD_PASSWORD may look and act; each user of CONSOLE_READONLY_USERS may look only.
With no dashboard credentials configured nobody gets in, as for ``/rq/``.

Actions are POSTs of JSON that must come from the console itself: the Origin (or Referer)
must be this host, as for ``/rq/``, and the ``X-Console-Token`` header must carry the
token the console's pages hold (an HMAC of the user's name under their password, so every
web process agrees without shared state). A browser sends basic credentials along with a
cross-site request; neither check can be met by another site's page. Every action is logged
(``tasklane.console``, with the user) and kept in a capped Redis list shown on the overview.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Response, g, request

from app.foundation import keys
from app.foundation.runtime import runtime
from app.foundation.timeutil import iso, utcnow
from app.surfaces.api.errors import error_response

log = logging.getLogger("tasklane.console")

#: Actions kept in the audit list.
AUDIT_KEEP = 500
TOKEN_HEADER = "X-Console-Token"
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@dataclass(frozen=True)
class User:
    name: str
    can_act: bool
    token: str


def _token(name: str, password: str) -> str:
    return hmac.new(password.encode(), f"console-action:{name}".encode(), hashlib.sha256).hexdigest()


def _authenticate() -> User | None:
    settings = runtime().settings
    auth = request.authorization
    name = (auth.username or "") if auth and auth.type == "basic" else ""
    given = (auth.password or "") if auth and auth.type == "basic" else ""
    found: User | None = None
    # Every configured credential is compared, in constant time, whatever matches.
    candidates = [(settings.dashboard_username, settings.dashboard_password, True)]
    candidates += [(user, password, False) for user, password in settings.console_readonly_users]
    for user, password, can_act in candidates:
        user_ok = hmac.compare_digest(name.encode(), user.encode())
        pass_ok = hmac.compare_digest(given.encode(), password.encode())
        if user and password and user_ok and pass_ok and found is None:
            found = User(user, can_act, _token(user, password))
    return found


def _same_origin() -> bool:
    source = request.headers.get("Origin") or request.headers.get("Referer")
    return bool(source) and urlsplit(source).netloc == request.host


def guard() -> Response | None:
    """Before every console request: basic auth; for an action, a user who may act, same origin, token."""
    user = _authenticate()
    if user is None:
        return error_response(
            401,
            "unauthorized",
            "the console needs the dashboard credentials (DASHBOARD_USERNAME / DASHBOARD_PASSWORD) "
            "or a CONSOLE_READONLY_USERS entry (HTTP basic auth)",
            headers={"WWW-Authenticate": 'Basic realm="tasklane console", charset="UTF-8"'},
        )
    g.console_user = user
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    if not user.can_act:
        return error_response(403, "read_only", f"{user.name} may look at the console but not act")
    if not _same_origin():
        return error_response(403, "forbidden", "console actions must come from the console itself")
    if not hmac.compare_digest(request.headers.get(TOKEN_HEADER, "").encode(), user.token.encode()):
        return error_response(403, "forbidden", f"console actions need the page's {TOKEN_HEADER} header")
    return None


def secure_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype in ("text/html", "application/json", "image/svg+xml"):
        response.headers["Cache-Control"] = "no-store"
    return response


def current_user() -> User:
    user: User = g.console_user
    return user


def audit(action: str, **details: Any) -> None:
    """Log an action with who did it, and keep it in the console's audit list."""
    user = current_user()
    entry = {"at": iso(utcnow()), "user": user.name, "action": action, **details}
    log.info("console action %s by %s: %s", action, user.name, json.dumps(details, default=str))
    redis = runtime().redis
    with redis.pipeline(transaction=False) as pipe:
        pipe.lpush(keys.console_audit(), json.dumps(entry, default=str))
        pipe.ltrim(keys.console_audit(), 0, AUDIT_KEEP - 1)
        pipe.execute()


def recent_actions(count: int = 10) -> list[dict[str, Any]]:
    raw = runtime().redis.lrange(keys.console_audit(), 0, count - 1)
    return [json.loads(r) for r in raw]
