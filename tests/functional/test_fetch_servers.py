"""The URL fetcher against real (misbehaving) HTTP and HTTPS servers on 127.0.0.1.

Servers bind 127.0.0.1 only, on ports the OS picks, and are stopped at the end of the module. An autouse
guard lets connections reach loopback only and answers DNS from a table (never the real resolver), so a
redirect to a private or metadata address is proven to be refused before any packet leaves.
"""

from __future__ import annotations

import gzip
import io
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn
from urllib.parse import parse_qs, urlsplit

import pytest
import urllib3.util.connection
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

from refund_sorter.config import Settings
from refund_sorter.errors import ErrorCode, FetchError
from refund_sorter.sources import fetch
from refund_sorter.sources.fetch import FetchedImage, fetch_image
from refund_sorter_cli.net import refused_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


def _encode(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 40, 40)).save(buffer, format=fmt)
    return buffer.getvalue()


JPEG = _encode("JPEG")
PNG = _encode("PNG")
HTML = b"<!doctype html><html><body>" + b"<p>not a photo</p>" * 50_000 + b"</body></html>"
DRIP_INTERVAL = 0.5
DRIP_BYTES = 16  # 8 s of dripping, then hang up: a fetcher without a budget fails the test instead of hanging

# Small limits so the misbehaving servers are cut off quickly: whole-fetch budget = 1 + 2 × 1 = 3 s.
LOCAL = Settings(
    allow_private_urls=True,
    fetch_connect_timeout=1.0,
    fetch_read_timeout=1.0,
    fetch_max_redirects=2,
    max_image_bytes=200_000,
)


# --- The servers --------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stop: threading.Event
    requests: list[tuple[str, dict[str, str]]]
    dripping: threading.Event  # a drip has sent its first byte
    dripped_all: threading.Event  # a drip got to its end: nobody cut it off

    def handle_error(self, request: Any, client_address: Any) -> None:
        """The fetcher hangs up on purpose (too large, not an image, timeout): not worth a traceback."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    routes: ClassVar[dict[str, Callable[[_Handler], None]]] = {}

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append((self.path, dict(self.headers.items())))
        route = self.routes.get(urlsplit(self.path).path)
        if route is None:
            self._send(404, b"not found", "text/plain")
        else:
            route(self)

    def _send(self, status: int, body: bytes, content_type: str | None, **headers: str) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _start_unsized(self, content_type: str = "image/jpeg") -> None:
        """A 200 with no Content-Length: the body ends when the connection does."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _drip(self, data: bytes) -> None:
        for byte in data:
            if self.server.stop.wait(DRIP_INTERVAL):
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            self.server.dripping.set()
        self.server.dripped_all.set()


def _route(path: str) -> Callable[[Callable[[_Handler], None]], Callable[[_Handler], None]]:
    def register(handler: Callable[[_Handler], None]) -> Callable[[_Handler], None]:
        _Handler.routes[path] = handler
        return handler

    return register


_route("/cat.jpg")(lambda h: h._send(200, JPEG, "image/jpeg"))
_route("/cat.png")(lambda h: h._send(200, PNG, "image/png; charset=binary"))
_route("/untyped.png")(lambda h: h._send(200, PNG, None))
_route("/octet.jpg")(lambda h: h._send(200, JPEG, "application/octet-stream"))
_route("/page.html")(lambda h: h._send(200, JPEG, "text/html; charset=utf-8"))
_route("/svg")(lambda h: h._send(200, b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"))
_route("/empty")(lambda h: h._send(200, b"", "image/jpeg"))
_route("/error")(lambda h: h._send(500, b"oops", "text/plain"))
_route("/redirect-without-location")(lambda h: h._send(302, b"", None))
GZIP_BOMB = gzip.compress(JPEG + bytes(5_000_000))  # 5 MB decoded, about 5 kB on the wire
_route("/gzip-bomb")(lambda h: h._send(200, GZIP_BOMB, "image/jpeg", Content_Encoding="gzip"))


@_route("/to")
def _redirect_to(h: _Handler) -> None:
    """302 to ?u=…, verbatim."""
    h._send(302, b"", None, Location=parse_qs(urlsplit(h.path).query)["u"][0])


@_route("/html-as-jpeg")
def _html_as_jpeg(h: _Handler) -> None:
    """900 kB of HTML labelled image/jpeg, unsized: only the early magic-byte check stops it under the cap."""
    h._start_unsized()
    h.wfile.write(HTML)


@_route("/hops")
def _hops(h: _Handler) -> None:
    """/hops?n=3 → /hops?n=2 → … → /cat.jpg, with relative Locations."""
    n = int(parse_qs(urlsplit(h.path).query)["n"][0])
    h._send(302, b"", None, Location=f"/hops?n={n - 1}" if n > 0 else "/cat.jpg")


@_route("/drip")
def _drip_body(h: _Handler) -> None:
    """A real JPEG's start, then one byte every half second: never trips a 1 s read timeout."""
    h._start_unsized()
    h.wfile.write(JPEG[:64])
    h._drip(JPEG[64 : 64 + DRIP_BYTES])


@_route("/drip-headers")
def _drip_headers(h: _Handler) -> None:
    h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Slow: ")
    h._drip(b"a" * DRIP_BYTES)
    h.close_connection = True


@_route("/endless")
def _endless(h: _Handler) -> None:
    h._start_unsized()
    h.wfile.write(JPEG)
    while not h.server.stop.is_set():
        h.wfile.write(bytes(64 * 1024))  # until the fetcher hangs up (BrokenPipeError ends the handler)


@_route("/huge-content-length")
def _huge(h: _Handler) -> None:
    """Claims a gigabyte and then stalls: reading any of the body would end in a timeout, not a refusal."""
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    h.send_header("Content-Length", str(10**9))
    h.end_headers()
    h.wfile.write(JPEG[:16])
    h.server.stop.wait(10)
    h.close_connection = True


@_route("/truncated")
def _truncated(h: _Handler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    h.send_header("Content-Length", str(len(JPEG)))
    h.end_headers()
    h.wfile.write(JPEG[:100])
    h.close_connection = True  # hang up 100 bytes into a longer body


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.stop = threading.Event()
    server.requests = []
    server.dripping, server.dripped_all = threading.Event(), threading.Event()
    if tls is not None:  # the handshake then happens in the handler's thread, on its first read
        server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    yield from _serve()


@dataclass(frozen=True)
class _Certificate:
    cert_pem: bytes
    server_context: ssl.SSLContext


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> _Certificate:
    """A self-signed certificate for photos.test (no CA anywhere trusts it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "photos.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("photos.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory: Path = tmp_path_factory.mktemp("tls")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return _Certificate(cert_pem, context)


@pytest.fixture(scope="module")
def tls_server(certificate: _Certificate) -> Iterator[_Server]:
    yield from _serve(certificate.server_context)


# --- The network guard ----------------------------------------------------------------------------------


@dataclass
class FakeDNS:
    names: dict[str, list[str]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", maxsplit=1)[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    """DNS from a table; connections to loopback literals only; anything else fails the test."""
    fake = FakeDNS(
        names={
            "photos.test": ["127.0.0.1"],
            "other.test": ["127.0.0.1"],
            "localhost": ["127.0.0.1"],
            "metadata.test": ["169.254.169.254"],
            "intranet.test": ["10.0.0.1"],
        }
    )
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_create_connection = urllib3.util.connection.create_connection

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if _is_loopback(host):  # urllib3 "resolving" the literal we handed it: no DNS involved
            return real_getaddrinfo(host, port, *args, **kwargs)
        fake.lookups.append(host)
        if host not in fake.names:
            pytest.fail(f"unexpected resolver call for {host!r}")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in fake.names[host]]

    def connect(sock: socket.socket, address: Any) -> None:
        if not _is_loopback(address[0]):
            pytest.fail(f"a connection to {address!r} was attempted")
        real_connect(sock, address)

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        # The fetcher must hand urllib3 the address it checked, never a name to resolve again.
        if not _is_loopback(address[0]):
            pytest.fail(f"urllib3 was asked to connect to {address!r}")
        return real_create_connection(address, *args, **kwargs)

    def no_create_connection(*args: Any, **kwargs: Any) -> NoReturn:
        pytest.fail("socket.create_connection is not how the fetcher connects")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", no_create_connection)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    return fake


def _url(server: _Server, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
    return f"{scheme}://{host}:{server.server_address[1]}{path}"


def _refusal(url: str, settings: Settings = LOCAL) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetch_image(url, settings)
    return caught.value


# --- Good images --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        pytest.param("/cat.jpg", JPEG, "image/jpeg", id="jpeg"),
        pytest.param("/cat.png", PNG, "image/png", id="png-with-parameters"),
        pytest.param("/untyped.png", PNG, "image/png", id="no-content-type"),
        pytest.param("/octet.jpg", JPEG, "image/jpeg", id="octet-stream"),
    ],
)
def test_good_image(server: _Server, path: str, body: bytes, content_type: str) -> None:
    image = fetch_image(_url(server, path), LOCAL)
    assert image == FetchedImage(body, content_type, _url(server, path))


def test_request_goes_to_the_checked_address_with_the_hosts_name(server: _Server, dns: FakeDNS) -> None:
    url = _url(server, "/cat.jpg", host="Photos.Test")
    assert fetch_image(url, LOCAL).data == JPEG
    assert dns.lookups == ["photos.test"]  # once, by the fetcher; urllib3 only ever saw 127.0.0.1
    path, headers = server.requests[-1]
    assert path == "/cat.jpg"
    assert headers["Host"] == f"photos.test:{server.server_address[1]}"
    assert headers["User-Agent"].startswith("refund-sorter/")
    assert headers["Accept-Encoding"] == "identity"


def test_redirects_within_the_limit_are_followed(server: _Server) -> None:
    image = fetch_image(_url(server, "/hops?n=1"), LOCAL)  # /hops?n=1 → /hops?n=0 → /cat.jpg: 2 hops
    assert image.data == JPEG
    assert image.url == _url(server, "/cat.jpg")


# --- Refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "code"),
    [
        pytest.param("/html-as-jpeg", ErrorCode.BAD_CONTENT_TYPE, id="html-labelled-jpeg"),
        pytest.param("/page.html", ErrorCode.BAD_CONTENT_TYPE, id="text-html"),
        pytest.param("/svg", ErrorCode.BAD_CONTENT_TYPE, id="svg"),
        pytest.param("/empty", ErrorCode.BAD_CONTENT_TYPE, id="empty-body"),
        pytest.param("/gzip-bomb", ErrorCode.BAD_CONTENT_TYPE, id="gzip-bomb"),
        pytest.param("/missing", ErrorCode.UPSTREAM_STATUS, id="404"),
        pytest.param("/error", ErrorCode.UPSTREAM_STATUS, id="500"),
        pytest.param("/redirect-without-location", ErrorCode.UPSTREAM_STATUS, id="302-without-location"),
        pytest.param("/hops?n=2", ErrorCode.TOO_MANY_REDIRECTS, id="three-hops-limit-two"),
        pytest.param("/hops?n=50", ErrorCode.TOO_MANY_REDIRECTS, id="long-chain"),
        pytest.param("/endless", ErrorCode.FILE_TOO_LARGE, id="endless-body"),
        pytest.param("/huge-content-length", ErrorCode.FILE_TOO_LARGE, id="content-length-over-cap"),
        pytest.param("/truncated", ErrorCode.FETCH_FAILED, id="closed-mid-body"),
    ],
)
def test_refused(server: _Server, path: str, code: ErrorCode) -> None:
    # None of these waits for a timeout: a fetch that did would end in fetch_timeout, not in this code.
    assert _refusal(_url(server, path)).code is code


def test_status_is_in_the_message(server: _Server) -> None:
    assert "404" in _refusal(_url(server, "/missing")).message


def test_redirect_limit_counts_hops(server: _Server) -> None:
    no_redirects = Settings(**{**LOCAL.model_dump(), "fetch_max_redirects": 0})
    assert _refusal(_url(server, "/hops?n=0"), no_redirects).code is ErrorCode.TOO_MANY_REDIRECTS


def test_gzip_body_is_refused_not_decoded(server: _Server) -> None:
    """5 MB of zeros in 5 kB of gzip: the cap must count decoded bytes, so encoded bodies are refused."""
    assert "gzip" in _refusal(_url(server, "/gzip-bomb")).message


class ManualTimer:
    """Stands in for the watchdog's ``threading.Timer``: the budget runs out when the test says so."""

    made: ClassVar[list[ManualTimer]] = []

    def __init__(self, interval: float, function: Callable[[], None]) -> None:
        self.interval, self.function = interval, function
        self.started = self.cancelled = False
        ManualTimer.made.append(self)

    def start(self) -> None:
        self.started = True

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        self.function()


@pytest.mark.parametrize("path", ["/drip", "/drip-headers"])
def test_slow_drip_is_cut_off_by_the_wall_clock_budget(server: _Server, path: str) -> None:
    # GIVEN a server that drips a byte every half second (body or headers): no read timeout (5 s) ever trips
    settings = Settings(**{**LOCAL.model_dump(), "fetch_connect_timeout": 0.5, "fetch_read_timeout": 5.0})
    server.dripping.clear()
    server.dripped_all.clear()
    ManualTimer.made.clear()

    def run_out_of_budget_mid_drip() -> None:
        assert server.dripping.wait(30), "the server never started dripping"
        ManualTimer.made[0].fire()

    budget = threading.Thread(target=run_out_of_budget_mid_drip, daemon=True)
    budget.start()
    # WHEN the fetch's budget runs out while the server is still dripping
    with pytest.raises(FetchError) as caught:
        fetch_image(_url(server, path), settings, timer=ManualTimer)
    budget.join(5)
    # THEN the fetch ends as timed out, before the server got to the end of its drip, and the budget was
    # connect + 2 × read
    assert caught.value.code is ErrorCode.FETCH_TIMEOUT
    assert not server.dripped_all.is_set()
    (timer,) = ManualTimer.made
    assert timer.started and timer.cancelled
    assert timer.interval == 0.5 + 2 * 5.0


def test_a_fetch_that_finishes_cancels_its_budget(server: _Server) -> None:
    ManualTimer.made.clear()
    assert fetch_image(_url(server, "/cat.jpg"), LOCAL, timer=ManualTimer).data == JPEG
    (timer,) = ManualTimer.made
    assert timer.cancelled


def test_connection_refused(dns: FakeDNS) -> None:
    with refused_port() as port:
        assert _refusal(f"http://127.0.0.1:{port}/cat.jpg").code is ErrorCode.FETCH_FAILED


# --- Every redirect hop is checked again ------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("http://169.254.169.254/latest/meta-data/", id="metadata"),
        pytest.param("http://[::ffff:169.254.169.254]/", id="metadata-mapped"),
        pytest.param("http://0xA9FEA9FE/", id="metadata-hex"),
        pytest.param("http://metadata.test/", id="name-resolving-to-metadata"),
        pytest.param("http://[fe80::1]:8080/", id="link-local"),
    ],
)
def test_redirect_to_metadata_is_refused_even_with_private_urls_allowed(server: _Server, target: str) -> None:
    assert _refusal(_url(server, f"/to?u={target}")).code is ErrorCode.BLOCKED_ADDRESS


@pytest.fixture
def lenient_first_hop(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Let hops to photos.test through as if private URLs were allowed; check every other hop for real.

    The server is on loopback and an ephemeral port, so a first hop can only reach it with
    allow_private_urls; this keeps the setting off for everything else, so what a redirect leads to is
    judged exactly as a client's URL would be.
    """
    checked: list[str] = []
    real_check = fetch._check_url

    def check(url: str, settings: Settings) -> Any:
        checked.append(url)
        if urlsplit(url).hostname == "photos.test":
            settings = Settings(**{**settings.model_dump(), "allow_private_urls": True})
        return real_check(url, settings)

    monkeypatch.setattr(fetch, "_check_url", check)
    return checked


STRICT = Settings(**{**LOCAL.model_dump(), "allow_private_urls": False})


@pytest.mark.parametrize(
    ("target", "code"),
    [
        pytest.param("http://127.0.0.1/cat.jpg", ErrorCode.BLOCKED_ADDRESS, id="loopback"),
        pytest.param("http://127.0.0.1:{port}/cat.jpg", ErrorCode.BLOCKED_ADDRESS, id="loopback-live-port"),
        pytest.param("http://2130706433/cat.jpg", ErrorCode.BLOCKED_ADDRESS, id="loopback-decimal"),
        pytest.param("http://[::1]/cat.jpg", ErrorCode.BLOCKED_ADDRESS, id="loopback-v6"),
        pytest.param("http://localhost/cat.jpg", ErrorCode.BLOCKED_ADDRESS, id="localhost"),
        pytest.param("http://intranet.test/", ErrorCode.BLOCKED_ADDRESS, id="name-resolving-private"),
        pytest.param("http://10.0.0.1/", ErrorCode.BLOCKED_ADDRESS, id="private"),
        pytest.param("http://169.254.169.254/latest/meta-data/", ErrorCode.BLOCKED_ADDRESS, id="metadata"),
        pytest.param("file:///etc/passwd", ErrorCode.INVALID_URL, id="file"),
        pytest.param("gopher://127.0.0.1:6379/_INFO", ErrorCode.INVALID_URL, id="gopher"),
        pytest.param("http://user:pw@photos.test:{port}/cat.jpg", ErrorCode.INVALID_URL, id="userinfo"),
    ],
)
def test_redirect_hop_is_checked_again(
    server: _Server, lenient_first_hop: list[str], target: str, code: ErrorCode
) -> None:
    target = target.format(port=server.server_address[1])
    assert _refusal(_url(server, f"/to?u={target}", host="photos.test"), STRICT).code is code
    assert lenient_first_hop == [_url(server, f"/to?u={target}", host="photos.test"), target]


def test_redirect_recheck_control(server: _Server, lenient_first_hop: list[str]) -> None:
    """The same set-up with an allowed second hop succeeds, so the refusals above are the re-check's."""
    target = _url(server, "/cat.jpg", host="photos.test")
    assert fetch_image(_url(server, f"/to?u={target}", host="photos.test"), STRICT).data == JPEG
    assert len(lenient_first_hop) == 2


# --- TLS ------------------------------------------------------------------------------------------------


def test_untrusted_certificate_is_refused(tls_server: _Server) -> None:
    error = _refusal(_url(tls_server, "/cat.jpg", host="photos.test", scheme="https"))
    assert error.code is ErrorCode.FETCH_FAILED
    assert "certificate" in error.message


@pytest.fixture
def trust(certificate: _Certificate, monkeypatch: pytest.MonkeyPatch) -> None:
    context = ssl.create_default_context(cadata=certificate.cert_pem.decode())
    monkeypatch.setattr(fetch, "_tls_context", lambda: context)


@pytest.mark.usefixtures("trust")
def test_tls_verifies_the_urls_host_name_while_connecting_to_the_checked_address(tls_server: _Server) -> None:
    assert fetch_image(_url(tls_server, "/cat.jpg", host="photos.test", scheme="https"), LOCAL).data == JPEG
    # other.test resolves to the same address, but the certificate is not for it
    error = _refusal(_url(tls_server, "/cat.jpg", host="other.test", scheme="https"))
    assert error.code is ErrorCode.FETCH_FAILED
