"""The outbound-URL policy: which addresses a URL from a caller or a user record may reach.

A URL that a caller hands in (``call_external_api``) or that a user record holds (a webhook
URL) must not reach the service's own network: private, loopback, link-local, multicast,
reserved and cloud-metadata addresses are refused, in IPv4 and IPv6 (IPv4 wrapped in IPv6
is unwrapped first), unless ``OUTBOUND_URL_ALLOWLIST`` admits the host name or the address.

The policy is applied where the connection is made (see :mod:`app.services.http`): the
host name is resolved once, every address it resolves to is checked, and the socket is
opened to a checked address, so a DNS answer that changes between check and connect
(DNS rebinding) cannot switch it, and every redirect hop is checked the same way. The
API applies it earlier as well (:func:`admitted`), so a refusal it can already see is a
422 there rather than a failed job.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, HttpUrl

from app.foundation import runtime

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Instance-metadata endpoints of the clouds (AWS, GCP, Azure, OpenStack; ECS; AWS over
#: IPv6; Alibaba). Most are link-local anyway; named so that a refusal says what it is.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

#: ``(host, port) -> addresses``: socket.getaddrinfo by default; tests substitute their own.
Resolver = Callable[[str, int], list[str]]


class OutboundURLRefused(ValueError):
    """The URL's host is, or resolves to, an address the outbound policy refuses.

    A ValueError, so that an input model's validator turns it into a field error (422);
    inside a job it is a final failure that no retry policy retries.
    """


def getaddrinfo(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for a TCP connection, in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64, IPv4-compatible), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(ip: IPAddress) -> str | None:
    """Why the policy refuses ``ip`` by default (``"loopback"``, ``"private"``, ...), or None."""
    inner = _embedded_ipv4(ip)
    if inner is not None:
        reason = refusal(inner)
        return f"{reason} (IPv4 {inner} inside IPv6)" if reason else None
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    checks = (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_unspecified, "unspecified"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "site-local"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "not globally routable"),
    )
    return next((reason for refused, reason in checks if refused), None)


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class OutboundPolicy:
    """Refuses non-public destinations unless the allowlist admits the host name or address."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()
    resolver: Resolver = field(default=getaddrinfo, compare=False)

    @classmethod
    def from_allowlist(cls, entries: Iterable[str], resolver: Resolver = getaddrinfo) -> OutboundPolicy:
        """The policy of ``OUTBOUND_URL_ALLOWLIST`` entries: host names, addresses or CIDRs."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks), resolver)

    def check_address(self, ip: IPAddress, host: str) -> None:
        """Raise OutboundURLRefused unless ``ip`` is public or an allowlisted network holds it."""
        reason = refusal(ip)
        if reason is None:
            return
        candidates = [ip, _embedded_ipv4(ip)]
        if any(
            c is not None and c.version == n.version and c in n for c in candidates for n in self.networks
        ):
            return
        shown = host if _address(host) == ip else f"{host} ({ip})"
        raise OutboundURLRefused(
            f"outbound URL refused: {shown} is a {reason} address (OUTBOUND_URL_ALLOWLIST can admit it)"
        )

    def host_admitted(self, host: str) -> bool:
        """True when the allowlist names ``host`` itself: any address it resolves to is fine."""
        return host.lower().rstrip(".") in self.hosts

    def addresses(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` once and return its addresses, every one checked (raises OutboundURLRefused).

        The caller connects to these, not to the name, so the addresses checked are the
        addresses used.
        """
        literal = _address(host)
        found = [str(literal)] if literal is not None else self.resolver(host, port)
        if not self.host_admitted(host):
            for address in found:
                self.check_address(ipaddress.ip_address(address), host)
        return found

    def check_url(self, url: str, resolve: bool = True) -> None:
        """Refuse ``url`` when its scheme is not HTTP(S) or its host is or resolves to a refused address.

        A host name that does not resolve (now) passes: the connection checks it again.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise OutboundURLRefused(
                f"outbound URL refused: scheme {parts.scheme or 'none'!r} is not http(s)"
            )
        host = parts.hostname
        if not host:
            raise OutboundURLRefused("outbound URL refused: no host")
        if self.host_admitted(host):
            return
        literal = _address(host)
        if literal is not None:
            self.check_address(literal, host)
            return
        if resolve:
            try:
                found = self.resolver(host, parts.port or (443 if parts.scheme == "https" else 80))
            except OSError:
                return
            for address in found:
                self.check_address(ipaddress.ip_address(address), host)


@functools.lru_cache(maxsize=16)
def policy_for(allowlist: tuple[str, ...]) -> OutboundPolicy:
    """The policy of an allowlist (parsed once per distinct allowlist)."""
    return OutboundPolicy.from_allowlist(allowlist)


def current_policy() -> OutboundPolicy:
    """The policy of the running app (in a request or a job), else of this process's environment."""
    return policy_for(runtime.settings().outbound_url_allowlist)


def admitted(url: HttpUrl) -> HttpUrl:
    """Validator of :data:`OutboundUrl`: the URL passes the current outbound policy."""
    current_policy().check_url(str(url))
    return url


#: An http(s) URL that the outbound policy admits: in an input model, a refused URL is a
#: field error (422 at the API), checked again, after DNS resolution, when it is called.
OutboundUrl = Annotated[HttpUrl, AfterValidator(admitted)]
