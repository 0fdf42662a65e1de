"""Fetch a photo from a URL a stranger gave us without letting the URL reach into our network (SSRF).

The API and the CLI fetch whatever URL a client names, so every URL is treated as hostile:

* **URL** - ``http``/``https`` only, no ``user:pass@``, no control characters or backslashes (parsers
  disagree about those), ports 80 and 443 only.
* **Address** - IP literals are parsed here in every spelling browsers and ``inet_aton`` accept (decimal
  ``2130706433``, octal ``0177.0.0.1``, hex ``0x7f.1``, short ``127.1``, IPv6, IPv4-mapped …) and refused
  before any resolver call. A name is resolved once and *every* address it returns must be public; the
  connection then goes to the checked address, never back through DNS, so the name cannot be rebound to
  an internal address between check and use. IPv6 forms that carry an IPv4 address (mapped, 6to4, NAT64)
  are judged by that IPv4 address.
* **Redirects** - never followed by urllib3; each hop is checked again from scratch (scheme, host, port,
  address), up to ``fetch_max_redirects`` hops.
* **Time** - connect and read timeouts per socket operation, plus a wall-clock budget for the whole fetch
  (``connect + 2 × read`` seconds, redirects included): a server that drips one byte a second never trips
  a read timeout, so a watchdog shuts the socket down when the budget is spent.
* **Body** - ``Accept-Encoding: identity`` and encoded bodies refused (the byte cap must count what we
  keep, and a gzip bomb is tiny on the wire); ``Content-Length`` over the cap refused before reading;
  reading stops at ``max_image_bytes + 1``; the declared type must be ``image/*``,
  ``application/octet-stream`` or absent, and the first bytes must be an accepted image format.

``allow_private_urls`` (the local stack only; off in the template) additionally allows loopback, RFC 1918
and IPv6 unique-local addresses and any port. Link-local (the ``169.254.169.254`` metadata service),
AWS's IPv6 metadata address, CGNAT (Alibaba's metadata lives there), multicast and reserved ranges stay
refused even then: the local stack never needs them and they are what an SSRF is after.

Nothing is logged here: URLs can carry signed tokens. Every refusal is a :class:`FetchError`.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.client import HTTPException
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias
from urllib.parse import quote, urljoin, urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError

from refund_sorter import __version__
from refund_sorter.config import Settings, get_settings
from refund_sorter.errors import ErrorCode, FetchError
from refund_sorter.vision.images import ACCEPTED_NAMES, sniff_format

if TYPE_CHECKING:
    from collections.abc import Callable

    from urllib3.response import BaseHTTPResponse

_IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

__all__ = ["FetchedImage", "fetch_image"]

_ALLOWED_PORTS: Final = frozenset({80, 443})
_MAX_URL_LENGTH: Final = 2048
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_SNIFF_BYTES: Final = 64  # every magic number sniff_format knows, and the brands of a HEIF/AVIF ftyp box
_CHUNK: Final = 64 * 1024
_MEDIA_TYPES: Final = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "HEIF": "image/heif",
    "AVIF": "image/avif",
}

_net = ipaddress.ip_network
# What allow_private_urls opens up: where a developer's local stack and containers live.
_LOCAL_STACK_NETWORKS: Final = tuple(
    map(_net, ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7"))
)
# Refused even under allow_private_urls. 169.254/16 holds the EC2/ECS/EKS metadata and credential services.
_ALWAYS_BLOCKED: Final = tuple(
    map(
        _net,
        (
            "169.254.0.0/16",
            "fe80::/10",
            "fd00:ec2::254/128",  # EC2 metadata over IPv6 (inside fc00::/7, so named here)
            "2001::/32",  # Teredo: tunnels to an address we cannot check
            "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): translates into somebody's private network
        ),
    )
)
_NAT64: Final = _net("64:ff9b::/96")
_GLOBAL_UNICAST_V6: Final = _net("2000::/3")  # everything outside it is reserved, local or multicast

# Parsers disagree about these (urlsplit drops tabs and newlines, browsers read "\" as "/"), so refuse them.
# A space is refused where it matters by the host and port checks; in a path it is just percent-encoded.
_UNSAFE_URL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f\\]")
_HOSTNAME: Final = re.compile(r"[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*")
_IPV4_PART: Final = re.compile(r"0x[0-9a-f]*|[0-9]+")
_PRINTABLE_ASCII: Final = bytes(range(0x21, 0x7F)).decode()  # kept as is in a request target; the rest is %-encoded


_USER_AGENT: Final = f"refund-sorter/{__version__}"


@dataclass(frozen=True)
class FetchedImage:
    """A fetched photo: its bytes, its media type as sniffed from those bytes, and the URL it came from."""

    data: bytes
    content_type: str
    url: str  # the final URL after any redirects


class Timer(Protocol):
    """What the watchdog needs of :class:`threading.Timer`: a tests' stand-in fires when the test says so."""

    def start(self) -> None: ...

    def cancel(self) -> None: ...


TimerFactory: TypeAlias = "Callable[[float, Callable[[], None]], Timer]"


@dataclass(frozen=True)
class _Target:
    """One checked hop: where to connect and what to ask for."""

    scheme: str
    host: str  # ASCII (IDNA) name or IP literal without brackets: for SNI, certificate check and Host
    port: int
    addresses: tuple[str, ...]  # every one checked; we connect to these, never to the name
    path: str  # request target: path and query, non-ASCII percent-encoded


def fetch_image(url: str, settings: Settings | None = None, *, timer: TimerFactory = threading.Timer) -> FetchedImage:
    """Fetch one image from a URL supplied by a client, refusing anything that could reach our network.

    Parameters
    ----------
    url
        An ``http`` or ``https`` URL. Each redirect hop is checked as strictly as the URL itself.
    settings
        Limits and timeouts (``fetch_connect_timeout``, ``fetch_read_timeout``, ``fetch_max_redirects``,
        ``max_image_bytes``, ``allow_private_urls``); :func:`~refund_sorter.config.get_settings` if omitted.
    timer
        Schedules the end of the wall-clock budget, called as ``timer(seconds, expire)`` and then started
        (:class:`threading.Timer`); tests pass a timer they fire themselves instead of waiting it out.

    Returns
    -------
    FetchedImage
        The body, its media type as sniffed from its magic bytes (``image/jpeg`` …), and the final URL.

    Raises
    ------
    FetchError
        ``invalid_url``, ``blocked_address``, ``fetch_timeout``, ``fetch_failed``, ``upstream_status``,
        ``too_many_redirects``, ``bad_content_type`` or ``file_too_large``. Nothing from urllib3, ``ssl``
        or ``socket`` escapes.
    """
    settings = settings or get_settings()
    watchdog = _Watchdog(settings.fetch_connect_timeout + 2 * settings.fetch_read_timeout, timer)
    try:
        image = _follow(url, settings, watchdog)
    except FetchError as exc:
        # Once the socket has been cut, whatever broke next (a short read, bad magic) is a symptom.
        if watchdog.expired:
            raise _timed_out() from exc
        raise
    finally:
        watchdog.cancel()
    if watchdog.expired:  # a body without Content-Length just "ends" when the socket is shut down
        raise _timed_out()
    return image


def _follow(url: str, settings: Settings, watchdog: _Watchdog) -> FetchedImage:
    url = url.strip()
    for _ in range(settings.fetch_max_redirects + 1):
        target = _check_url(url, settings)
        try:
            outcome = _fetch_hop(url, target, settings, watchdog)
        except (HTTPError, HTTPException, OSError) as exc:
            raise _translate(exc, target.host) from exc
        if isinstance(outcome, FetchedImage):
            return outcome
        url = urljoin(url, outcome)
    raise FetchError(
        ErrorCode.TOO_MANY_REDIRECTS, f"the URL redirects more than {settings.fetch_max_redirects} time(s)"
    )


def _fetch_hop(url: str, target: _Target, settings: Settings, watchdog: _Watchdog) -> FetchedImage | str:
    """One request: the image, or the ``Location`` to go to next."""
    conn, response = _request(target, settings, watchdog)
    try:
        if response.status in _REDIRECT_STATUSES:
            location = response.headers.get("Location", "").strip()
            if not location:
                raise FetchError(ErrorCode.UPSTREAM_STATUS, f"the server answered {response.status} with no Location")
            return location
        if not 200 <= response.status < 300:
            raise FetchError(ErrorCode.UPSTREAM_STATUS, f"the server answered HTTP {response.status}")
        data, image_format = _read_body(response, settings.max_image_bytes)
        return FetchedImage(data, _MEDIA_TYPES[image_format], url)
    finally:
        response.close()
        conn.close()


# --- Checking a URL -------------------------------------------------------------------------------------


def _check_url(url: str, settings: Settings) -> _Target:
    """Parse and vet one URL (the first or a redirect hop); resolve its host once and vet every address."""
    if not url or len(url) > _MAX_URL_LENGTH or _UNSAFE_URL_CHARS.search(url):
        raise FetchError(ErrorCode.INVALID_URL, "the URL is empty, too long, or has control characters or '\\'")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchError(ErrorCode.INVALID_URL, "the URL could not be parsed") from exc
    if parts.scheme not in ("http", "https"):
        raise FetchError(ErrorCode.INVALID_URL, "only http and https URLs can be fetched")
    if "@" in parts.netloc:
        raise FetchError(ErrorCode.INVALID_URL, "URLs with a user name or password are not accepted")
    host, literal = _parse_host(parts.hostname or "")
    port = port if port is not None else (443 if parts.scheme == "https" else 80)
    if port == 0:
        raise FetchError(ErrorCode.INVALID_URL, "port 0 is not a port")
    if not settings.allow_private_urls and port not in _ALLOWED_PORTS:
        raise FetchError(ErrorCode.BLOCKED_ADDRESS, f"port {port} is not allowed; only 80 and 443")
    if literal is not None:
        if _is_blocked(literal, settings.allow_private_urls):
            raise FetchError(ErrorCode.BLOCKED_ADDRESS, f"{host} is not a public address")
        addresses: tuple[_IPAddress, ...] = (literal,)
    else:
        addresses = _resolve(host, port)
        if any(_is_blocked(address, settings.allow_private_urls) for address in addresses):
            # The addresses themselves stay out of the message: they may be internal DNS data.
            raise FetchError(ErrorCode.BLOCKED_ADDRESS, f"{host} resolves to an address that is not public")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(
        scheme=parts.scheme,
        host=host,
        port=port,
        addresses=tuple(str(_unmapped(address)) for address in addresses),
        path=quote(path, safe=_PRINTABLE_ASCII),
    )


def _parse_host(hostname: str) -> tuple[str, _IPAddress | None]:
    """The host in ASCII and, when it is an IP literal in any spelling, that address."""
    if not hostname:
        raise FetchError(ErrorCode.INVALID_URL, "the URL has no host")
    if ":" in hostname:  # only IPv6 literals contain ':' (urlsplit has removed the brackets)
        if "%" in hostname:  # zone ids only mean something for link-local addresses, which are refused anyway
            raise FetchError(ErrorCode.INVALID_URL, "IPv6 zone ids are not accepted")
        try:
            return hostname, ipaddress.IPv6Address(hostname)
        except ValueError as exc:
            raise FetchError(ErrorCode.INVALID_URL, "the URL's IPv6 address is not valid") from exc
    try:
        # IDNA first: nameprep maps full-width digits and dots, so "１２７.０.０.１" becomes an IP literal.
        host = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise FetchError(ErrorCode.INVALID_URL, "the URL's host name is not a valid domain name") from exc
    host = host.removesuffix(".")
    if not _HOSTNAME.fullmatch(host) or len(host) > 253:
        raise FetchError(ErrorCode.INVALID_URL, "the URL's host name is not a valid domain name")
    return host, _parse_ipv4(host)


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """An IPv4 literal as the WHATWG URL standard and ``inet_aton`` read it, or ``None`` for a name.

    A host whose last label is a number is an address (``127.1``, ``0x7f000001``, ``0177.0.0.1``, ``0``):
    each part decimal, ``0x`` hex or ``0``-prefixed octal, the last part filling the remaining bytes.
    One that looks numeric but does not parse (``1.2.3.4.5``, ``08.1``) is refused, not looked up.
    """
    parts = host.split(".")
    if not _IPV4_PART.fullmatch(parts[-1]):
        return None
    invalid = FetchError(ErrorCode.INVALID_URL, f"{host} is not a valid IPv4 address")
    if len(parts) > 4 or not all(_IPV4_PART.fullmatch(part) for part in parts):
        raise invalid
    try:
        numbers = [_ipv4_number(part) for part in parts]
    except ValueError as exc:  # "08", "09": not octal
        raise invalid from exc
    *leading, last = numbers
    if any(number > 255 for number in leading) or last >= 256 ** (4 - len(leading)):
        raise invalid
    return ipaddress.IPv4Address(sum(number << (8 * (3 - i)) for i, number in enumerate(leading)) + last)


def _ipv4_number(part: str) -> int:
    if part.startswith("0x"):
        return int(part[2:] or "0", 16)
    return int(part, 8 if len(part) > 1 and part.startswith("0") else 10)


def _resolve(host: str, port: int) -> tuple[_IPAddress, ...]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise FetchError(ErrorCode.FETCH_FAILED, f"could not resolve {host}") from exc
    # dict.fromkeys: unique, in the resolver's preference order. A v6 sockaddr may carry "%scope".
    addresses = tuple(
        dict.fromkeys(
            ipaddress.ip_address(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)
        )
    )
    if not addresses:
        raise FetchError(ErrorCode.FETCH_FAILED, f"could not resolve {host}")
    return addresses


def _unmapped(address: _IPAddress) -> _IPAddress:
    """``::ffff:a.b.c.d`` → ``a.b.c.d``: connect to exactly the address that was judged, over IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_blocked(address: _IPAddress, allow_private: bool) -> bool:
    """Whether a connection to ``address`` could reach somewhere other than the public internet."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # a dual-stack socket connects to the IPv4 address itself
            return _is_blocked(address.ipv4_mapped, allow_private)
        # 6to4 and NAT64 relays deliver to the embedded IPv4 address: that is the real destination.
        embedded = address.sixtofour or (
            ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF) if address in _NAT64 else None
        )
        if embedded is not None:
            return _is_blocked(embedded, allow_private)
    if any(address in network for network in _ALWAYS_BLOCKED):
        return True
    if allow_private and any(address in network for network in _LOCAL_STACK_NETWORKS):
        return False
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return True
    # is_global alone is not enough on every Python: 3.11 counts multicast (224/4, ff00::/8) as global.
    return not address.is_global or address.is_multicast or address.is_reserved


# --- Talking to the server ------------------------------------------------------------------------------


class _Watchdog:
    """Cuts the fetch's socket when its wall-clock budget runs out.

    Socket timeouts bound each ``recv``, not a response: a server that drips a byte a second through the
    TLS handshake, the headers or the body would hold a fetch for ever. ``shutdown()`` from this timer
    thread wakes the blocked ``recv``. It acts on a duplicate of the raw socket's descriptor because TLS
    wrapping detaches the original object; shutdown applies to the connection, whichever descriptor.
    """

    def __init__(self, seconds: float, timer: TimerFactory = threading.Timer) -> None:
        self.expired = False
        self._deadline = time.monotonic() + seconds
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = timer(seconds, self._expire)
        if isinstance(self._timer, threading.Thread):
            self._timer.daemon = True  # a pending budget never keeps the process alive
        self._timer.start()

    def remaining(self) -> float:
        left = self._deadline - time.monotonic()
        if self.expired or left <= 0:
            raise _timed_out()
        return left

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._close_dup()
            self._sock = sock.dup()
            if self.expired:
                _shut(self._sock)

    def cancel(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._close_dup()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                _shut(self._sock)

    def _close_dup(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer or by us
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedHTTPConnection(HTTPConnection):
    """An urllib3 connection that hands its socket to the fetch's watchdog as soon as it exists."""

    watchdog: _Watchdog

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        self.watchdog.watch(sock)
        return sock


class _WatchedHTTPSConnection(_WatchedHTTPConnection, HTTPSConnection):
    pass


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Certificate and host name verification on: certifi's CAs when installed, else the system's."""
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def _request(target: _Target, settings: Settings, watchdog: _Watchdog) -> tuple[HTTPConnection, BaseHTTPResponse]:
    """Send the GET to the first of the host's checked addresses that accepts a connection."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    if target.port != (443 if target.scheme == "https" else 80):
        host += f":{target.port}"
    headers = {
        "Host": host,
        "User-Agent": _USER_AGENT,
        "Accept": "image/*",
        "Accept-Encoding": "identity",
        "Connection": "close",
    }
    error: ConnectTimeoutError | None = None
    for address in target.addresses:
        timeout = min(settings.fetch_connect_timeout, watchdog.remaining())
        conn: HTTPConnection
        if target.scheme == "https":
            # Connect to the checked address; SNI and the certificate check use the URL's host name.
            conn = _WatchedHTTPSConnection(
                address, target.port, timeout=timeout, server_hostname=target.host, ssl_context=_tls_context()
            )
        else:
            conn = _WatchedHTTPConnection(address, target.port, timeout=timeout)
        conn.watchdog = watchdog
        try:
            try:
                conn.connect()
            except ConnectTimeoutError as exc:  # includes NewConnectionError: try the host's next address
                conn.close()
                error = exc
                continue
            conn.timeout = min(settings.fetch_read_timeout, watchdog.remaining())
            conn.request("GET", target.path, headers=headers, preload_content=False, decode_content=False)
            return conn, conn.getresponse()
        except BaseException:
            conn.close()
            raise
    assert error is not None  # _check_url never returns a target without addresses
    raise error


def _read_body(response: BaseHTTPResponse, max_bytes: int) -> tuple[bytes, str]:
    """Stream the body under the byte cap; refuse a non-image as soon as its first bytes show it."""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchError(
            ErrorCode.BAD_CONTENT_TYPE, f"the server sent a {encoding}-encoded body; only unencoded images are accepted"
        )
    declared = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if declared and not declared.startswith("image/") and declared != "application/octet-stream":
        raise FetchError(ErrorCode.BAD_CONTENT_TYPE, f"the URL serves {declared}, not an image")
    if response.length_remaining is not None and response.length_remaining > max_bytes:
        raise FetchError(
            ErrorCode.FILE_TOO_LARGE, f"the file is {response.length_remaining:,} bytes; the limit is {max_bytes:,}"
        )
    body = bytearray()
    image_format: str | None = None
    # read1: returns what has arrived rather than waiting for a full chunk, so the checks below run early.
    while chunk := response.read1(min(_CHUNK, max_bytes + 1 - len(body)), decode_content=False):
        body += chunk
        if len(body) > max_bytes:
            raise FetchError(ErrorCode.FILE_TOO_LARGE, f"the file is larger than the limit of {max_bytes:,} bytes")
        if image_format is None and len(body) >= _SNIFF_BYTES:
            image_format = _sniff(bytes(body[:_SNIFF_BYTES]))
    return bytes(body), image_format or _sniff(bytes(body))


def _sniff(head: bytes) -> str:
    image_format = sniff_format(head)
    if image_format is None:
        what = "an empty body" if not head else f"something that is not a {ACCEPTED_NAMES} image"
        raise FetchError(ErrorCode.BAD_CONTENT_TYPE, f"the URL returned {what}")
    return image_format


def _timed_out() -> FetchError:
    return FetchError(ErrorCode.FETCH_TIMEOUT, "the server took too long to send the image")


def _translate(exc: BaseException, host: str) -> FetchError:
    """urllib3/ssl/socket failures → a FetchError that says what happened, without internals."""
    if isinstance(exc, NewConnectionError):  # a subclass of ConnectTimeoutError, so test it first
        return FetchError(ErrorCode.FETCH_FAILED, f"could not connect to {host}")
    if isinstance(exc, (Urllib3TimeoutError, TimeoutError)):
        return FetchError(ErrorCode.FETCH_TIMEOUT, f"{host} did not answer in time")
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "verify_message", None) or exc.reason or "handshake failed"
        return FetchError(ErrorCode.FETCH_FAILED, f"the TLS connection to {host} failed ({reason})")
    return FetchError(ErrorCode.FETCH_FAILED, f"the connection to {host} failed while reading the response")
