"""Request bodies: one parse for every view (type, size, depth, array length, shape), and the
lingering close that lets a client still sending its body receive the answer."""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from app import create_app
from app.foundation import defaults
from app.surfaces.api.bodies import LingeringClose, check_shape
from app.surfaces.api.errors import APIError
from tests.conftest import make_env
from tests.test_api import assert_error

DEPTH = defaults.MAX_JSON_DEPTH


def nested(levels: int) -> str:
    """``levels`` arrays, one inside the other."""
    return "[" * levels + "]" * levels


def bodies_nesting(inner: str) -> dict[str, str]:
    """A body for each route that reads one, with ``inner`` as an argument's value."""
    return {
        "/api/v1/tasks/add": f'{{"args": {{"x": {inner}, "y": 1}}}}',
        "/api/v1/tasks/add/batch": f'{{"items": [{{"args": {{"x": {inner}, "y": 1}}}}]}}',
        "/api/v1/workflows": f'{{"type": "chain", "steps": [{{"task": "add", "args": {{"x": {inner}}}}}]}}',
    }


def post(client: FlaskClient, auth: dict[str, str], path: str, data: str | bytes, **headers: str) -> Any:
    return client.post(path, data=data, headers={**auth, "Content-Type": "application/json", **headers})


# --- 1. depth and array length --------------------------------------------------------------------


@pytest.mark.parametrize("path", list(bodies_nesting("1")))
def test_a_body_nested_1000_deep_is_400_not_500(client: FlaskClient, auth: dict[str, str], path: str) -> None:
    """It answers 400 json_too_deep for ~2 KB of brackets, on every route that reads a body."""
    body = bodies_nesting(nested(1000))[path]
    assert len(body) < 2200
    response = post(client, auth, path, body)
    assert response.status_code == 400, response.json
    error = assert_error(response.json, "json_too_deep")
    assert str(DEPTH) in error["message"]


@pytest.mark.parametrize("path", list(bodies_nesting("1")))
def test_depth_limit_is_exact(client: FlaskClient, auth: dict[str, str], path: str) -> None:
    """It lets a body of MAX_JSON_DEPTH levels through to validation (422), and refuses one more."""
    # Levels of the body above the argument's value: the body and args, plus items[i] or steps[i].
    above = {"/api/v1/tasks/add": 2, "/api/v1/tasks/add/batch": 4, "/api/v1/workflows": 4}[path]
    at_limit = post(client, auth, path, bodies_nesting(nested(DEPTH - above))[path])
    assert at_limit.status_code == 422, at_limit.json
    over = post(client, auth, path, bodies_nesting(nested(DEPTH - above + 1))[path])
    assert over.status_code == 400
    assert_error(over.json, "json_too_deep")


def test_an_array_over_the_item_limit_is_400(client: FlaskClient, auth: dict[str, str]) -> None:
    """It refuses an array of MAX_JSON_ITEMS + 1 items, and takes one of MAX_JSON_ITEMS."""
    numbers = [1] * defaults.MAX_JSON_ITEMS
    fits = client.post("/api/v1/tasks/xsum", json={"args": {"numbers": numbers}}, headers=auth)
    assert fits.status_code == 202, fits.json
    over = client.post("/api/v1/tasks/xsum", json={"args": {"numbers": [*numbers, 1]}}, headers=auth)
    assert over.status_code == 400
    assert str(defaults.MAX_JSON_ITEMS) in assert_error(over.json, "json_too_long")["message"]


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "' + "[" * 5000 + '"}',  # brackets inside strings do not count
        '{"a": "\\"' + "{" * 5000 + '\\\\"}',  # nor after escaped quotes and backslashes
        json.dumps({"a": [[[1, 2], {"b": [3]}]] * 1000, "s": "]]]][[[["}),
        nested(DEPTH),
        "[" + ",".join(["[1]"] * defaults.MAX_JSON_ITEMS) + "]",
        "{" * DEPTH,  # unbalanced: left to the parser, which says it is malformed
        "",
        '"just a string"',
    ],
)
def test_check_shape_accepts(text: str) -> None:
    check_shape(text.encode())


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (nested(DEPTH + 1), "json_too_deep"),
        ('{"a": [' * 20 + "1" + "]}" * 20, "json_too_deep"),
        ('["\\\\", ' + nested(DEPTH) + "]", "json_too_deep"),  # an escaped backslash ends no string
        ("[" * (DEPTH + 1), "json_too_deep"),  # unclosed: the parser would recurse before failing
        ("[" * 100_000, "json_too_deep"),
        ("[" + ",".join(["1"] * (defaults.MAX_JSON_ITEMS + 1)) + "]", "json_too_long"),
        ("[" + ",".join(["[]"] * (defaults.MAX_JSON_ITEMS + 1)) + "]", "json_too_long"),
        ('{"a": [' + ",".join(['{"b": 1}'] * (defaults.MAX_JSON_ITEMS + 1)) + "]}", "json_too_long"),
        ("{" + ",".join(f'"{n}": [1]' for n in range(defaults.MAX_JSON_ITEMS + 1)) + "}", "json_too_long"),
    ],
)
def test_check_shape_refuses(text: str, code: str) -> None:
    with pytest.raises(APIError) as info:
        check_shape(text.encode())
    assert (info.value.status, info.value.code) == (400, code)


def test_check_shape_is_cheap_on_a_mebibyte() -> None:
    """It stays linear on the worst skeletons a 1 MiB body can have (generous bound: a shared CI box)."""
    mib = defaults.MAX_REQUEST_BYTES
    worst = [
        b"[" + b",".join([b"[]"] * (mib // 3)) + b"]",
        b"[" + b",".join([b"[1]"] * (mib // 4)) + b"]",
        b"[" * mib,
        b"[" + b"," * mib,
        b'["' + b'\\"[' * (mib // 3) + b'"]',
    ]
    for text in worst:
        started = time.perf_counter()
        with contextlib.suppress(APIError):
            check_shape(text)
        assert time.perf_counter() - started < 1.0


# --- 2. size, also without a Content-Length -------------------------------------------------------


def chunked(client: FlaskClient, auth: dict[str, str], data: bytes) -> Any:
    """POST ``data`` as a server hands over a chunked body: no Content-Length, a terminated stream."""
    return client.post(
        "/api/v1/tasks/add",
        input_stream=io.BytesIO(data),
        headers={**auth, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_chunked_body_over_the_limit_is_413(tmp_path: Path, redis_url: str, auth: dict[str, str]) -> None:
    """It answers 413, not 400 "not valid JSON", for a body without Content-Length over the limit."""
    small = create_app(make_env(tmp_path, redis_url, MAX_REQUEST_BYTES="2048")).test_client()
    request = b'{"args": {"x": 1, "y": 2}}'
    over = chunked(small, auth, request + b" " * (2049 - len(request)))
    assert over.status_code == 413
    assert_error(over.json, "payload_too_large")
    at_limit = chunked(small, auth, request + b" " * (2048 - len(request)))
    assert at_limit.status_code == 202, at_limit.json


# --- 4. content type, null and non-objects --------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_declared_json_is_415(
    client: FlaskClient, auth: dict[str, str], content_type: str | None
) -> None:
    """It answers 415 naming application/json, not 422 "field required" for every field."""
    headers = {**auth, **({"Content-Type": content_type} if content_type else {})}
    for path, body in bodies_nesting("1").items():
        response = client.post(path, data=body, headers=headers)
        assert response.status_code == 415, (path, response.json)
        error = assert_error(response.json, "unsupported_media_type")
        assert "application/json" in error["message"]
        assert error["details"]["expected"] == "application/json"


def test_a_post_without_body_is_fine_for_a_task_without_arguments(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    """It enqueues a task that takes no arguments from a bare POST, with or without a content type."""
    assert client.post("/api/v1/tasks/health_check", headers=auth).status_code == 202
    bare = client.post("/api/v1/tasks/add", headers=auth)
    assert bare.status_code == 422
    details = assert_error(bare.json, "invalid_arguments")["details"]
    assert {d["field"] for d in details} == {"args.x", "args.y"}
    for path in ("/api/v1/tasks/add/batch", "/api/v1/workflows"):
        assert_error(client.post(path, headers=auth).json, "malformed_json")


@pytest.mark.parametrize(
    ("data", "kind"),
    [("null", "null"), ("[1, 2]", "an array"), ('"text"', "a string"), ("3", "a number"), ("true", "true")],
)
def test_json_that_is_not_an_object_says_so(
    client: FlaskClient, auth: dict[str, str], data: str, kind: str
) -> None:
    """It answers 400 saying the body must be a JSON object, not that it is not JSON."""
    for path in bodies_nesting("1"):
        response = post(client, auth, path, data)
        assert response.status_code == 400
        message = assert_error(response.json, "malformed_json")["message"]
        assert "must be a JSON object" in message and kind in message, message
        assert "not valid JSON" not in message


@pytest.mark.parametrize("data", ["{", " ", '{"args": {"x": NaN, "y": 1}}', '{"args": {"x": -Infinity}}'])
def test_malformed_json_is_400_naming_the_problem(
    client: FlaskClient, auth: dict[str, str], data: str
) -> None:
    """It answers 400 malformed_json, with the parser's reason, for what RFC 8259 does not allow."""
    response = post(client, auth, "/api/v1/tasks/add", data)
    assert response.status_code == 400
    assert "not valid JSON" in assert_error(response.json, "malformed_json")["message"]


def test_the_envelope_is_checked_by_the_request_model(client: FlaskClient, auth: dict[str, str]) -> None:
    """It answers 400 with field errors for an unknown top-level key or args that is not an object."""
    unknown = client.post("/api/v1/tasks/add", json={"args": {"x": 1, "y": 1}, "arg": {}}, headers=auth)
    assert unknown.status_code == 400
    assert [d["field"] for d in assert_error(unknown.json, "bad_request")["details"]] == ["arg"]
    not_object = client.post("/api/v1/tasks/add", json={"args": [1, 2]}, headers=auth)
    assert not_object.status_code == 400
    assert [d["field"] for d in assert_error(not_object.json, "bad_request")["details"]] == ["args"]
    batch = client.post("/api/v1/tasks/add/batch", json={"items": {"args": {}}}, headers=auth)
    assert batch.status_code == 400
    assert [d["field"] for d in assert_error(batch.json, "bad_request")["details"]] == ["items"]


def test_utf16_json_is_still_read(client: FlaskClient, auth: dict[str, str]) -> None:
    """It reads a UTF-16 body as json.loads (and Flask before) did."""
    body = json.dumps({"args": {"x": 1, "y": 2}}).encode("utf-16")
    assert post(client, auth, "/api/v1/tasks/add", body).status_code == 202


# --- the lingering close --------------------------------------------------------------------------


def run_app(app: LingeringClose, environ: dict[str, Any]) -> None:
    list(app(environ, lambda status, headers: None))


def refusing_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("413 Request Entity Too Large", [("Content-Type", "application/json")])
    return [b"{}"]


def test_lingering_close_reads_what_the_app_left() -> None:
    """It reads the unread rest of a terminated body before the answer goes out."""
    stream = io.BytesIO(b"x" * 300_000)
    run_app(LingeringClose(refusing_app), {"wsgi.input": stream, "wsgi.input_terminated": True})
    assert stream.read() == b""


def test_lingering_close_is_bounded() -> None:
    """It stops after max_bytes, skips a declared length over it, and leaves unterminated streams alone."""
    stream = io.BytesIO(b"x" * 1_000_000)
    run_app(
        LingeringClose(refusing_app, max_bytes=100_000),
        {"wsgi.input": stream, "wsgi.input_terminated": True},
    )
    assert 100_000 <= stream.tell() < 1_000_000
    declared = io.BytesIO(b"x" * 1000)
    environ = {"wsgi.input": declared, "wsgi.input_terminated": True, "CONTENT_LENGTH": "200000"}
    run_app(LingeringClose(refusing_app, max_bytes=100_000), environ)
    assert declared.tell() == 0
    raw = io.BytesIO(b"x" * 1000)
    run_app(LingeringClose(refusing_app), {"wsgi.input": raw})
    assert raw.tell() == 0


# --- 5. every refusal comes quickly, in the error shape -------------------------------------------

MIB = 1024 * 1024


def test_each_oversized_or_hostile_body_is_refused_within_a_second(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    """At the default 1 MiB limit: 16 MiB with a Content-Length and 16 MiB chunked are 413;
    1 MiB of nesting is 400 json_too_deep; an array of 200,000 items within the limit is 400
    json_too_long; each within a second, in the error shape."""
    request = b'{"args": {"x": 1, "y": 2, "pad": "'
    sized = request + b"a" * (16 * MIB) + b'"}}'
    stream = io.BytesIO(request + b"a" * (16 * MIB) + b'"}}')
    cases = {
        "sized": (lambda: post(client, auth, "/api/v1/tasks/add", sized), 413, "payload_too_large"),
        "chunked": (lambda: _chunked_stream(client, auth, stream), 413, "payload_too_large"),
        "deep": (
            lambda: post(client, auth, "/api/v1/tasks/add", nested(MIB // 2 - 16)),
            400,
            "json_too_deep",
        ),
        "long": (
            lambda: post(
                client, auth, "/api/v1/tasks/xsum", '{"args": {"numbers": [' + "1," * 199_999 + "1]}}"
            ),
            400,
            "json_too_long",
        ),
    }
    for name, (send, status, code) in cases.items():
        started = time.perf_counter()
        response = send()
        elapsed = time.perf_counter() - started
        assert response.status_code == status, (name, response.status_code)
        assert_error(response.json, code)
        assert elapsed < 1.0, (name, elapsed)
    # (What the app left unread of the chunked body is then drained, at most DRAIN_MAX_BYTES for
    # DRAIN_SECONDS, so that the client receives the 413: see the lingering-close tests above.)


def _chunked_stream(client: FlaskClient, auth: dict[str, str], stream: io.BytesIO) -> Any:
    return client.post(
        "/api/v1/tasks/add",
        input_stream=stream,
        headers={**auth, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_an_integer_too_long_to_convert_is_400(client: FlaskClient, auth: dict[str, str]) -> None:
    """A 5,000-digit integer is valid JSON that Python will not convert: 400 number_too_long, in
    words for the caller (not Python's advice to call sys.set_int_max_str_digits); 4,300 digits pass
    on to validation."""
    over = post(client, auth, "/api/v1/tasks/add", '{"args": {"x": ' + "9" * 5000 + ', "y": 1}}')
    assert over.status_code == 400, over.json
    error = assert_error(over.json, "number_too_long")
    assert "5000 digits" in error["message"] and "set_int_max_str_digits" not in error["message"]
    negative = post(client, auth, "/api/v1/tasks/add", '{"args": {"x": -' + "9" * 5000 + ', "y": 1}}')
    assert_error(negative.json, "number_too_long")
    at_limit = post(client, auth, "/api/v1/tasks/add", '{"args": {"x": ' + "9" * 4300 + ', "y": 1}}')
    assert at_limit.status_code != 400, at_limit.json
