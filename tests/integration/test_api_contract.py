"""Over real HTTP, through the local API Gateway stand-in: every answer is one the OpenAPI document promises
for its operation (status, media type, body, and for an error the code listed with that status), including the
5xx a storage fault gives."""

from __future__ import annotations

import base64
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from refund_sorter.api.openapi import CODES_KEY
from refund_sorter.api.schemas import ErrorBody
from refund_sorter.results import Result
from refund_sorter_cli.samples import photo_bytes
from tests.integration.conftest import LocalAws

COFFEE = base64.b64encode(photo_bytes("skimage/coffee")).decode()
UNKNOWN_ID = "0123456789abcdef0123456789abcdef"
UNKNOWN = f"/predictions/{UNKNOWN_ID}"
# What Python's JSON reader cannot hold (RecursionError, int digits cap): once 500s, now the client's 400
NESTED_1000_DEEP = '{"url": ' + "[" * 1000 + "]" * 1000 + "}"
REVISION_OF_5000_DIGITS = '{"category": "shoes", "revision": ' + "9" * 5000 + "}"


class _LoopbackOnlySocket(socket.socket):
    """Fails the test before a packet could leave the machine (the local stack allows private URLs)."""

    def connect(self, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not ipaddress.ip_address(address[0]).is_loopback:
            pytest.fail(f"a connection to {address} was attempted")
        super().connect(address)


@pytest.fixture(autouse=True)
def _no_traffic_off_the_machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket, "socket", _LoopbackOnlySocket)
    yield


@pytest.fixture
def document(api: str) -> dict[str, Any]:
    reply = requests.get(f"{api}/swagger", params={"format": "json"}, timeout=10)
    assert reply.status_code == 200
    return dict(reply.json())


def assert_documented(document: dict[str, Any], method: str, path: str, reply: requests.Response) -> None:
    """The reply is one the document lists for this operation, and its body has the documented shape."""
    responses = document["paths"][path][method.lower()]["responses"]
    assert str(reply.status_code) in responses, (method, path, reply.status_code, reply.text[:200])
    documented = responses[str(reply.status_code)]
    media_type = reply.headers.get("content-type", "").split(";")[0]
    assert media_type in documented.get("content", {}), (method, path, reply.status_code, media_type)
    if reply.status_code >= 400:
        error = ErrorBody.model_validate(reply.json()).error
        assert error.code in documented[CODES_KEY], (method, path, reply.status_code, error)
        assert error.message
    elif method == "POST" or (media_type == "application/json" and path.startswith("/predictions/")):
        Result.model_validate(reply.json())


def send(api: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{api}{path}", timeout=60, **kwargs)


def test_every_answer_to_a_user_session_is_documented(api: str, aws: LocalAws, document: dict[str, Any]) -> None:
    aws.put_photo("incoming/contract/coffee.png", photo_bytes("skimage/coffee"))
    new = send(api, "POST", "/predictions", json={"s3_key": "incoming/contract/coffee.png"})
    known = send(api, "POST", "/predictions", json={"s3_key": "incoming/contract/coffee.png"})
    assert (new.status_code, known.status_code) == (201, 200)
    prediction_id = new.json()["id"]
    day = new.json()["timestamp"][:10]
    session = [
        ("POST", "/predictions", new),
        ("POST", "/predictions", known),
        ("GET", "/predictions/{id}", send(api, "GET", f"/predictions/{prediction_id}")),
        ("GET", "/predictions", send(api, "GET", "/predictions", params={"date": day})),
        ("PATCH", "/predictions/{id}", send(api, "PATCH", f"/predictions/{prediction_id}", json={"category": "shoes"})),
        ("GET", "/exports/{date}", send(api, "GET", f"/exports/{day}")),
        ("GET", "/departments", send(api, "GET", "/departments")),
        ("GET", "/health", send(api, "GET", "/health")),
    ]
    for method, path, reply in session:
        assert reply.status_code < 300, (method, path, reply.text[:200])
        assert_documented(document, method, path, reply)


@pytest.mark.parametrize(
    ("method", "path", "url", "kwargs", "status", "code"),
    [
        ("POST", "/predictions", "/predictions", {"data": '{"url": 5'}, 400, "invalid_json"),
        ("POST", "/predictions", "/predictions", {"data": b'{"url": "\xff"}'}, 400, "invalid_json"),
        ("POST", "/predictions", "/predictions", {"data": {"url": "x"}}, 415, "unsupported_media_type"),
        ("POST", "/predictions", "/predictions", {"json": {"s3_key": "incoming/nope.jpg"}}, 404, "not_found"),
        ("POST", "/predictions", "/predictions", {"json": {"image_base64": "/9j/4AAQ"}}, 422, "corrupt_image"),
        ("POST", "/predictions", "/predictions", {"json": {"url": "http://169.254.169.254/a"}}, 422, "blocked_address"),
        ("POST", "/predictions", "/predictions", {"json": {"url": None}}, 422, "invalid_request"),
        ("POST", "/predictions", "/predictions", {"data": "x" * (10 * 1024 * 1024 + 1)}, 413, "file_too_large"),
        ("GET", "/predictions/{id}", UNKNOWN, {}, 404, "not_found"),
        ("GET", "/predictions/{id}", f"/predictions/{'a' * 65}", {}, 422, "invalid_request"),
        ("GET", "/predictions", "/predictions?date=today", {}, 422, "invalid_request"),
        ("GET", "/predictions", "/predictions?date=2026-13-01", {}, 422, "invalid_request"),
        ("GET", "/predictions", "/predictions?date=2026-11-25&next_token=forged", {}, 422, "invalid_request"),
        ("PATCH", "/predictions/{id}", UNKNOWN, {"json": {"category": "shoes"}}, 404, "not_found"),
        ("PATCH", "/predictions/{id}", UNKNOWN, {"json": {"category": "?"}}, 422, "invalid_request"),
        ("PATCH", "/predictions/{id}", UNKNOWN, {"data": "{"}, 400, "invalid_json"),
        ("POST", "/predictions", "/predictions", {"data": NESTED_1000_DEEP}, 400, "invalid_json"),
        ("PATCH", "/predictions/{id}", UNKNOWN, {"data": REVISION_OF_5000_DIGITS}, 400, "invalid_json"),
        ("GET", "/exports/{date}", "/exports/2026-02-30", {}, 422, "invalid_request"),
        ("GET", "/exports/{date}", "/exports/2026-11-25/extra", {}, 404, "not_found"),
    ],
)
def test_every_refusal_is_documented_with_its_code(
    api: str,
    document: dict[str, Any],
    method: str,
    path: str,
    url: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    raw_body = isinstance(kwargs.get("data"), str | bytes)  # requests sends a dict as a form
    headers = {"Content-Type": "application/json"} if raw_body else {}
    reply = send(api, method, url, headers=headers, **kwargs)
    assert (reply.status_code, reply.json()["error"]["code"]) == (status, code), reply.text[:300]
    assert_documented(document, method, path, reply)


def test_a_storage_fault_is_a_documented_503(api: str, aws: LocalAws, document: dict[str, Any]) -> None:
    # GIVEN the results table is gone (DynamoDB answers ResourceNotFoundException to every call)
    aws.dynamodb.delete_table(TableName=aws.settings.table)
    for method, path, url in [
        ("GET", "/predictions/{id}", f"/predictions/{UNKNOWN_ID}"),
        ("GET", "/predictions", "/predictions?date=2026-11-25"),
        ("GET", "/exports/{date}", "/exports/2026-11-25"),
    ]:
        reply = send(api, method, url)
        # THEN the client is told it is ours and worth a retry, in the documented shape
        assert (reply.status_code, reply.json()["error"]["code"]) == (503, "storage_error"), reply.text[:300]
        assert_documented(document, method, path, reply)


@pytest.mark.parametrize(
    "prefix", ["data:image/png;base64,", "DATA:image/png;BASE64,", "data:image/png;name=a.png;base64,"]
)
def test_a_data_url_is_accepted_as_image_base64(api: str, prefix: str) -> None:
    reply = send(api, "POST", "/predictions", json={"image_base64": prefix + COFFEE})
    assert reply.status_code == 201, reply.text[:300]
    assert reply.json()["label"] == "espresso"


def test_a_data_url_of_something_else_is_refused(api: str) -> None:
    reply = send(api, "POST", "/predictions", json={"image_base64": "data:text/plain;base64,aGVsbG8="})
    assert (reply.status_code, reply.json()["error"]["code"]) == (422, "invalid_request")
