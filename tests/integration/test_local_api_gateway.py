"""The local API Gateway stand-in, over real HTTP: what never reaches the function.

- What a web page on another origin could send is refused before the handler runs, and nothing is stored. A
  browser sends a "simple" cross-origin POST without asking first only with text/plain, a form, or a body
  without a Content-Type; a page reached through DNS rebinding names its own host in the Host header.
- What AWS refuses for size, refused the same way: a request whose event does not fit a Lambda invocation
  (6 MB) gets API Gateway's 413, so a 6-10 MB upload fails locally as it would deployed.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
from urllib.parse import urlsplit

import pytest
import requests

from refund_sorter.api.schemas import INLINE_PHOTO_BYTES, INVOCATION_PAYLOAD_BYTES
from tests.integration.conftest import LocalAws

STORE_THIS = json.dumps({"url": "http://127.0.0.1:9/secret.jpg"})


def raw_request(api: str, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, dict]:
    """One request exactly as given (http.client adds no Content-Type, and sends the Host it is told)."""
    address = urlsplit(api)
    connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=30)
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


def inline_photo_body(photo_bytes: int) -> bytes:
    """A POST /predictions body with a photo of this many bytes inline (a JPEG's first bytes, then noise)."""
    photo = b"\xff\xd8\xff\xe0" + os.urandom(photo_bytes - 4)
    return json.dumps({"image_base64": base64.b64encode(photo).decode()}).encode()


@pytest.mark.parametrize("body_megabytes", [6.4, 7.5, 10.4])
def test_a_request_over_the_lambda_invocation_limit_is_apigateways_413(
    api: str, aws: LocalAws, body_megabytes: float
) -> None:
    # GIVEN a 6-10 MB body: under API Gateway's 10 MB, over the 6 MB a synchronous invocation carries
    body = inline_photo_body(int(body_megabytes * 1e6 * 3 / 4))
    assert INVOCATION_PAYLOAD_BYTES < len(body) < 10 * 1024 * 1024
    # WHEN it is posted
    reply = requests.post(f"{api}/predictions", data=body, headers={"Content-Type": "application/json"}, timeout=60)
    # THEN the stand-in answers as API Gateway does (413), in the API's error shape, naming the way round it
    assert (reply.status_code, reply.json()["error"]["code"]) == (413, "file_too_large")
    assert "by s3_key or url" in reply.json()["error"]["message"]
    assert aws.items() == []


def test_the_documented_inline_photo_size_reaches_the_function_and_a_little_more_does_not(api: str) -> None:
    headers = {"Content-Type": "application/json"}
    at_the_limit = requests.post(
        f"{api}/predictions", data=inline_photo_body(INLINE_PHOTO_BYTES), headers=headers, timeout=60
    )
    # the function read it (noise after a JPEG header is a corrupt photo), the gateway let it through
    assert (at_the_limit.status_code, at_the_limit.json()["error"]["code"]) == (422, "corrupt_image")
    over = requests.post(
        f"{api}/predictions", data=inline_photo_body(INLINE_PHOTO_BYTES + 20_000), headers=headers, timeout=60
    )
    assert (over.status_code, over.json()["error"]["code"]) == (413, "file_too_large")


def test_a_body_over_apigateways_10_mb_is_413_before_it_is_read(api: str) -> None:
    reply = requests.post(
        f"{api}/predictions",
        data=b"x" * (10 * 1024 * 1024 + 1),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert (reply.status_code, reply.json()["error"]["code"]) == (413, "file_too_large")
    assert "10,485,760" in reply.json()["error"]["message"]
