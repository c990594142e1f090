"""Request bodies: the one way a view reads its JSON body, and what happens to a body it leaves unread.

:func:`parse_body` reads the body (at most MAX_REQUEST_BYTES, with or without a
Content-Length), checks its content type, bounds its nesting depth and the length of its
arrays without parsing it (:func:`check_shape`), parses it, insists on a JSON object and
validates that with the view's pydantic request model. Each failure has its answer:

=====  ==========================  =====================================================
413    ``payload_too_large``       over MAX_REQUEST_BYTES, declared or sent chunked
400    ``malformed_json``          no body where one is needed; not JSON; not an object
400    ``json_too_deep``           nested deeper than MAX_JSON_DEPTH
400    ``json_too_long``           an array or object of more than MAX_JSON_ITEMS items
400    ``number_too_long``         an integer of more digits than Python converts (4300)
415    ``unsupported_media_type``  a body whose Content-Type is not JSON
4xx    the view's choice           the request model refuses it (field errors in details)
=====  ==========================  =====================================================

:class:`LingeringClose` wraps the WSGI app: whatever the app left of a request body is read
and thrown away (within bounds) before the answer goes out, so that a client that sends
its whole body before it reads (urllib, requests) receives, say, its 413 instead of a reset
connection.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from collections.abc import Iterable
from typing import IO, Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from app.foundation import defaults
from app.surfaces.api.errors import APIError, field_errors

M = TypeVar("M", bound=BaseModel)

#: The media type of every body the API reads.
JSON_TYPE = "application/json"

# The bytes check_shape keeps: brackets and commas, the skeleton of a JSON text.
_NOT_SKELETON = bytes(c for c in range(256) if c not in b"[]{},")
_ONE_BRACKET = bytes.maketrans(b"{}", b"[]")
# An innermost container: an opening bracket, its items' commas, a closing bracket.
_INNERMOST = re.compile(rb"\[,*\]")
_READ_SIZE = 64 * 1024


def parse_body(
    model: type[M],
    *,
    shape: str,
    optional: bool = False,
    status: int = 400,
    code: str = "bad_request",
    message: str | None = None,
    prefix: str = "",
) -> M:
    """The request's JSON body, validated by ``model``; an APIError in the one shape otherwise.

    ``shape`` shows the expected body in messages. ``optional`` lets a request without a
    body through as ``{}`` (a task that takes no arguments needs none). A body ``model``
    refuses answers ``status`` and ``code`` with the field errors, named from ``prefix``,
    in details.
    """
    body = json_object(shape=shape, optional=optional)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        text = message or f"the request body must be {shape}"
        raise APIError(status, code, text, field_errors(exc, prefix)) from None


def json_object(*, shape: str, optional: bool = False) -> dict[str, Any]:
    """The request's body as a JSON object: read, type-checked, bounded, parsed (see the module)."""
    raw = read_body()
    if not raw:
        if optional:
            return {}
        raise APIError(400, "malformed_json", f"the request has no body; send {shape} as {JSON_TYPE}")
    if not request.is_json:
        received = request.content_type or "none"
        raise APIError(
            415,
            "unsupported_media_type",
            f"the request body must be JSON sent with Content-Type: {JSON_TYPE} (got {received})",
            {"expected": JSON_TYPE, "received": request.content_type},
        )
    encoding = json.detect_encoding(raw)
    if encoding not in ("utf-8", "utf-8-sig"):  # UTF-16 or -32, which json.loads also takes
        try:
            raw = raw.decode(encoding).encode()
        except UnicodeError:
            raise APIError(400, "malformed_json", f"the request body is not valid {encoding} text") from None
    check_shape(raw)
    try:
        value = json.loads(raw, parse_constant=_not_a_number, parse_int=_integer)
    except APIError:
        raise
    except (ValueError, RecursionError) as exc:  # RecursionError: check_shape rules it out
        raise APIError(400, "malformed_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise APIError(
            400, "malformed_json", f"the request body must be a JSON object, not {_kind(value)}: {shape}"
        )
    return value


def read_body() -> bytes:
    """The whole request body, or 413 when it is larger than MAX_REQUEST_BYTES.

    Werkzeug answers 413 itself for a Content-Length over the limit, but cuts a body sent
    without one (``Transfer-Encoding: chunked``) silently at the limit, which then reads as
    malformed JSON. Such a body is read here from the server's stream, which ends where the
    body ends (``wsgi.input_terminated``), one byte past the limit at most.
    """
    environ = request.environ
    limit = request.max_content_length
    if request.content_length is not None or not environ.get("wsgi.input_terminated") or limit is None:
        return request.get_data(cache=True)
    stream: IO[bytes] = environ["wsgi.input"]
    data = bytearray()
    while len(data) <= limit:
        chunk = stream.read(min(_READ_SIZE, limit + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        raise RequestEntityTooLarge()
    return bytes(data)


def check_shape(
    raw: bytes, max_depth: int = defaults.MAX_JSON_DEPTH, max_items: int = defaults.MAX_JSON_ITEMS
) -> None:
    """Refuse a UTF-8 JSON text nested deeper than ``max_depth``, or with an array or object
    of more than ``max_items`` items, before anything parses it (400).

    Without its escaped backslashes and quotes, the text's strings lie between its quotes;
    cutting them out and keeping only brackets and commas leaves the skeleton of the text.
    Each pass removes every innermost container (brackets with nothing but commas between
    them), so that a container ``n`` levels high goes at pass ``n``: one still there after
    ``max_depth`` passes is nested deeper. Commas side by side belong to one container, so a
    run of ``max_items`` of them is one item too many; that count is only looked at when
    the whole text has that many commas. Byte-string methods do the work (and a regular
    expression for containers that have items), linear in the text and without recursion:
    a few milliseconds for a mebibyte, less than parsing it. Unbalanced brackets are left
    to the parser, which refuses them, except more than ``max_depth`` unclosed ones (the
    parser would descend that deep before finding out).
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = b"".join(raw.split(b'"')[::2]).translate(_ONE_BRACKET, _NOT_SKELETON)
    brackets = skeleton.translate(None, b",")
    for _ in range(max_depth):
        inner_removed = brackets.replace(b"[]", b"")
        if len(inner_removed) == len(brackets):
            break
        brackets = inner_removed
    else:
        if b"[]" in brackets:
            raise _too_deep(max_depth)
    if brackets.count(b"[") > max_depth:
        raise _too_deep(max_depth)
    if skeleton.count(b",") < max_items:
        return
    too_many = b"," * max_items
    while True:  # each turn removes a level, or returns
        if too_many in skeleton:
            raise _too_long(max_items)
        skeleton = skeleton.replace(b"[]", b"")  # containers without items: fast, no regex
        if too_many in skeleton:
            raise _too_long(max_items)
        skeleton, removed = _INNERMOST.subn(b"", skeleton)
        if not removed:
            return


def _too_deep(max_depth: int) -> APIError:
    return APIError(
        400, "json_too_deep", f"the request body nests arrays and objects deeper than {max_depth} levels"
    )


def _too_long(max_items: int) -> APIError:
    return APIError(
        400, "json_too_long", f"an array or object of the request body has more than {max_items} items"
    )


def _integer(text: str) -> int:
    """A JSON integer, unless it has more digits than Python converts (its own error reads as advice
    to the server's programmer, not to the caller)."""
    digits, most = len(text) - text.startswith("-"), sys.get_int_max_str_digits()
    if digits > most > 0:
        raise APIError(
            400, "number_too_long", f"an integer in the body has {digits} digits; at most {most} are read"
        )
    return int(text)


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "a number"


class LingeringClose:
    """WSGI middleware: read and throw away what the app left of the request body, then answer.

    A client that sends its whole body before reading the answer (Python's urllib and
    requests do) is still sending when the app refuses the request without reading it
    (413, 401, 404). If the server then closes the connection with the rest of the body
    unread, the client gets a reset (a broken pipe) instead of the answer. Like nginx's
    lingering close, the rest is read and dropped first, at most ``max_bytes`` and for at
    most ``max_seconds``; a longer rest is left to the server, which closes the connection.

    Only a stream that the server ends with the body (``wsgi.input_terminated``, as gunicorn
    does) is read: any other could block past the body's end.
    """

    def __init__(
        self,
        app: Any,
        max_bytes: int = defaults.DRAIN_MAX_BYTES,
        max_seconds: float = defaults.DRAIN_SECONDS,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        result = self.app(environ, start_response)
        if environ.get("wsgi.input_terminated"):
            self.discard_rest(environ)
        return result

    def discard_rest(self, environ: dict[str, Any]) -> bool:
        """Read the rest of the body and drop it; True when it was all read within the bounds."""
        declared = environ.get("CONTENT_LENGTH", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return False  # too much to wait for: the server closes the connection
        stream = environ["wsgi.input"]
        sock = environ.get("gunicorn.socket")
        previous_timeout = sock.gettimeout() if sock is not None else None
        deadline = time.monotonic() + self.max_seconds
        read = 0
        try:
            while read <= self.max_bytes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if sock is not None:
                    sock.settimeout(remaining)  # a silent client must not hold the thread
                chunk = stream.read(_READ_SIZE)
                if not chunk:
                    return True
                read += len(chunk)
            return False
        except Exception:  # timed out, reset, a malformed chunk: the server closes the connection
            return False
        finally:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.settimeout(previous_timeout)
