"""The outbound-URL policy: each address class, DNS resolution and pinning, redirects, the API's 422."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import httpcore
import pytest

from app.services.http import HttpClient
from app.services.outbound import OutboundPolicy, OutboundURLRefused, refusal
from tests.peers import Answer, HttpPeer

PUBLIC_V4 = "93.184.216.34"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.3.2.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.170.2", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "not globally routable"),
        ("240.0.0.1", "private"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("fd00:ec2::254", "cloud metadata"),
        ("ff02::1", "multicast"),
        ("fec0::1", "site-local"),
        ("::ffff:127.0.0.1", "loopback (IPv4 127.0.0.1 inside IPv6)"),
        ("::ffff:169.254.169.254", "cloud metadata (IPv4 169.254.169.254 inside IPv6)"),
        ("::ffff:10.0.0.1", "private (IPv4 10.0.0.1 inside IPv6)"),
        ("64:ff9b::a00:1", "private (IPv4 10.0.0.1 inside IPv6)"),
        ("2002:7f00:1::", "loopback (IPv4 127.0.0.1 inside IPv6)"),
        ("::127.0.0.1", "loopback (IPv4 127.0.0.1 inside IPv6)"),
    ],
)
def test_each_address_class_is_refused(address: str, reason: str) -> None:
    """It refuses private, loopback, link-local, multicast, metadata and wrapped IPv4, giving the reason."""
    assert refusal(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", [PUBLIC_V4, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    """It lets public IPv4 and IPv6 addresses (also IPv4-mapped ones) through."""
    assert refusal(ipaddress.ip_address(address)) is None


def resolver(table: dict[str, list[list[str]]]) -> Callable[[str, int], list[str]]:
    """A resolver answering each name from ``table``: one list of addresses per lookup, the last repeating."""
    calls: dict[str, int] = {}

    def resolve(host: str, port: int) -> list[str]:
        answers = table[host]
        n = calls.get(host, 0)
        calls[host] = n + 1
        return answers[min(n, len(answers) - 1)]

    return resolve


def test_check_url_refuses_literal_and_resolved_private_hosts() -> None:
    """It refuses a private literal, a name resolving to loopback, a mixed answer; it passes a public name."""
    policy = OutboundPolicy.from_allowlist(
        [],
        resolver(
            {
                "api.example.com": [[PUBLIC_V4]],
                "sneaky.example.com": [["127.0.0.1"]],
                "mixed.example.com": [[PUBLIC_V4, "10.0.0.7"]],
            }
        ),
    )
    policy.check_url("https://api.example.com/v1/hook")
    policy.check_url(f"http://{PUBLIC_V4}:8080/")
    for url, words in [
        ("http://10.0.0.1/", "10.0.0.1 is a private address"),
        ("http://sneaky.example.com/", "sneaky.example.com (127.0.0.1) is a loopback address"),
        ("http://mixed.example.com/", "(10.0.0.7) is a private address"),
        ("http://[::ffff:127.0.0.1]/", "loopback (IPv4 127.0.0.1 inside IPv6)"),
        ("http://[fe80::1]/", "link-local"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("ftp://api.example.com/", "scheme 'ftp' is not http(s)"),
        ("file:///etc/passwd", "scheme 'file' is not http(s)"),
    ]:
        with pytest.raises(OutboundURLRefused, match="outbound URL refused") as refused:
            policy.check_url(url)
        assert words in str(refused.value), (url, str(refused.value))


def test_localhost_resolves_to_loopback_and_is_refused() -> None:
    """It resolves a real host name (localhost -> 127.0.0.1) and refuses it."""
    with pytest.raises(OutboundURLRefused, match=r"localhost \(127\.0\.0\.1\) is a loopback address"):
        OutboundPolicy().check_url("http://localhost:8080/")


def test_an_unresolvable_name_is_left_to_the_connection() -> None:
    """It does not refuse a name that does not resolve now: the connection decides."""
    OutboundPolicy().check_url("http://no-such-host.invalid/")


def test_allowlist_admits_by_address_network_and_name() -> None:
    """It admits what OUTBOUND_URL_ALLOWLIST names: an address, a CIDR, a host name; nothing else."""
    policy = OutboundPolicy.from_allowlist(
        ["127.0.0.1", "10.0.0.0/8", "Internal.Example", "fd00::/8"],
        resolver({"internal.example": [["192.168.7.7"]], "other.example": [["192.168.7.7"]]}),
    )
    for url in (
        "http://127.0.0.1:5000/",
        "http://[::ffff:127.0.0.1]:5000/",  # the IPv4 inside is admitted
        "http://10.20.30.40/",
        "http://internal.example/",
        "http://[fd12::1]/",
    ):
        policy.check_url(url)
    for url in ("http://127.0.0.2/", "http://other.example/", "http://169.254.169.254/", "http://[::1]/"):
        with pytest.raises(OutboundURLRefused):
            policy.check_url(url)


class RecordingBackend(httpcore.NetworkBackend):
    """An httpcore backend that records the addresses it is asked to connect to.

    It opens real sockets to loopback only: anything else is a test failure, so a bug in the
    policy can never send a packet off this machine.
    """

    def __init__(self) -> None:
        self.inner = httpcore.SyncBackend()
        self.connects: list[tuple[str, int]] = []

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: Any = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        self.connects.append((host, port))
        assert ipaddress.ip_address(host).is_loopback, f"asked to connect to {host}"
        return self.inner.connect_tcp(host, port, timeout, local_address, socket_options)

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        raise AssertionError("no unix sockets")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def client_for(policy: OutboundPolicy, backend: RecordingBackend) -> HttpClient:
    return HttpClient(timeout=5, policy=policy, backend=backend)


def test_connection_goes_to_the_address_checked(http_peer: Callable[..., HttpPeer]) -> None:
    """It connects to the resolved, checked address (not the name again), keeping the Host header."""
    peer = http_peer().script("/ok", Answer(200, {"ok": True}))
    backend = RecordingBackend()
    policy = OutboundPolicy.from_allowlist(["127.0.0.1"], resolver({"service.example": [["127.0.0.1"]]}))
    reply = client_for(policy, backend).get(f"http://service.example:{peer.port}/ok")
    assert reply.json() == {"ok": True}
    assert backend.connects == [("127.0.0.1", peer.port)]
    assert peer.requests()[0].headers["host"] == f"service.example:{peer.port}"


def test_dns_rebinding_cannot_switch_the_address(http_peer: Callable[..., HttpPeer]) -> None:
    """It refuses at connect time a name whose answer turned private after the API's check passed."""
    peer = http_peer().script("/", Answer(200, "secret"))
    backend = RecordingBackend()
    policy = OutboundPolicy.from_allowlist([], resolver({"rebind.example": [[PUBLIC_V4], ["127.0.0.1"]]}))
    url = f"http://rebind.example:{peer.port}/"
    policy.check_url(url)  # what the API saw: a public address
    with pytest.raises(OutboundURLRefused, match=r"rebind.example \(127.0.0.1\) is a loopback address"):
        client_for(policy, backend).get(url)
    assert backend.connects == []
    assert peer.requests() == []


def test_loopback_peer_is_refused_without_allowlist(http_peer: Callable[..., HttpPeer]) -> None:
    """It refuses 127.0.0.1, localhost and [::ffff:127.0.0.1] before connecting when nothing is allowed."""
    peer = http_peer().script("/", Answer(200, "hello"))
    backend = RecordingBackend()
    client = client_for(OutboundPolicy(), backend)
    for url in (peer.url("/"), f"http://localhost:{peer.port}/", f"http://[::ffff:127.0.0.1]:{peer.port}/"):
        with pytest.raises(OutboundURLRefused, match="loopback"):
            client.get(url)
    assert backend.connects == []
    assert peer.requests() == []


def test_every_redirect_is_checked(http_peer: Callable[..., HttpPeer]) -> None:
    """It follows a redirect to an admitted host; it refuses one to a private, loopback or non-HTTP target."""
    inside = http_peer(host="127.0.0.2")
    inside.script("/", Answer(200, "internal"))
    peer = http_peer()
    peer.script("/hop", Answer(302, headers={"Location": "/landing"}))
    peer.script("/landing", Answer(200, {"landed": True}))
    peer.script("/to-private", Answer(302, headers={"Location": "http://10.20.30.40/admin"}))
    peer.script("/to-loopback", Answer(307, headers={"Location": inside.url("/")}))
    peer.script("/to-metadata", Answer(301, headers={"Location": "http://169.254.169.254/latest/meta-data/"}))
    peer.script("/to-file", Answer(302, headers={"Location": "file:///etc/passwd"}))
    backend = RecordingBackend()
    client = client_for(OutboundPolicy.from_allowlist(["127.0.0.1"]), backend)

    assert client.get(peer.url("/hop"), follow_redirects=True).json() == {"landed": True}
    for path, words in [
        ("/to-private", "10.20.30.40 is a private address"),
        ("/to-loopback", "127.0.0.2 is a loopback address"),
        ("/to-metadata", "cloud metadata"),
        ("/to-file", "outbound URL refused"),
    ]:
        with pytest.raises(OutboundURLRefused, match=words):
            client.get(peer.url(path), follow_redirects=True)
    assert inside.requests() == []
    assert {host for host, _ in backend.connects} == {"127.0.0.1"}


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ("::1", "loopback"),
        ("fc00::1", "private"),
        ("fdff:ffff::1", "private"),
        ("fe80::1", "link-local"),
        ("::ffff:127.0.0.1", "loopback (IPv4 127.0.0.1 inside IPv6)"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("169.254.169.254", "cloud metadata"),
        ("172.31.255.255", "private"),
    ],
)
def test_a_name_resolving_to_any_refused_class_is_refused(answer: str, words: str) -> None:
    """A DNS name whose answer is loopback, unique-local (fc00::/7), link-local, IPv4-mapped or
    metadata is refused as its address would be, in the API's check and in the literal form."""
    policy = OutboundPolicy.from_allowlist([], resolver({"inside.example.com": [[answer]]}))
    for url in (
        "http://inside.example.com/hook",
        f"http://[{answer}]/" if ":" in answer else f"http://{answer}/",
    ):
        with pytest.raises(OutboundURLRefused, match="outbound URL refused") as refused:
            policy.check_url(url)
        assert words in str(refused.value), (url, str(refused.value))
