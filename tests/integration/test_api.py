"""Every route of the HTTP API, over real HTTP, through the local API Gateway stand-in and the real handler."""

from __future__ import annotations

import base64
import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from refund_sorter_cli.samples import photo_bytes
from tests.integration.conftest import CONTRACT_FIELDS, LocalAws

TODAY = datetime.now(UTC).date().isoformat()


def post(api: str, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(f"{api}/predictions", json=body, timeout=30, **kwargs)


def assert_error(response: requests.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code


def test_health(api: str) -> None:
    reply = requests.get(f"{api}/health", timeout=10)
    assert reply.status_code == 200
    assert reply.json()["model_version"].startswith("efficientnet-lite0-")


def test_post_url_then_get_list_review_and_export(api: str, photo_server: str) -> None:
    photo_url = f"{photo_server}/coffee.png"
    # POST by URL (the local stack allows loopback URLs; the template never does)
    created = post(api, {"url": photo_url})
    assert created.status_code == 201, created.text
    result = created.json()
    assert set(result) >= CONTRACT_FIELDS
    assert result["label"] == "espresso"
    assert result["source"] == photo_url
    # GET by id
    fetched = requests.get(f"{api}/predictions/{result['id']}", timeout=10)
    assert fetched.json() == result
    # GET the day's list
    page = requests.get(f"{api}/predictions", params={"date": TODAY}, timeout=10).json()
    assert [r["id"] for r in page["items"]] == [result["id"]]
    # PATCH: a person decides
    reviewed = requests.patch(f"{api}/predictions/{result['id']}", json={"category": "home_kitchen"}, timeout=10)
    assert reviewed.status_code == 200, reviewed.text
    decided = reviewed.json()
    # the model's answer stays; the person's decision is the department, and who made it is recorded
    assert decided["status"] == "reviewed"
    assert (decided["prediction"], decided["department"]) == ("food_drink", "home_kitchen")
    assert decided["confidence"] == result["confidence"]
    assert decided["review"]["department"] == "home_kitchen" and decided["review"]["by"]
    # GET the export
    export = requests.get(f"{api}/exports/{TODAY}", timeout=10)
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.content.decode("utf-8-sig"))))
    assert [(r["id"], r["status"], r["prediction"], r["department"]) for r in rows] == [
        (result["id"], "reviewed", "food_drink", "home_kitchen")
    ]
    assert rows[0]["reviewed_by"] and rows[0]["reviewed_at"]


def test_post_base64_and_s3_key(api: str, aws: LocalAws) -> None:
    upload = post(api, {"image_base64": base64.b64encode(photo_bytes("skimage/chelsea")).decode()})
    assert upload.status_code == 201, upload.text
    assert "cat" in upload.json()["label"]
    aws.put_photo("incoming/api/coffee.png", photo_bytes("skimage/coffee"))
    first = post(api, {"s3_key": "incoming/api/coffee.png"})
    assert first.status_code == 201, first.text
    assert first.json()["source"] == f"s3://{aws.settings.bucket}/incoming/api/coffee.png"
    # the same object again is the same Result (id from bucket, key, ETag), not a second one
    again = post(api, {"s3_key": "incoming/api/coffee.png"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


def test_a_corrupt_upload_is_refused_with_its_code(api: str) -> None:
    reply = post(api, {"image_base64": base64.b64encode(b"\xff\xd8\xff\xe0 truncated").decode()})
    assert_error(reply, 422, "corrupt_image")


def test_departments(api: str) -> None:
    departments = requests.get(f"{api}/departments", timeout=10).json()
    assert {"shoes", "electronics", "not_a_product"} <= {d["id"] for d in departments}


def test_openapi_and_swagger_ui(api: str) -> None:
    schema = requests.get(f"{api}/swagger", params={"format": "json"}, timeout=10).json()
    paths = {(p, m) for p, ops in schema["paths"].items() for m in ops}
    assert {
        ("/predictions", "post"),
        ("/predictions", "get"),
        ("/predictions/{id}", "get"),
        ("/predictions/{id}", "patch"),
        ("/exports/{date}", "get"),
        ("/health", "get"),
    } <= paths
    page = requests.get(f"{api}/swagger", timeout=10)
    assert page.status_code == 200 and "swagger" in page.text.lower()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ('{"url": 5', 400, "invalid_json"),
        ('{"url": 5}', 422, "invalid_request"),
        ("{}", 422, "invalid_request"),
        ('{"url": "http://x", "s3_key": "y"}', 422, "invalid_request"),
        ('{"surprise": 1}', 422, "invalid_request"),
        ("[]", 422, "invalid_request"),
        ('{"image_base64": "***"}', 422, "invalid_request"),
        ('{"url": "ftp://example.com/a.jpg"}', 422, "invalid_url"),
        ('{"url": "http://169.254.169.254/latest/meta-data/"}', 422, "blocked_address"),
        ('{"s3_key": "incoming/nope.jpg"}', 404, "not_found"),
    ],
    ids=[
        "bad-json",
        "wrong-type",
        "empty",
        "two-sources",
        "unknown-field",
        "array",
        "bad-base64",
        "ftp-url",
        "metadata-url",
        "missing-s3-key",
    ],
)
def test_client_mistakes_on_post_are_4xx_with_a_message(api: str, body: str, status: int, code: str) -> None:
    reply = requests.post(f"{api}/predictions", data=body, headers={"content-type": "application/json"}, timeout=30)
    assert_error(reply, status, code)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/predictions/0123456789abcdef", None, 404),
        ("GET", "/predictions?date=2026-13-45", None, 422),
        ("GET", "/predictions?date=yesterday", None, 422),
        ("GET", "/predictions", None, 422),
        ("GET", "/predictions?date=2026-11-25&limit=0", None, 422),
        ("GET", "/predictions?date=2026-11-25&next_token=forged", None, 422),
        ("PATCH", "/predictions/0123456789abcdef", {"category": "shoes"}, 404),
        ("PATCH", "/predictions/0123456789abcdef", {"category": "spaceships"}, 422),
        ("GET", "/exports/not-a-date", None, 422),
        ("GET", "/nowhere", None, 404),
        ("DELETE", "/predictions", None, 404),
    ],
)
def test_other_client_mistakes_are_4xx(api: str, method: str, path: str, body: Any, status: int) -> None:
    reply = requests.request(method, f"{api}{path}", json=body, timeout=10)
    assert_error(reply, status)


def test_body_over_the_limit_is_413(api: str) -> None:
    huge = base64.b64encode(b"\xff\xd8\xff" + b"\0" * (21 * 1024 * 1024)).decode()
    reply = post(api, {"image_base64": huge})
    assert_error(reply, 413)


def test_retry_with_the_same_idempotency_key_returns_the_first_result(api: str, aws: LocalAws) -> None:
    body = {"image_base64": base64.b64encode(photo_bytes("skimage/coffee")).decode()}
    first = post(api, body, headers={"Idempotency-Key": "order-1234-photo-1"})
    retry = post(api, body, headers={"Idempotency-Key": "order-1234-photo-1"})
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert len(aws.items()) == 1  # one stored Result, not two
    # without a key, the same photo is a new prediction
    assert post(api, body).json()["id"] != first.json()["id"]


def test_idempotency_key_reused_with_another_body_is_refused(api: str) -> None:
    coffee = {"image_base64": base64.b64encode(photo_bytes("skimage/coffee")).decode()}
    cat = {"image_base64": base64.b64encode(photo_bytes("skimage/chelsea")).decode()}
    assert post(api, coffee, headers={"Idempotency-Key": "k-1"}).status_code == 201
    assert_error(post(api, cat, headers={"Idempotency-Key": "k-1"}), 422, "idempotency_key_reused")


def test_every_odd_image_gives_a_result_or_a_coded_4xx(api: str) -> None:
    from tests.odd_images import odd_images

    for case in odd_images():
        reply = post(api, {"image_base64": base64.b64encode(case.data).decode()})
        if case.expect == "ok":
            assert reply.status_code == 201, (case.name, reply.text)
            assert reply.json()["status"] in {"classified", "needs_review"}
        else:
            assert 400 <= reply.status_code < 500, (case.name, reply.text)
            assert reply.json()["error"]["code"] == case.expect, case.name
