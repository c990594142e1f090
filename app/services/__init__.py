"""Clients of the real components tasks talk to, built once per process from the settings.

Each app keeps one :class:`Services` in ``app.extensions``; a task reaches it through
:func:`services` (inside a job the worker's app context is active), never through a
module global, so two apps with different settings have different clients. Each client
is created on first use, after any fork, and closed with :meth:`Services.close`.

Two HTTP clients: ``http`` for the URLs the operator configured (health checks, the
payment gateway, model providers) and ``outbound`` for URLs from callers and user
records, which goes through the outbound-URL policy (:mod:`app.services.outbound`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app

from app.foundation import defaults
from app.foundation.config import Settings
from app.services.embeddings import Embedder, embedder_for
from app.services.gateway import PaymentGateway
from app.services.http import HttpClient
from app.services.mail import Mailer
from app.services.outbound import OutboundPolicy, policy_for
from app.services.providers import ModelProvider, providers_from_settings
from app.services.webhooks import WebhookSender

EXTENSION = "tasklane.services"


@dataclass
class Services:
    """The service clients of one app, each built on first use."""

    settings: Settings
    _clients: dict[str, Any] = field(default_factory=dict)
    # Re-entrant: building one client may build another (webhooks use the outbound client).
    _lock: threading.RLock = field(default_factory=threading.RLock)

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
        """HTTP to the operator's own URLs (health checks, the payment gateway, model providers)."""
        return self._get("http", HttpClient)

    @property
    def outbound_policy(self) -> OutboundPolicy:
        """The outbound-URL policy of ``OUTBOUND_URL_ALLOWLIST``."""
        return policy_for(self.settings.outbound_url_allowlist)

    @property
    def outbound(self) -> HttpClient:
        """HTTP to URLs from callers and user records: every connection checked by the policy."""
        return self._get(
            "outbound",
            lambda: HttpClient(policy=self.outbound_policy, max_bytes=defaults.EXTERNAL_API_MAX_BYTES),
        )

    @property
    def mail(self) -> Mailer:
        """SMTP mail (``SMTP_URL``), or .eml files under ``$VAR_DIR/mail`` in development."""
        return self._get("mail", lambda: Mailer.from_settings(self.settings))

    @property
    def webhooks(self) -> WebhookSender:
        """Signed webhook deliveries (``WEBHOOK_SECRET``) over the policy-checked client."""
        return self._get("webhooks", lambda: WebhookSender.from_settings(self.settings, self.outbound))

    @property
    def gateway(self) -> PaymentGateway:
        """The payment gateway (``PAYMENT_GATEWAY_URL``)."""
        return self._get("gateway", lambda: PaymentGateway.from_settings(self.settings, self.http))

    @property
    def model_providers(self) -> tuple[ModelProvider, ...]:
        """The model providers configured (``OLLAMA_URL``, ``LITELLM_URL``)."""
        return providers_from_settings(self.settings)

    @property
    def embedder(self) -> Embedder:
        """The embedder: ``EMBEDDINGS_URL``'s endpoint, else the local hashing vectorizer."""
        return embedder_for(self.settings, self.http)

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
