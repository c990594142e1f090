"""The one error shape: ``{"error": {"code", "message", "details"}}``, for every error."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException

from app.foundation import clock
from app.ops import observability


class APIError(Exception):
    """An error the API answers with its status, code and message."""

    def __init__(
        self, status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response:
    """Build the JSON error response."""
    response = jsonify({"error": {"code": code, "message": message, "details": details}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def field_errors(exc: ValidationError, prefix: str = "args") -> list[dict[str, Any]]:
    """Pydantic errors as a list of ``{"field", "message", "type"}``; fields are named from ``prefix``."""
    return [
        {
            "field": ".".join(str(p) for p in ((prefix, *err["loc"]) if prefix else err["loc"])),
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False, include_input=False)
    ]


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_arguments",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class _OutageLog:
    """Log a Redis outage as the requests it refuses, without a line per request: the first refusal
    at once, then one line per :data:`OUTAGE_LOG_EVERY` seconds with the count refused since (a
    busy API once logged 150 lines in a 30 s outage, drowning what came before it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: float | None = None
        self._since = 0

    def refused(self, app: Flask, exc: Exception) -> None:
        now = clock.monotonic()
        with self._lock:
            self._since += 1
            if self._last is not None and now - self._last < OUTAGE_LOG_EVERY:
                return
            first, count = self._last is None or now - self._last >= 2 * OUTAGE_LOG_EVERY, self._since
            self._last, self._since = now, 0
        if first:
            app.logger.error("redis unreachable: %s (requests answered 503 until it is back)", exc)
        else:
            app.logger.error("redis still unreachable: %s (%d more requests answered 503)", exc, count)


#: Seconds between two log lines of one Redis outage in one web process.
OUTAGE_LOG_EVERY = 10.0


def register_error_handlers(app: Flask) -> None:
    """Answer every error, ours or Werkzeug's, in the one shape."""

    @app.errorhandler(APIError)
    def _api_error(exc: APIError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = f"request body is larger than {app.config.get('MAX_CONTENT_LENGTH')} bytes"
        response = error_response(status, _CODES.get(status, "error"), message)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        if status == 401 and exc.get_response().headers.get("WWW-Authenticate"):
            response.headers["WWW-Authenticate"] = exc.get_response().headers["WWW-Authenticate"]
        return response

    outage = _OutageLog()

    @app.errorhandler(RedisConnectionError)
    @app.errorhandler(RedisTimeoutError)
    def _redis_down(exc: Exception) -> Response:
        outage.refused(app, exc)
        message = "the job store (Redis) is unreachable; try again shortly"
        if request.endpoint == "api.enqueue_task":  # the enqueue that takes an Idempotency-Key
            # Redis may have stored the job before the connection went: a bare repeat could enqueue
            # it twice (seen killing Redis under load: 2 of 362 refused posts had been stored).
            message += (
                " with the same Idempotency-Key: the job may have been stored before the connection "
                "was lost, and a repeat with its key returns that job instead of enqueueing another"
            )
        return error_response(503, "redis_unavailable", message, headers={"Retry-After": "5"})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error")
        observability.capture_exception(exc)
        return error_response(500, "internal_error", "internal error; the server logged the details")
