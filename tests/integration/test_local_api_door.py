"""The local API's door, over real HTTP: what a web page on another origin could send it is refused before the
handler runs, and nothing is stored. A browser sends a "simple" cross-origin POST without asking first only
with text/plain, a form, or a body without a Content-Type; a page reached through DNS rebinding names its own
host in the Host header."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest
import requests

from tests.integration.conftest import LocalAws

STORE_THIS = json.dumps({"url": "http://127.0.0.1:9/secret.jpg"})


def raw_request(api: str, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, dict]:
    """One request exactly as given (http.client adds no Content-Type, and sends the Host it is told)."""
    address = urlsplit(api)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        (None, "send the body as application/json (no Content-Type)"),  # fetch(..., {body: new Blob([...])})
        ("text/plain;charset=UTF-8", "send the body as application/json"),  # fetch(..., {body: "..."})
        ("application/x-www-form-urlencoded", "send the body as application/json"),  # a <form> post
        ("multipart/form-data; boundary=x", "send the body as application/json"),
    ],
)
@pytest.mark.parametrize(("method", "path"), [("POST", "/predictions"), ("PATCH", "/predictions/abc")])
def test_a_body_not_sent_as_json_is_415_and_nothing_is_stored(
    api: str, aws: LocalAws, method: str, path: str, content_type: str | None, message: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    status, reply = raw_request(api, method, path, STORE_THIS.encode(), headers)
    assert (status, reply) == (415, {"error": {"code": "unsupported_media_type", "message": message}})
    assert aws.items() == []


@pytest.mark.parametrize("host", ["rebound.example:3000", "attacker.test", "127.0.0.1.nip.io", "10.0.0.5"])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/health", None), ("GET", "/predictions?status=needs_review", None), ("POST", "/predictions", STORE_THIS)],
)
def test_a_host_the_stack_does_not_listen_on_is_421(
    api: str, aws: LocalAws, host: str, method: str, path: str, body: str | None
) -> None:
    headers = {"Host": host, "Content-Type": "application/json"}
    status, reply = raw_request(api, method, path, body.encode() if body else None, headers)
    assert status == 421
    assert reply["error"]["code"] == "unknown_host"
    assert host in reply["error"]["message"]
    assert aws.items() == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST"])
def test_the_addresses_the_stack_listens_on_are_served(api: str, host: str) -> None:
    port = urlsplit(api).port
    status, reply = raw_request(api, "GET", "/health", None, {"Host": f"{host}:{port}"})
    assert (status, reply["status"]) == (200, "ok")


def test_a_json_body_with_a_charset_is_read(api: str) -> None:
    reply = requests.post(
        f"{api}/predictions",
        data=b'{"url": 5}',
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=30,
    )
    assert (reply.status_code, reply.json()["error"]["code"]) == (422, "invalid_request")
