"""Embedders: a local hashing vectorizer (the default: no network, no model files) and an
OpenAI-compatible ``/v1/embeddings`` client (Ollama, LiteLLM, ...) chosen by ``EMBEDDINGS_URL``.

Every vector is scaled to unit length, so a dot product is the cosine similarity. Vectors
are stored as little-endian float32 bytes (:func:`pack`), the same on every database.

Why hashing by default: wordllama's wheel carries its weights but, in version 0.4.0, loads its
tokenizer configuration from the Hugging Face hub on first use (it fails with the network cut)
and pulls in huggingface_hub, tokenizers and numpy; a hashing vectorizer needs nothing.
"""

from __future__ import annotations

import itertools
import math
import re
import struct
import time
from collections import Counter
from collections.abc import Callable, Sequence
from hashlib import blake2b
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

from app.foundation import defaults
from app.foundation.config import Settings
from app.services.http import HttpClient, retry_after

_TOKEN = re.compile(r"\w+", re.UNICODE)


class EmbeddingsUnavailable(Exception):
    """The embeddings endpoint could not answer now (429, 5xx, a network error): retry later."""


class EmbeddingsError(Exception):
    """The embeddings endpoint refused the request or answered nonsense: retrying will not help."""


class Embedder(Protocol):
    """Turns texts into unit vectors."""

    name: str

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text, in order."""
        ...


def _unit(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else [0.0] * len(vector)


def pack(vector: Sequence[float]) -> bytes:
    """A vector as little-endian float32 bytes."""
    return struct.pack(f"<{len(vector)}f", *vector)


def unpack(data: bytes) -> tuple[float, ...]:
    """The vector :func:`pack` stored."""
    return struct.unpack(f"<{len(data) // 4}f", data)


class HashingEmbedder:
    """Signed feature hashing of words and word pairs (sublinear term frequency), normalised."""

    def __init__(self, dimensions: int = defaults.HASHING_DIMENSIONS) -> None:
        self.dimensions = dimensions
        self.name = f"hashing-{dimensions}"

    def _features(self, text: str) -> Counter[str]:
        words = _TOKEN.findall(text.lower())
        feats = Counter(words)
        feats.update(f"{a} {b}" for a, b in itertools.pairwise(words))
        return feats

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text."""
        out = []
        for text in texts:
            vector = [0.0] * self.dimensions
            for feature, count in self._features(text).items():
                h = int.from_bytes(blake2b(feature.encode(), digest_size=8).digest(), "little")
                weight = 1.0 + math.log(count)
                vector[h % self.dimensions] += weight if (h >> 63) & 1 else -weight
            out.append(_unit(vector))
        return out


def endpoint(url: str) -> tuple[str, str | None]:
    """The ``.../embeddings`` URL for an EMBEDDINGS_URL and the API key its userinfo carries.

    ``http://host:11434`` -> ``http://host:11434/v1/embeddings``; ``https://h/v1`` ->
    ``https://h/v1/embeddings``; a URL ending in ``/embeddings`` is used as it is;
    ``https://:sk-key@h/v1`` sends ``Authorization: Bearer sk-key``.
    """
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if not path.endswith("/embeddings"):
        path = f"{path}/embeddings" if path.endswith("/v1") else f"{path}/v1/embeddings"
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, path, parts.query, "")), parts.password or parts.username or None


class HttpEmbedder:
    """An OpenAI-compatible embeddings endpoint; 429 and 5xx are retried with back-off."""

    def __init__(
        self,
        url: str,
        model: str,
        http: HttpClient,
        attempts: int = defaults.EMBEDDINGS_ATTEMPTS,
        backoff: float = defaults.EMBEDDINGS_BACKOFF,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url, self.key = endpoint(url)
        self.model = model
        self.http = http
        self.attempts = attempts
        self.backoff = backoff
        self.sleep = sleep
        self.name = f"openai:{model}"

    def _post(self, texts: Sequence[str]) -> list[list[float]]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                reply = self.http.post_json(
                    self.url, {"model": self.model, "input": list(texts)}, headers=headers
                )
            except httpx.TransportError as exc:
                problem = f"embeddings endpoint unreachable: {exc}"
                wait: float | None = None
            else:
                if reply.status_code == 429 or reply.status_code >= 500:
                    problem = f"embeddings endpoint answered {reply.status_code}"
                    wait = retry_after(reply)
                elif reply.status_code >= 400:
                    raise EmbeddingsError(
                        f"embeddings endpoint answered {reply.status_code}: {reply.text[:300]}"
                    )
                else:
                    return self._vectors(reply.json() if reply.is_json else None, len(texts))
            if attempt == self.attempts:
                raise EmbeddingsUnavailable(f"{problem} ({self.attempts} attempts)")
            self.sleep(min(30.0, wait if wait is not None else delay))
            delay *= 2
        raise AssertionError("unreachable")

    @staticmethod
    def _vectors(body: object, count: int) -> list[list[float]]:
        try:
            data = sorted(body["data"], key=lambda d: d.get("index", 0))  # type: ignore[index]
            vectors = [[float(x) for x in item["embedding"]] for item in data]
        except (TypeError, KeyError, ValueError, AttributeError):
            raise EmbeddingsError("embeddings endpoint answered without data[].embedding") from None
        if len(vectors) != count or len({len(v) for v in vectors}) > 1:
            raise EmbeddingsError(f"embeddings endpoint answered {len(vectors)} vectors for {count} texts")
        return [_unit(v) for v in vectors]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text, EMBEDDINGS_BATCH texts per request."""
        out: list[list[float]] = []
        for i in range(0, len(texts), defaults.EMBEDDINGS_BATCH):
            out += self._post(texts[i : i + defaults.EMBEDDINGS_BATCH])
        return out


def embedder_for(settings: Settings, http: HttpClient) -> Embedder:
    """EMBEDDINGS_URL's endpoint when set, else the local hashing embedder."""
    if settings.embeddings_url:
        return HttpEmbedder(settings.embeddings_url, settings.embeddings_model, http)
    return HashingEmbedder()
