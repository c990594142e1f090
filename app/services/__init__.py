"""Clients of the real components tasks talk to, built once per process from the settings.

Each app keeps one :class:`Services` in ``app.extensions``; a task reaches it through
:func:`services` (inside a job the worker's app context is active), never through a
module global, so two apps with different settings have different clients. Each client
is created on first use, after any fork, and closed with :meth:`Services.close`.

The catalogue's clients (SMTP mail, the payment gateway, storage, embeddings) join
:class:`Services` the same way as the outbound HTTP client here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app

from app.config import Settings
from app.services.http import HttpClient

EXTENSION = "tasklane.services"


@dataclass
class Services:
    """The service clients of one app, each built on first use."""

    settings: Settings
    _clients: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _get(self, name: str, build: Any) -> Any:
        client = self._clients.get(name)
        if client is None:
            with self._lock:
                client = self._clients.get(name)
                if client is None:
                    client = self._clients[name] = build()
        return client

    @property
    def http(self) -> HttpClient:
        """Outbound HTTP (health checks of HTTP dependencies, alerts, webhooks)."""
        return self._get("http", lambda: HttpClient.from_settings(self.settings))

    def close(self) -> None:
        """Close every client built so far (before a fork, or at exit)."""
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


def init_app(app: Flask, settings: Settings) -> Services:
    """Give ``app`` its service clients (none is built until used)."""
    built = Services(settings)
    app.extensions[EXTENSION] = built
    return built


def services() -> Services:
    """The service clients of the current app (inside a request, a job or a CLI command)."""
    return current_app.extensions[EXTENSION]
