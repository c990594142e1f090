"""Model providers whose model lists are cached: Ollama and any OpenAI-compatible API (LiteLLM).

- Ollama (``OLLAMA_URL``): ``GET /api/tags`` answers ``{"models": [{"name", ...}]}``;
- OpenAI-compatible (``LITELLM_URL``): ``GET /v1/models`` answers ``{"data": [{"id", ...}]}``
  (a URL already ending in ``/v1`` is not given a second one). Credentials in the URL
  (``http://:sk-key@litellm:4000``) are sent as ``Authorization: Bearer <key>``.

Each list is normalised to ``[{"id", ...}]`` so that readers of the cache need not know
which kind of provider it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from app.foundation import defaults
from app.foundation.config import Settings, mask_url
from app.services.http import HttpClient, HTTPStatusError, ResponseTooLarge, raise_for_status


class ProviderKind(StrEnum):
    """The API a provider speaks."""

    OLLAMA = "ollama"
    OPENAI = "openai"


class ProviderError(Exception):
    """A provider could not list its models (unreachable, an error status, an unexpected answer)."""


@dataclass(frozen=True)
class ModelProvider:
    """One configured provider: its name in reports and cache keys, its kind and base URL."""

    name: str
    kind: ProviderKind
    base_url: str
    timeout: float = defaults.MODEL_PROVIDER_TIMEOUT

    def endpoint(self) -> tuple[str, dict[str, str]]:
        """The URL of the model list (credentials removed) and the headers that carry them."""
        parts = urlsplit(self.base_url)
        headers: dict[str, str] = {}
        if parts.username is not None or parts.password is not None:
            key = unquote(parts.password or parts.username or "")
            headers["Authorization"] = f"Bearer {key}"
            parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
        base = parts.geturl().rstrip("/")
        if self.kind is ProviderKind.OLLAMA:
            return f"{base}/api/tags", headers
        return (f"{base}/models" if base.endswith("/v1") else f"{base}/v1/models"), headers

    def list_models(self, http: HttpClient) -> list[dict[str, Any]]:
        """Fetch and normalise the provider's model list (raises ProviderError)."""
        url, headers = self.endpoint()
        try:
            reply = raise_for_status(http.get(url, headers=headers, timeout=self.timeout), self.name)
            body = reply.json()
        except (httpx.HTTPError, HTTPStatusError, ResponseTooLarge) as exc:
            raise ProviderError(f"{self.name} ({mask_url(url)}): {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:
            raise ProviderError(f"{self.name} ({mask_url(url)}): the answer is not JSON") from exc
        entries = (
            body.get("models" if self.kind is ProviderKind.OLLAMA else "data")
            if isinstance(body, dict)
            else None
        )
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ProviderError(f"{self.name} ({mask_url(url)}): unexpected answer, no list of models")
        return [self._normalised(entry) for entry in entries]

    def _normalised(self, entry: dict[str, Any]) -> dict[str, Any]:
        if self.kind is ProviderKind.OLLAMA:
            details: dict[str, Any] = entry["details"] if isinstance(entry.get("details"), dict) else {}
            return {
                "id": str(entry.get("name") or entry.get("model") or ""),
                "size": entry.get("size"),
                "digest": entry.get("digest"),
                "modified_at": entry.get("modified_at"),
                "family": details.get("family"),
                "parameter_size": details.get("parameter_size"),
            }
        return {
            "id": str(entry.get("id") or ""),
            "owned_by": entry.get("owned_by"),
            "created": entry.get("created"),
        }


def providers_from_settings(settings: Settings) -> tuple[ModelProvider, ...]:
    """The providers whose URL is set: ``ollama`` (OLLAMA_URL) and ``litellm`` (LITELLM_URL)."""
    found = []
    if settings.ollama_url:
        found.append(ModelProvider("ollama", ProviderKind.OLLAMA, settings.ollama_url))
    if settings.litellm_url:
        found.append(ModelProvider("litellm", ProviderKind.OPENAI, settings.litellm_url))
    return tuple(found)
