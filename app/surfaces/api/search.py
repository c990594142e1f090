"""Search: ``GET /api/v1/search?q=&limit=``, the chunks nearest to a query, with their scores."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, jsonify, request
from sqlalchemy.exc import DBAPIError

from app.foundation.runtime import runtime
from app.services import files, services
from app.services.embeddings import EmbeddingsError, EmbeddingsUnavailable
from app.services.search import search_chunks
from app.surfaces.api.blueprint import api
from app.surfaces.api.errors import APIError

log = logging.getLogger(__name__)

#: Most chunks one search answers.
MAX_LIMIT = 50


def presented(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Search hits as clients see them: only chunks with some similarity (a score of 0 or less is
    unrelated), each path relative to its input directory (never the server's absolute path)."""
    return [{**hit, "path": files.shown_path(hit["path"])} for hit in results if hit["score"] > 0]


@api.get("/search")
def search() -> Response:
    """The ingested chunks nearest to ``q`` (cosine similarity of their embeddings), best first."""
    query = (request.args.get("q") or "").strip()
    if not query:
        raise APIError(400, "invalid_query", "give the text to search for as ?q=")
    if len(query) > 2000:
        raise APIError(400, "invalid_query", "q must be at most 2000 characters")
    raw = request.args.get("limit", "5")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise APIError(400, "invalid_query", f"limit must be a whole number from 1 to {MAX_LIMIT}")
    embedder = services().embedder
    try:
        results = search_chunks(runtime().engine, embedder, query, int(raw))
    except DBAPIError as exc:
        log.warning("search: the database cannot answer: %s", exc.orig)
        raise APIError(
            503,
            "database_unavailable",
            "the database cannot answer: it is unreachable, or not migrated "
            "(run `alembic upgrade head`, the Procfile's release step)",
        ) from exc
    except (EmbeddingsError, EmbeddingsUnavailable) as exc:
        raise APIError(503, "embeddings_unavailable", f"the embeddings endpoint failed: {exc}") from exc
    return jsonify({"query": query, "embedder": embedder.name, "results": presented(results)})
