"""The one error shape: ``{"error": {"code", "message", "details"}}``, for every error."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException

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

    @app.errorhandler(RedisConnectionError)
    @app.errorhandler(RedisTimeoutError)
    def _redis_down(exc: Exception) -> Response:
        app.logger.error("redis unreachable: %s", exc)
        return error_response(
            503,
            "redis_unavailable",
            "the job store (Redis) is unreachable; try again shortly",
            headers={"Retry-After": "5"},
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error")
        observability.capture_exception(exc)
        return error_response(500, "internal_error", "internal error; the server logged the details")
