"""Semantic search over the chunks that ``file_ingestion`` and ``generate_embeddings`` stored.

A query, not a task: the API (``GET /api/v1/search``) and the CLI (``flask search``) call it in
their own process; it lives here, beside the embedders, so neither surface imports a task module.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from app.foundation.models import Chunk, Document, DocumentStatus
from app.services.embeddings import Embedder, unpack


def search_chunks(engine: Engine, embedder: Embedder, query: str, limit: int = 5) -> list[dict[str, Any]]:
    """The ``limit`` chunks nearest to ``query`` (cosine similarity), embedded by the same embedder."""
    vector = embedder.embed([query])[0]
    best: list[tuple[float, int]] = []
    with engine.connect() as conn:
        rows = conn.execute(
            select(Chunk.id, Chunk.vector)
            .join(Document, Document.id == Chunk.document_id)
            .where(Document.embedder == embedder.name, Document.status == DocumentStatus.COMPLETED)
        )
        for chunk_id, data in rows:
            stored = unpack(data) if data else ()
            if len(stored) != len(vector):
                continue
            best.append((sum(a * b for a, b in zip(vector, stored, strict=True)), chunk_id))
        best = sorted(best, reverse=True)[:limit]
        if not best:
            return []
        found = {
            r.id: r
            for r in conn.execute(
                select(Chunk.id, Chunk.document_id, Chunk.position, Chunk.text, Document.path, Document.title)
                .join(Document, Document.id == Chunk.document_id)
                .where(Chunk.id.in_([c for _, c in best]))
            )
        }
    return [
        {
            "score": round(score, 4),
            "chunk_id": cid,
            "document_id": found[cid].document_id,
            "path": found[cid].path,
            "title": found[cid].title,
            "position": found[cid].position,
            "text": found[cid].text,
        }
        for score, cid in best
    ]
