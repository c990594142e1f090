"""Outbound HTTP (httpx): one pooled client per use, a timeout on every call, bounded bodies.

Two kinds of client live in :class:`~app.services.Services`: ``http`` for the URLs the
operator configured (health checks, the payment gateway, model providers), and
``outbound`` for URLs that come from a caller or a user record, whose every connection
goes through the :class:`~app.services.outbound.OutboundPolicy`: the host is resolved
once, each address checked, and the socket opened to a checked address (so DNS
rebinding cannot switch it), on the first request and on every redirect.

A call answers a :class:`Reply` (the body already read, within a size bound);
:func:`raise_for_status` sorts error statuses into transient ones (5xx, 408, 429: worth
retrying, honouring ``Retry-After``) and permanent ones (any other 4xx).
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx

from app.foundation import defaults
from app.foundation.config import mask_url
from app.services.outbound import OutboundPolicy, OutboundURLRefused

#: The User-Agent of every outbound request.
USER_AGENT = "tasklane/0.1"

#: Connection-pool bounds (httpx's defaults, spelled out for the pool built here too).
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)

#: Statuses below 500 that are still worth another attempt.
TRANSIENT_4XX = frozenset({408, 429})


class ResponseTooLarge(Exception):
    """A response body is larger than the call allows."""


class HTTPStatusError(Exception):
    """A peer answered with an error status."""

    def __init__(self, reply: Reply, what: str = "peer") -> None:
        super().__init__(f"{what} answered HTTP {reply.status_code} ({mask_url(reply.url)})")
        self.status_code = reply.status_code
        self.retry_after = retry_after(reply)
        self.body = reply.text[:500]


class TransientHTTPError(HTTPStatusError):
    """5xx, 408 or 429: the same request may succeed later (``retry_after`` is the peer's wish)."""


class PermanentHTTPError(HTTPStatusError):
    """A 4xx other than 408 and 429: the request itself is refused, repeating it will not help."""


@dataclass(frozen=True)
class Reply:
    """An HTTP response, read in full."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    url: str
    elapsed_ms: float

    @property
    def text(self) -> str:
        """The body as text (UTF-8 unless the response names a charset)."""
        charset = "utf-8"
        for part in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    @property
    def is_json(self) -> bool:
        """True when the Content-Type says JSON (``application/json``, ``...+json``)."""
        media = self.headers.get("content-type", "").split(";")[0].strip().lower()
        return media == "application/json" or media.endswith("+json")

    def json(self) -> Any:
        """The body decoded as JSON (raises ValueError when it is not)."""
        return json.loads(self.content)


def retry_after(reply: Reply) -> float | None:
    """The seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None."""
    raw = reply.headers.get("retry-after", "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return float(raw)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def raise_for_status(reply: Reply, what: str = "peer") -> Reply:
    """Return ``reply`` when it is 1xx-3xx, else raise TransientHTTPError or PermanentHTTPError."""
    status = reply.status_code
    if status < 400:
        return reply
    if status >= 500 or status in TRANSIENT_4XX:
        raise TransientHTTPError(reply, what)
    raise PermanentHTTPError(reply, what)


class PolicyBackend(httpcore.NetworkBackend):
    """httpcore's network backend with every TCP connection resolved and checked by the policy."""

    def __init__(self, policy: OutboundPolicy, inner: httpcore.NetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        """Connect to the first reachable address of ``host`` that the policy admits."""
        try:
            addresses = self.policy.addresses(host, port)
        except OSError as exc:  # the name does not resolve
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        last: Exception | None = None
        for address in addresses:
            try:
                return self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError(f"{host!r} resolves to no address")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        raise OutboundURLRefused("outbound URL refused: unix sockets are not reachable through the policy")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class PolicyTransport(httpx.HTTPTransport):
    """httpx's transport with its connection pool built on :class:`PolicyBackend`.

    httpx takes no network backend, so the pool it built is replaced by the same pool
    with ours (tests/test_outbound.py pins that every connection goes through it).
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        ssl_context: ssl.SSLContext,
        backend: httpcore.NetworkBackend | None = None,
    ) -> None:
        super().__init__(verify=ssl_context, limits=LIMITS)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=LIMITS.max_connections,
            max_keepalive_connections=LIMITS.max_keepalive_connections,
            keepalive_expiry=LIMITS.keepalive_expiry,
            network_backend=PolicyBackend(policy, backend),
        )


class HttpClient:
    """A pooled HTTP client: every call has a timeout and reads at most ``max_bytes`` of body.

    With a ``policy`` every connection (redirects included) goes through it, then through
    ``backend`` (httpcore's sockets unless a test passes its own), and the proxy variables
    (``HTTPS_PROXY``, ...) are ignored so that the connection goes where the policy checked;
    without one they are honoured. ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` are honoured.
    """

    def __init__(
        self,
        timeout: float = defaults.HTTP_TIMEOUT,
        policy: OutboundPolicy | None = None,
        max_bytes: int = defaults.MAX_RESPONSE_BYTES,
        max_redirects: int = defaults.MAX_REDIRECTS,
        backend: httpcore.NetworkBackend | None = None,
    ) -> None:
        self.timeout = timeout
        self.policy = policy
        self.max_bytes = max_bytes
        context = httpx.create_ssl_context(trust_env=True)
        transport = (
            PolicyTransport(policy, context, backend)
            if policy is not None
            else httpx.HTTPTransport(verify=context, limits=LIMITS)
        )
        self.client = httpx.Client(
            transport=transport,
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
            trust_env=policy is None,
            follow_redirects=False,
            max_redirects=max_redirects,
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        follow_redirects: bool = False,
        max_bytes: int | None = None,
    ) -> Reply:
        """Send one request (following redirects only when asked) and read the reply.

        Raises httpx.TransportError (connect, timeout, protocol), httpx.TooManyRedirects,
        OutboundURLRefused, or ResponseTooLarge.
        """
        if self.policy is not None:
            self.policy.check_url(url, resolve=False)
        limit = self.max_bytes if max_bytes is None else max_bytes
        started = time.perf_counter()
        try:
            with self.client.stream(
                method,
                url,
                content=content,
                headers=headers,
                timeout=self.timeout if timeout is None else timeout,
                follow_redirects=follow_redirects,
            ) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise ResponseTooLarge(f"response of {declared} bytes is larger than {limit}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise ResponseTooLarge(f"response is larger than {limit} bytes")
        except httpx.UnsupportedProtocol as exc:  # a redirect to ftp:, file:, ...
            raise OutboundURLRefused(f"outbound URL refused: {exc}") from exc
        return Reply(
            status_code=response.status_code,
            headers=response.headers,
            content=bytes(body),
            url=str(response.url),
            elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    def get(self, url: str, **kwargs: Any) -> Reply:
        """GET ``url`` (see :meth:`request`)."""
        return self.request("GET", url, **kwargs)

    def post_json(
        self, url: str, payload: Any, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Reply:
        """POST ``payload`` (any JSON value, null included) as the JSON body (see :meth:`request`)."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        return self.request(
            "POST",
            url,
            content=body,
            headers={"Content-Type": "application/json", **(headers or {})},
            **kwargs,
        )

    def close(self) -> None:
        """Release pooled connections."""
        self.client.close()
