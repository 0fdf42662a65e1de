"""Ports on 127.0.0.1: the one place the client, the tools and the tests claim, probe and wait for them.

The local stack only ever listens on loopback, so everything here is about ``127.0.0.1``.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

HOST = "127.0.0.1"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})

__all__ = [
    "HOST",
    "PortInUseError",
    "is_listening",
    "is_loopback_url",
    "listen",
    "refused_port",
    "wait_for_port",
]


class PortInUseError(OSError):
    """Another program already listens on the port we were asked to use."""

    def __init__(self, port: int) -> None:
        super().__init__(errno.EADDRINUSE, f"port {port} on {HOST} is already in use")
        self.port = port


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections for the ``with`` block: bound, so no other program can take
    it meanwhile, but not listening (a port that was merely free a moment ago could be taken before it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind((HOST, 0))
        yield int(held.getsockname()[1])


def listen(port: int) -> socket.socket:
    """A listening TCP socket on ``127.0.0.1:port`` (0: any free port), or :class:`PortInUseError`.

    Binding first and serving later makes "the port is taken" an error at start-up, in the caller's thread,
    instead of a server thread that dies quietly while the program carries on serving nothing.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As http.server does: a port left in TIME_WAIT by a previous run is free; one with a listener is not.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(port) from exc
        raise
    return sock


def is_listening(url: str, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at the URL's host and port (one quick attempt)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_loopback_url(url: str) -> bool:
    """Whether the URL names this machine (where a quick connect tells whether the local stack runs)."""
    return (urlsplit(url).hostname or "") in LOOPBACK_NAMES


def wait_for_port(
    url: str,
    timeout: float = 10.0,
    *,
    still_starting: Callable[[], bool] = lambda: True,
    interval: float = 0.1,
) -> None:
    """Wait until something listens at the URL's host and port.

    Parameters
    ----------
    url
        ``http://127.0.0.1:5000`` or any URL with a host and port.
    timeout
        Give up after this many seconds (:class:`TimeoutError`).
    still_starting
        Checked between attempts; when it turns ``False`` (say, the server's process has exited) waiting stops
        at once with :class:`ConnectionRefusedError` instead of running out the timeout.
    """
    deadline = time.monotonic() + timeout
    while not is_listening(url):
        if not still_starting():
            raise ConnectionRefusedError(f"nothing listens at {url}, and the server is no longer starting")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listened at {url} within {timeout:g} s")
        time.sleep(interval)
