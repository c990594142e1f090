"""``GET /api/v1/openapi.json`` and ``GET /docs``: the OpenAPI document and a page to browse it.

Neither needs a token (API.md). The page is Swagger UI, served from the files the
``flask-swagger-ui`` wheel ships (no CDN), so it works without internet; its online
validator badge is switched off.
"""

from __future__ import annotations

import json
from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, Response, jsonify, send_from_directory, url_for

from app.surfaces.api.openapi import document

docs = Blueprint("docs", __name__)

#: Swagger UI's files, as the wheel ships them.
ASSETS = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
#: The files the page loads.
PAGE_ASSETS = ("swagger-ui.css", "index.css", "swagger-ui-bundle.js")

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>Tasklane API</title>
  <link rel="stylesheet" href="{css}">
  <link rel="stylesheet" href="{index_css}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{js}"></script>
  <script>
    window.onload = function () {{
      window.ui = SwaggerUIBundle({{
        url: {spec_url},
        dom_id: "#swagger-ui",
        deepLinking: true,
        validatorUrl: null,
        docExpansion: "none",
        presets: [SwaggerUIBundle.presets.apis],
        layout: "BaseLayout"
      }});
    }};
  </script>
</body>
</html>
"""


@docs.get("/api/v1/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI 3.1 document, generated from the catalogue."""
    response = jsonify(document())
    response.headers["Cache-Control"] = "no-cache"
    return response


@docs.get("/docs")
def docs_page() -> Response:
    """Swagger UI on the document, every asset served by this app."""
    html = _PAGE.format(
        css=url_for("docs.asset", filename="swagger-ui.css"),
        index_css=url_for("docs.asset", filename="index.css"),
        js=url_for("docs.asset", filename="swagger-ui-bundle.js"),
        spec_url=json.dumps(url_for("docs.openapi_json")),
    )
    return Response(html, mimetype="text/html")


@docs.get("/docs/assets/<path:filename>")
def asset(filename: str) -> Response:
    """One of Swagger UI's files."""
    response = send_from_directory(ASSETS, filename, max_age=3600)
    return response
