"""The OpenAPI 3.1 document generated from the registry, and the /docs page that browses it offline."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from app import create_app
from app.catalogue.registry import REGISTRY
from app.surfaces.api.openapi import ENQUEUE_ERRORS
from tests.conftest import make_env


def _doc(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/v1/openapi.json")  # no Authorization header: none is needed
    assert response.status_code == 200
    return dict(response.get_json())


def _check(doc: dict[str, Any], schema_name: str, value: Any) -> None:
    """Validate ``value`` against a component schema of ``doc`` (JSON Schema 2020-12, as OAS 3.1 says)."""
    schema = {**doc, "$ref": f"#/components/schemas/{schema_name}"}
    jsonschema.Draft202012Validator(schema).validate(value)


def test_document_is_valid_openapi_31(client: FlaskClient) -> None:
    """openapi-spec-validator accepts the document, and it says it is OpenAPI 3.1."""
    doc = _doc(client)
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_one_path_per_task_with_its_input_schema_options_and_errors(client: FlaskClient) -> None:
    """Each task has POST /api/v1/tasks/<name> whose args are its input schema, with its options and
    every error of API.md in the one error shape."""
    doc = _doc(client)
    schemas = doc["components"]["schemas"]
    names = [spec.name for spec in REGISTRY]
    assert {"add", "xsum", "health_check", "flaky"} <= set(names)
    for spec in REGISTRY:
        operation = doc["paths"][f"/api/v1/tasks/{spec.name}"]["post"]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        args = schemas[body["properties"]["args"]["$ref"].rsplit("/", 1)[1]]
        declared = spec.input_model.model_json_schema()
        assert args.get("properties", {}).keys() == declared.get("properties", {}).keys()
        assert args.get("required") == declared.get("required")
        assert body["properties"]["options"] == {"$ref": "#/components/schemas/EnqueueOptions"}
        for status in ENQUEUE_ERRORS:
            response = operation["responses"][str(status)]
            assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        assert "202" in operation["responses"]
        assert operation["x-tasklane-policy"]["queue"] == spec.queue.value
    add_args = schemas["add.Args"]
    assert add_args["properties"]["x"]["type"] == "number" and add_args["required"] == ["x", "y"]
    options = schemas["EnqueueOptions"]["properties"]
    assert {"countdown", "eta", "queue", "job_id", "result_ttl"} <= options.keys()


def test_every_route_of_the_api_is_documented(app: Flask, client: FlaskClient) -> None:
    """Every route the app serves under /api/v1, the probes and /docs has its path and methods."""
    doc = _doc(client)
    task_names = [spec.name for spec in REGISTRY]
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        if not (path.startswith("/api/v1") or path in ("/healthz", "/readyz", "/docs")):
            continue
        methods = {m.lower() for m in rule.methods or ()} - {"head", "options"}
        paths = [path.replace("{name}", n) for n in task_names] if "{name}" in path else [path]
        for one in paths:
            assert one in doc["paths"], one
            assert methods <= doc["paths"][one].keys(), (one, methods)


def test_error_and_success_answers_match_their_schemas(client: FlaskClient, auth: dict[str, str]) -> None:
    """Real answers of the API validate against the document's schemas."""
    doc = _doc(client)
    enqueued = client.post("/api/v1/tasks/add", json={"args": {"x": 2, "y": 3}}, headers=auth)
    _check(doc, "Enqueued", enqueued.get_json())
    job = client.get(f"/api/v1/jobs/{enqueued.get_json()['job_id']}", headers=auth)
    _check(doc, "Job", job.get_json())
    invalid = client.post("/api/v1/tasks/add", json={"args": {"x": "2"}}, headers=auth)
    assert invalid.status_code == 422
    _check(doc, "Error", invalid.get_json())
    _check(doc, "Error", client.get("/api/v1/tasks").get_json())
    tasks = client.get("/api/v1/tasks", headers=auth).get_json()["tasks"]
    for task in tasks:
        _check(doc, "Task", task)


def test_overridden_policy_is_shown_as_in_force(tmp_path: Path, redis_url: str) -> None:
    """With TASK_OVERRIDES, the task's operation shows the policy in force and what was overridden."""
    overrides = {"add": {"queue": "high", "max_retries": 8, "time_limit": 60, "rate_limit": "10/m"}}
    app = create_app(make_env(tmp_path, redis_url, TASK_OVERRIDES=json.dumps(overrides)))
    doc = _doc(app.test_client())
    validate(doc)
    operation = doc["paths"]["/api/v1/tasks/add"]["post"]
    policy = operation["x-tasklane-policy"]
    assert policy["queue"] == "high" and policy["retry"]["max_retries"] == 8
    assert policy["time_limit"] == 60 and policy["rate_limit"] == "10/m"
    assert policy["overridden"]["queue"] == {"declared": "default", "in_force": "high"}
    assert "Overridden by the operator (TASK_OVERRIDES)" in operation["description"]
    assert "queue (declared 'default')" in operation["description"]


def test_docs_page_and_its_assets_are_served_locally(client: FlaskClient) -> None:
    """/docs loads Swagger UI from this app only (no CDN), with the online validator switched off."""
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(ref.startswith("/docs/assets/") for ref in refs), refs
    assert "http://" not in html and "https://" not in html
    assert '"/api/v1/openapi.json"' in html and "validatorUrl: null" in html
    for ref in refs:
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.get_data()) > 100
    bundle = client.get("/docs/assets/swagger-ui-bundle.js").get_data(as_text=True)
    assert "SwaggerUIBundle" in bundle


@pytest.mark.parametrize("path", ["/docs/assets/../../app/config.py", "/docs/assets/nothing.js"])
def test_docs_assets_outside_the_bundle_are_not_served(client: FlaskClient, path: str) -> None:
    """Only Swagger UI's own files are served."""
    assert client.get(path).status_code == 404
