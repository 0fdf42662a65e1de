"""Faults on the moto server: throttling and errors from S3 and DynamoDB, injected at botocore's HTTP layer.

Transient faults are absorbed by botocore's adaptive retries; a fault that outlasts them leaves the photo in
incoming/ for the next run. After the next run every photo has exactly one Result: nothing lost, nothing twice.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import ClientError

from refund_sorter.config import get_settings
from refund_sorter.errors import StorageError
from refund_sorter.jobs.nightly import run_nightly
from refund_sorter.storage.bucket import ArchivedCopy, PhotoBucket, StoredPhoto
from refund_sorter.storage.clients import dynamodb_client, reset_clients, s3_client
from refund_sorter.storage.dynamodb import DynamoResultStore
from refund_sorter.vision.sorter import Sorter
from tests.integration.conftest import LocalAws
from tests.integration.test_batch import REAL, upload_real_photos


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Any:
        yield self.data


def fault(status: int, code: str, json_body: bool) -> AWSResponse:
    if json_body:  # DynamoDB speaks JSON
        body = f'{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"injected"}}'.encode()
        headers = {"x-amzn-ErrorType": code, "content-type": "application/x-amz-json-1.0"}
    else:  # S3 speaks XML
        body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        headers = {"content-type": "application/xml"}
    http_headers = HTTPHeaders()
    for name, value in headers.items():
        http_headers[name] = value
    return AWSResponse("http://127.0.0.1/fault", status, http_headers, _Body(body))


class Injector:
    """Answers the first ``times`` matching requests with a fault instead of sending them."""

    def __init__(self, times: int, status: int, code: str, json_body: bool, when: Callable[[Any], bool]) -> None:
        self.left = times
        self.status, self.code, self.json_body, self.when = status, code, json_body, when
        self.injected = 0

    def __call__(self, request: Any, **_: Any) -> AWSResponse | None:
        if self.left and self.when(request):
            self.left -= 1
            self.injected += 1
            return fault(self.status, self.code, self.json_body)
        return None


@contextmanager
def failing(client: Any, operation: str, when: Callable[[Any], bool] = lambda r: True) -> Iterator[Injector]:
    """Every matching ``operation`` of ``client`` fails with a 500 (past any retries) inside the block."""
    service = client.meta.service_model.service_name
    json_body = service == "dynamodb"
    injector = Injector(10_000, 500, "InternalServerError" if json_body else "InternalError", json_body, when)
    client.meta.events.register(f"before-send.{service}.{operation}", injector)
    try:
        yield injector
    finally:
        client.meta.events.unregister(f"before-send.{service}.{operation}", injector)


@pytest.fixture
def clients(aws: LocalAws, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    # Fresh clients with the product's retry config (fewer tries than in production, so a persistent fault
    # exhausts them in seconds), so the injectors attach to the clients the code uses.
    monkeypatch.setenv("REFUND_SORTER_AWS_MAX_ATTEMPTS", "4")
    get_settings.cache_clear()
    reset_clients()
    return s3_client(), dynamodb_client()


def stack_with(aws: LocalAws, clients: tuple[Any, Any]) -> tuple[DynamoResultStore, PhotoBucket]:
    s3, dynamodb = clients
    return DynamoResultStore(aws.settings.table, dynamodb), PhotoBucket(aws.settings, s3)


def results_per_photo(aws: LocalAws) -> Counter[str]:
    return Counter(item["source"]["S"] for item in aws.items())


def test_dynamodb_throttling_is_absorbed_by_retries(aws: LocalAws, sorter: Sorter, clients: tuple[Any, Any]) -> None:
    store, bucket = stack_with(aws, clients)
    upload_real_photos(aws)
    throttle = Injector(
        3, 400, "ThrottlingException", True, lambda r: r.headers.get("X-Amz-Target", b"").endswith(b"PutItem")
    )
    clients[1].meta.events.register("before-send.dynamodb.PutItem", throttle)
    report = run_nightly(sorter, store, bucket)
    assert throttle.injected == 3
    assert report.processed == len(REAL) and report.deferred == 0
    assert set(results_per_photo(aws).values()) == {1}


def test_s3_slowdown_on_get_is_absorbed_by_retries(aws: LocalAws, sorter: Sorter, clients: tuple[Any, Any]) -> None:
    store, bucket = stack_with(aws, clients)
    upload_real_photos(aws)
    slow_down = Injector(3, 503, "SlowDown", False, lambda r: True)
    clients[0].meta.events.register("before-send.s3.GetObject", slow_down)
    report = run_nightly(sorter, store, bucket)
    assert slow_down.injected == 3
    assert report.processed == len(REAL) and report.deferred == 0


def test_persistent_s3_errors_defer_the_photo_to_the_next_run(
    aws: LocalAws, sorter: Sorter, clients: tuple[Any, Any]
) -> None:
    store, bucket = stack_with(aws, clients)
    upload_real_photos(aws)
    with failing(clients[0], "GetObject", lambda r: b"coffee" in r.url.encode()):
        first = run_nightly(sorter, store, bucket)
    assert first.deferred == 1 and first.processed == len(REAL) - 1
    assert [k for k in aws.keys("incoming/") if "coffee" in k]
    second = run_nightly(sorter, store, bucket)
    assert second.processed == 1
    assert sorted(results_per_photo(aws).values()) == [1] * len(REAL)
    assert aws.keys("incoming/") == []


def test_persistent_dynamodb_errors_lose_nothing(aws: LocalAws, sorter: Sorter, clients: tuple[Any, Any]) -> None:
    store, bucket = stack_with(aws, clients)
    upload_real_photos(aws)
    with failing(clients[1], "PutItem"):
        first = run_nightly(sorter, store, bucket)
    # every photo stays in incoming/ (nothing is moved before its Result is stored)
    assert first.deferred == len(REAL)
    assert len(aws.keys("incoming/")) == len(REAL)
    second = run_nightly(sorter, store, bucket)
    assert second.processed == len(REAL)
    assert sorted(results_per_photo(aws).values()) == [1] * len(REAL)


def test_failing_archive_copy_leaves_the_photo_for_the_next_run(
    aws: LocalAws, sorter: Sorter, clients: tuple[Any, Any]
) -> None:
    store, bucket = stack_with(aws, clients)
    upload_real_photos(aws)
    with failing(clients[0], "CopyObject"):
        first = run_nightly(sorter, store, bucket)
    # the Result is stored only once the copy it names exists
    assert first.deferred == len(REAL)
    assert aws.items() == []
    assert len(aws.keys("incoming/")) == len(REAL)
    second = run_nightly(sorter, store, bucket)
    assert second.processed == len(REAL)
    assert aws.keys("incoming/") == [] and len(aws.keys("processed/")) == len(REAL)
    assert sorted(results_per_photo(aws).values()) == [1] * len(REAL)


def test_failing_delete_of_the_original_is_finished_by_the_next_run(
    aws: LocalAws, sorter: Sorter, clients: tuple[Any, Any]
) -> None:
    store, bucket = stack_with(aws, clients)
    upload_real_photos(aws)
    with failing(clients[0], "DeleteObjects"):  # the originals go 50 per request
        first = run_nightly(sorter, store, bucket)
    assert first.processed == len(REAL) and first.deferred == 0
    # Results stored, naming the copies in processed/; the originals still wait in incoming/
    assert len(aws.keys("incoming/")) == len(REAL) and len(aws.keys("processed/")) == len(REAL)
    assert {item["photo_key"]["S"] for item in aws.items()} == set(aws.keys("processed/"))
    assert any("could not delete" in error for error in first.errors)  # a StorageError, not a raw ClientError
    second = run_nightly(sorter, store, bucket)
    assert second.already_done == len(REAL) and second.processed == 0
    assert aws.keys("incoming/") == [] and len(aws.keys("processed/")) == len(REAL)
    assert sorted(results_per_photo(aws).values()) == [1] * len(REAL)


def test_a_dynamodb_fault_on_already_done_defers_those_photos_and_the_export_is_still_written(
    aws: LocalAws, sorter: Sorter, clients: tuple[Any, Any]
) -> None:
    store, bucket = stack_with(aws, clients)
    keys = upload_real_photos(aws)
    (coffee,) = [key for key in keys if "coffee" in key]
    coffee_id = bucket.head(coffee).result_id
    # GIVEN DynamoDB failing, past every retry, each time the job asks whether coffee is already done (photos are
    # looked up 100 at a time, so the question names its neighbours too)
    with failing(clients[1], "BatchGetItem", lambda r: coffee_id.encode() in r.body) as down:
        # WHEN the nightly job runs THEN the photos of that lookup wait, and the night's export is written all the same
        first = run_nightly(sorter, store, bucket)
    assert down.injected > 0
    assert (first.deferred, first.processed) == (len(REAL), 0)
    assert sorted(aws.keys("incoming/")) == sorted(keys)
    assert first.export_key is not None and first.export_rows == 0
    second = run_nightly(sorter, store, bucket)
    assert second.processed == len(REAL) and second.export_rows == len(REAL)
    assert sorted(results_per_photo(aws).values()) == [1] * len(REAL)


@pytest.mark.parametrize(
    ("operation", "call"),
    [
        ("ListObjectsV2", lambda bucket, photo: list(bucket.incoming())),
        ("HeadObject", lambda bucket, photo: bucket.head(photo.key)),
        ("HeadObject", lambda bucket, photo: bucket.copy_to_archive(photo, "an-id")),
        ("CopyObject", lambda bucket, photo: bucket.copy_to_archive(photo, "an-id")),
        ("DeleteObject", lambda bucket, photo: bucket.delete_original(ArchivedCopy(photo, "processed/x", None))),
        ("PutObject", lambda bucket, photo: bucket.put_export("exports/2026-11-25.csv", io.BytesIO(b"a,b\r\n"))),
        ("PutObject", lambda bucket, photo: bucket.put_upload("an-id", b"\x89PNG", "png", "image/png")),
    ],
    ids=["list", "head", "head-before-copy", "copy", "delete", "put-export", "put-upload"],
)
def test_bucket_faults_leave_as_storage_errors(
    aws: LocalAws, clients: tuple[Any, Any], operation: str, call: Callable[[PhotoBucket, StoredPhoto], object]
) -> None:
    _, bucket = stack_with(aws, clients)
    (key, *_) = upload_real_photos(aws)
    photo = bucket.head(key)
    with failing(clients[0], operation) as broken, pytest.raises(StorageError) as raised:
        call(bucket, photo)
    assert broken.injected > 0
    assert isinstance(raised.value.__cause__, ClientError)  # what botocore raised, kept as the cause
