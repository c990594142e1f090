"""Bearer-token authentication of the API (tokens from API_TOKENS)."""

from __future__ import annotations

import hashlib
import hmac

from flask import g, request

from app.foundation.runtime import runtime
from app.surfaces.api.errors import APIError


def _matches(candidate: str, tokens: tuple[str, ...]) -> bool:
    # Compare against every token without stopping early, so timing says nothing.
    found = False
    for token in tokens:
        found |= hmac.compare_digest(candidate.encode(), token.encode())
    return found


def require_token() -> None:
    """Before every API request: accept only ``Authorization: Bearer <token>``."""
    header = request.headers.get("Authorization", "")
    scheme, _, candidate = header.partition(" ")
    tokens = runtime().settings.api_tokens
    if scheme.lower() != "bearer" or not candidate.strip() or not _matches(candidate.strip(), tokens):
        raise APIError(
            401,
            "unauthorized",
            "a valid bearer token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": 'Bearer realm="tasklane"'},
        )
    # Identify the caller without keeping the secret itself (for idempotency keys and logs).
    g.caller = hashlib.sha256(candidate.strip().encode()).hexdigest()[:16]
