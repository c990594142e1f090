"""Outbound HTTP: one pooled session per process, with a timeout on every call."""

from __future__ import annotations

from typing import Any

import requests

from app import defaults
from app.config import Settings

#: The User-Agent of every outbound request.
USER_AGENT = "tasklane/0.1"


class HttpClient:
    """A pooled HTTP client; every request has a timeout, none follows a redirect unasked."""

    def __init__(self, timeout: float = defaults.HTTP_TIMEOUT) -> None:
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpClient:
        """The client the settings describe."""
        return cls()

    def get(self, url: str, timeout: float | None = None, **kwargs: Any) -> requests.Response:
        """GET ``url`` (no redirects followed unless ``allow_redirects=True``)."""
        kwargs.setdefault("allow_redirects", False)
        return self.session.get(url, timeout=timeout or self.timeout, **kwargs)

    def post_json(
        self, url: str, payload: Any, timeout: float | None = None, **kwargs: Any
    ) -> requests.Response:
        """POST ``payload`` as JSON to ``url``."""
        kwargs.setdefault("allow_redirects", False)
        return self.session.post(url, json=payload, timeout=timeout or self.timeout, **kwargs)

    def close(self) -> None:
        """Release pooled connections."""
        self.session.close()
