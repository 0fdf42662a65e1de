"""The URL fetcher's refusals, proven to happen before any socket opens.

No test here sends a packet anywhere (design.md §6): an autouse guard replaces DNS with a table and makes
every way of opening a connection fail the test. The few tests that must show a URL is *accepted* swap
urllib3's connection factory for a recorder that stops the fetch at the moment it would connect.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pytest
import urllib3.util.connection

from refund_sorter.config import Settings
from refund_sorter.errors import ErrorCode, FetchError
from refund_sorter.sources import fetch
from refund_sorter.sources.fetch import fetch_image

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


@dataclass
class FakeNet:
    """DNS answers by table; every resolver call is recorded; anything else fails the test."""

    names: dict[str, list[str]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    def getaddrinfo(self, host: str, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        self.lookups.append(host)
        if host not in self.names:
            pytest.fail(f"unexpected resolver call for {host!r}: literals must be refused before DNS")
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))
            if ":" in address
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
            for address in self.names[host]
        ]


def _no_connection(*args: Any, **kwargs: Any) -> NoReturn:
    pytest.fail(f"a connection was attempted: {args!r}")


@pytest.fixture(autouse=True)
def net(monkeypatch: pytest.MonkeyPatch) -> FakeNet:
    fake = FakeNet()
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", _no_connection)
    monkeypatch.setattr(socket.socket, "connect", _no_connection)
    monkeypatch.setattr(socket.socket, "connect_ex", _no_connection)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", _no_connection)
    return fake


class Reached(BaseException):
    """Raised where the fetcher would open its connection (BaseException: nothing in the fetcher catches it)."""


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record the (address, port) urllib3 is asked to connect to, and stop there."""
    seen: list[tuple[str, int]] = []

    def record(address: tuple[str, int], *args: Any, **kwargs: Any) -> NoReturn:
        seen.append(address)
        raise Reached

    monkeypatch.setattr(urllib3.util.connection, "create_connection", record)
    return seen


def _refused(url: str, settings: Settings | None = None) -> ErrorCode:
    with pytest.raises(FetchError) as caught:
        fetch_image(url, settings or Settings(allow_private_urls=False))
    assert caught.value.message
    return caught.value.code


BLOCKED = ErrorCode.BLOCKED_ADDRESS
INVALID = ErrorCode.INVALID_URL

# IP literals: refused from the literal itself, with no resolver call (the fake DNS table is empty).
LITERALS = [
    pytest.param("http://10.0.0.1/a.jpg", BLOCKED, id="private-10/8"),
    pytest.param("http://172.16.5.4/a.jpg", BLOCKED, id="private-172.16/12"),
    pytest.param("http://172.31.255.254/a.jpg", BLOCKED, id="private-172.31"),
    pytest.param("http://192.168.1.1/a.jpg", BLOCKED, id="private-192.168/16"),
    pytest.param("http://169.254.169.254/latest/meta-data/", BLOCKED, id="metadata"),
    pytest.param("http://169.254.170.2/v2/credentials", BLOCKED, id="ecs-credentials"),
    pytest.param("http://100.64.0.1/a.jpg", BLOCKED, id="cgnat"),
    pytest.param("http://100.100.100.200/latest/meta-data/", BLOCKED, id="alibaba-metadata-cgnat"),
    pytest.param("http://127.0.0.1/a.jpg", BLOCKED, id="loopback"),
    pytest.param("http://127.9.9.9/a.jpg", BLOCKED, id="loopback-127/8"),
    pytest.param("http://0.0.0.0/a.jpg", BLOCKED, id="unspecified"),
    pytest.param("http://224.0.0.1/a.jpg", BLOCKED, id="multicast"),
    pytest.param("http://255.255.255.255/a.jpg", BLOCKED, id="broadcast"),
    pytest.param("http://240.0.0.1/a.jpg", BLOCKED, id="reserved-240/4"),
    pytest.param("http://192.0.2.1/a.jpg", BLOCKED, id="documentation-net"),
    pytest.param("http://198.18.0.1/a.jpg", BLOCKED, id="benchmark-net"),
    # The spellings inet_aton and browsers accept
    pytest.param("http://2130706433/a.jpg", BLOCKED, id="decimal"),
    pytest.param("http://2852039166/", BLOCKED, id="decimal-metadata"),
    pytest.param("http://0177.0.0.1/a.jpg", BLOCKED, id="octal"),
    pytest.param("http://0251.0376.0251.0376/", BLOCKED, id="octal-metadata"),
    pytest.param("http://017700000001/a.jpg", BLOCKED, id="octal-single-number"),
    pytest.param("http://0x7f.0x0.0x0.0x1/a.jpg", BLOCKED, id="hex-dotted"),
    pytest.param("http://0x7f000001/a.jpg", BLOCKED, id="hex-single-number"),
    pytest.param("http://0XA9FEA9FE/", BLOCKED, id="hex-uppercase-metadata"),
    pytest.param("http://127.1/a.jpg", BLOCKED, id="short-127.1"),
    pytest.param("http://10.1/a.jpg", BLOCKED, id="short-10.1"),
    pytest.param("http://169.254.43518/", BLOCKED, id="short-metadata-16bit-tail"),
    pytest.param("http://0/a.jpg", BLOCKED, id="zero"),
    pytest.param("http://0x7f.1/a.jpg", BLOCKED, id="mixed-hex-short"),
    pytest.param("http://0x7f.0.0.01/a.jpg", BLOCKED, id="mixed-hex-octal"),
    pytest.param("http://127.0.0.1./a.jpg", BLOCKED, id="trailing-dot"),
    pytest.param("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", BLOCKED, id="fullwidth-digits"),
    pytest.param("http://127\u30020\u30020\u30021/", BLOCKED, id="ideographic-dots"),
    pytest.param("http://10.0.0.1:80/a.jpg", BLOCKED, id="private-explicit-port"),
    pytest.param("https://192.168.0.1/a.jpg", BLOCKED, id="private-https"),
    # IPv6
    pytest.param("http://[::1]/a.jpg", BLOCKED, id="v6-loopback"),
    pytest.param("http://[::]/a.jpg", BLOCKED, id="v6-unspecified"),
    pytest.param("http://[fc00::1]/a.jpg", BLOCKED, id="v6-ula-fc00"),
    pytest.param("http://[fd12:3456::1]/a.jpg", BLOCKED, id="v6-ula-fd"),
    pytest.param("http://[fd00:ec2::254]/latest/meta-data/", BLOCKED, id="v6-ec2-metadata"),
    pytest.param("http://[fe80::1]/a.jpg", BLOCKED, id="v6-link-local"),
    pytest.param("http://[fec0::1]/a.jpg", BLOCKED, id="v6-site-local"),
    pytest.param("http://[ff02::1]/a.jpg", BLOCKED, id="v6-multicast"),
    pytest.param("http://[::ffff:10.0.0.1]/a.jpg", BLOCKED, id="v4-mapped-private"),
    pytest.param("http://[::ffff:169.254.169.254]/", BLOCKED, id="v4-mapped-metadata"),
    pytest.param("http://[::ffff:127.0.0.1]/a.jpg", BLOCKED, id="v4-mapped-loopback-dotted"),
    pytest.param("http://[::ffff:7f00:1]/a.jpg", BLOCKED, id="v4-mapped-loopback-hex"),
    pytest.param("http://[0:0:0:0:0:ffff:a9fe:a9fe]/", BLOCKED, id="v4-mapped-metadata-long"),
    pytest.param("http://[::10.0.0.1]/a.jpg", BLOCKED, id="v4-compatible"),
    pytest.param("http://[64:ff9b::a00:1]/a.jpg", BLOCKED, id="nat64-private"),
    pytest.param("http://[64:ff9b::169.254.169.254]/", BLOCKED, id="nat64-metadata-dotted"),
    pytest.param("http://[64:ff9b:1::a00:1]/a.jpg", BLOCKED, id="nat64-local-use"),
    pytest.param("http://[2002:0a00:0001::]/a.jpg", BLOCKED, id="6to4-private"),
    pytest.param("http://[2002:a9fe:a9fe::1]/", BLOCKED, id="6to4-metadata"),
    pytest.param("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", BLOCKED, id="teredo"),
    pytest.param("http://[2001:db8::1]/a.jpg", BLOCKED, id="v6-documentation"),
    pytest.param("http://[FE80::1]/a.jpg", BLOCKED, id="v6-uppercase"),
    pytest.param("http://[fe80::1%eth0]/a.jpg", INVALID, id="v6-zone-id"),
    pytest.param("http://[fe80::1%25eth0]/a.jpg", INVALID, id="v6-zone-id-encoded"),
    # Bad ports are refused before the host is even looked at
    pytest.param("http://example.com:22/", BLOCKED, id="port-22"),
    pytest.param("http://example.com:6379/", BLOCKED, id="port-6379-redis"),
    pytest.param("https://example.com:8443/", BLOCKED, id="port-8443"),
    pytest.param(f"http://{PUBLIC_V4}:25/", BLOCKED, id="public-ip-port-25"),
    # Not a URL we fetch at all
    pytest.param("file:///etc/passwd", INVALID, id="file"),
    pytest.param("gopher://127.0.0.1:6379/_INFO", INVALID, id="gopher"),
    pytest.param("ftp://example.com/a.jpg", INVALID, id="ftp"),
    pytest.param("dict://127.0.0.1:11211/stats", INVALID, id="dict"),
    pytest.param("javascript:alert(1)", INVALID, id="javascript"),
    pytest.param("data:image/png;base64,iVBORw0KGgo=", INVALID, id="data"),
    pytest.param("//example.com/a.jpg", INVALID, id="scheme-relative"),
    pytest.param("http://user:pass@example.com/a.jpg", INVALID, id="userinfo"),
    pytest.param("http://user@10.0.0.1/a.jpg", INVALID, id="userinfo-private"),
    pytest.param("http://example.com@169.254.169.254/", INVALID, id="userinfo-confusion"),
    pytest.param("http://example.com\\@10.0.0.1/", INVALID, id="backslash-confusion"),
    pytest.param("http://exa mple.com/a.jpg", INVALID, id="space-in-host"),
    pytest.param("http://example.com: 80/a.jpg", INVALID, id="space-in-port"),
    pytest.param(" http://10.0.0.1/", BLOCKED, id="leading-space"),
    pytest.param("http://example.com/a\n.jpg", INVALID, id="newline"),
    pytest.param("http://ex\tample.com/a.jpg", INVALID, id="tab"),
    pytest.param("http:///a.jpg", INVALID, id="empty-host"),
    pytest.param("http://:80/a.jpg", INVALID, id="empty-host-with-port"),
    pytest.param("http://", INVALID, id="scheme-only"),
    pytest.param("", INVALID, id="empty"),
    pytest.param("not a url", INVALID, id="garbage"),
    pytest.param("example.com/a.jpg", INVALID, id="no-scheme"),
    pytest.param("http://[::1/a.jpg", INVALID, id="unclosed-bracket"),
    pytest.param("http://[127.0.0.1]/a.jpg", INVALID, id="v4-in-brackets"),
    pytest.param("http://example.com:99999/", INVALID, id="port-out-of-range"),
    pytest.param("http://example.com:0/", INVALID, id="port-0"),
    pytest.param("http://example.com:8o/", INVALID, id="port-not-a-number"),
    pytest.param("http://1.2.3.4.5/a.jpg", INVALID, id="five-part-ipv4"),
    pytest.param("http://08.0.0.1/a.jpg", INVALID, id="bad-octal"),
    pytest.param("http://256.0.0.1/a.jpg", INVALID, id="octet-over-255"),
    pytest.param("http://1.2.65536/a.jpg", INVALID, id="short-form-overflow"),
    pytest.param("http://4294967296/a.jpg", INVALID, id="decimal-overflow"),
    pytest.param("http://foo.1/a.jpg", INVALID, id="numeric-last-label"),
    pytest.param("http://1_0.0.0.1/a.jpg", INVALID, id="underscore-number"),
    pytest.param("http://127%2e0%2e0%2e1/a.jpg", INVALID, id="percent-encoded-host"),
    pytest.param("http://a..b/a.jpg", INVALID, id="idna-empty-label"),
    pytest.param(f"http://{'a' * 64}.com/a.jpg", INVALID, id="idna-label-too-long"),
    pytest.param("http://\ufffd.com/a.jpg", INVALID, id="idna-prohibited-char"),
    pytest.param("http://bad!host.com/a.jpg", INVALID, id="bad-host-char"),
    pytest.param("http://example.com/" + "a" * 3000, INVALID, id="too-long"),
]


@pytest.mark.parametrize(("url", "code"), LITERALS)
def test_refused_without_dns_or_socket(url: str, code: ErrorCode, net: FakeNet) -> None:
    assert _refused(url) is code
    assert net.lookups == []


# Names: the fake resolver answers; every address returned must be public.
NAMES = [
    pytest.param("internal.example", ["10.1.2.3"], id="resolves-private"),
    pytest.param("meta.example", ["169.254.169.254"], id="resolves-metadata"),
    pytest.param("localhost", ["127.0.0.1", "::1"], id="localhost"),
    pytest.param("mixed.example", [PUBLIC_V4, "10.0.0.1"], id="public-and-private"),
    pytest.param("mixed6.example", [PUBLIC_V6, "fd00::1"], id="public-and-ula"),
    pytest.param("scoped.example", ["fe80::1%eth0"], id="resolves-scoped-link-local"),
    pytest.param("mapped.example", ["::ffff:192.168.0.1"], id="resolves-v4-mapped-private"),
    pytest.param("nat64.example", ["64:ff9b::a9fe:a9fe"], id="resolves-nat64-metadata"),
    pytest.param("cgnat.example", ["100.64.1.1"], id="resolves-cgnat"),
]


@pytest.mark.parametrize(("name", "addresses"), NAMES)
def test_name_resolving_to_a_non_public_address_is_refused(name: str, addresses: list[str], net: FakeNet) -> None:
    net.names[name] = addresses
    assert _refused(f"http://{name}/a.jpg") is BLOCKED
    assert net.lookups == [name]


@pytest.mark.parametrize(
    ("url", "lookup"),
    [
        pytest.param("http://LocalHost./a.jpg", "localhost", id="uppercase-trailing-dot"),
        pytest.param("http://127.0.0.1.nip.io/a.jpg", "127.0.0.1.nip.io", id="ip-looking-name"),
        pytest.param("http://b\u00fccher.example/a.jpg", "xn--bcher-kva.example", id="idna"),
        pytest.param("http://B\u00dcCHER.example/a.jpg", "xn--bcher-kva.example", id="idna-uppercase"),
    ],
)
def test_names_are_normalised_before_the_lookup(url: str, lookup: str, net: FakeNet) -> None:
    net.names[lookup] = ["127.0.0.1"]
    assert _refused(url) is BLOCKED
    assert net.lookups == [lookup]


def test_unresolvable_name_fails(net: FakeNet, monkeypatch: pytest.MonkeyPatch) -> None:
    def gaierror(*args: Any, **kwargs: Any) -> NoReturn:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", gaierror)
    assert _refused("http://nowhere.example/a.jpg") is ErrorCode.FETCH_FAILED


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://169.254.169.254/latest/meta-data/", id="metadata"),
        pytest.param("http://[::ffff:169.254.169.254]/", id="metadata-mapped"),
        pytest.param("http://[fd00:ec2::254]/", id="v6-metadata"),
        pytest.param("http://[fe80::1]:8080/", id="v6-link-local"),
        pytest.param("http://100.100.100.200/", id="cgnat"),
        pytest.param("http://0.0.0.0:8080/", id="unspecified"),
        pytest.param("http://224.0.0.1:8080/", id="multicast"),
        pytest.param("http://[2002:a9fe:a9fe::]/", id="6to4-metadata"),
    ],
)
def test_allow_private_still_refuses_metadata_and_link_local(url: str) -> None:
    assert _refused(url, Settings(allow_private_urls=True)) is BLOCKED


def test_private_refusal_does_not_echo_resolved_addresses(net: FakeNet) -> None:
    net.names["intranet.example"] = ["10.20.30.40"]
    with pytest.raises(FetchError) as caught:
        fetch_image("http://intranet.example/", Settings())
    assert "10.20.30.40" not in caught.value.message
    assert "intranet.example" in caught.value.message


# --- Accepted URLs reach the connection, to the checked address (recorded, never opened) -------------------


@pytest.mark.parametrize(
    ("url", "names", "expected"),
    [
        pytest.param(f"http://{PUBLIC_V4}/a.jpg", {}, (PUBLIC_V4, 80), id="public-v4"),
        pytest.param(f"https://[{PUBLIC_V6}]/a.jpg", {}, (PUBLIC_V6, 443), id="public-v6"),
        pytest.param(f"http://[::ffff:{PUBLIC_V4}]/", {}, (PUBLIC_V4, 80), id="mapped-public"),
        pytest.param("http://[2002:5db8:d822::1]/", {}, ("2002:5db8:d822::1", 80), id="6to4-public"),
        pytest.param("http://[64:ff9b::5db8:d822]/", {}, ("64:ff9b::5db8:d822", 80), id="nat64-public"),
        pytest.param("http://1572395042/", {}, (PUBLIC_V4, 80), id="decimal-public"),
        pytest.param(
            "http://Photos.Example./a.jpg", {"photos.example": [PUBLIC_V4]}, (PUBLIC_V4, 80), id="name-normalised"
        ),
        pytest.param(
            "https://b\u00fccher.example:443/a.jpg",
            {"xn--bcher-kva.example": [PUBLIC_V6, PUBLIC_V4]},
            (PUBLIC_V6, 443),
            id="idna-dual-stack",
        ),
    ],
)
def test_accepted_url_connects_to_the_checked_address(
    url: str, names: dict[str, list[str]], expected: tuple[str, int], net: FakeNet, connects: list[tuple[str, int]]
) -> None:
    net.names.update(names)
    with pytest.raises(Reached):
        fetch_image(url, Settings())
    assert connects == [expected]
    assert net.lookups == list(names)  # once for a name, never for a literal


def test_dns_is_asked_once_so_it_cannot_be_rebound(
    net: FakeNet, connects: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebinding resolver answers public first and private after: the connection uses the first answer."""
    answers = iter([[PUBLIC_V4], ["10.0.0.1"], ["10.0.0.1"]])
    original = net.getaddrinfo

    def rebinding(host: str, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        net.names[host] = next(answers)
        return original(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with pytest.raises(Reached):
        fetch_image("http://rebind.example/a.jpg", Settings())
    assert connects == [(PUBLIC_V4, 80)]
    assert net.lookups == ["rebind.example"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("http://10.0.0.5:8080/a.jpg", ("10.0.0.5", 8080), id="private-any-port"),
        pytest.param("http://[fd12::1]:9000/a.jpg", ("fd12::1", 9000), id="ula"),
        pytest.param("http://0x7f.1:5000/a.jpg", ("127.0.0.1", 5000), id="loopback-hex-short"),
    ],
)
def test_allow_private_urls_lets_the_local_stack_through(
    url: str, expected: tuple[str, int], connects: list[tuple[str, int]]
) -> None:
    with pytest.raises(Reached):
        fetch_image(url, Settings(allow_private_urls=True))
    assert connects == [expected]


def test_request_target_is_percent_encoded() -> None:
    target = fetch._check_url(f"http://{PUBLIC_V4}/caf\u00e9 menu%21.jpg?size=l&q=\u00fc#fragment", Settings())
    assert target.path == "/caf%C3%A9%20menu%21.jpg?size=l&q=%C3%BC"
    assert target.addresses == (PUBLIC_V4,)


def test_literal_parser_matches_inet_aton() -> None:
    """Our parser and the C library agree on every spelling, so the check sees what a connect would reach."""
    for spelling in ["2130706433", "0177.0.0.1", "0x7f.0x0.0x0.0x1", "127.1", "0", "0x7f.1", "10.0x10.0377"]:
        parsed = fetch._parse_ipv4(spelling)
        assert parsed is not None
        assert parsed.packed == socket.inet_aton(spelling), spelling
