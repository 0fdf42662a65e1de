"""The nightly job and the shared classify → store → archive loop, on an in-memory store and bucket.

The real model classifies real photos; only S3 and DynamoDB are replaced (tests/fakes.py, tests/memory_bucket.py).
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

import pytest

from refund_sorter.errors import StorageError
from refund_sorter.jobs.nightly import run_nightly
from refund_sorter.jobs.stored import classify_stored
from refund_sorter.results import Status, utc_now
from refund_sorter_cli.samples import photo_bytes
from tests.fakes import MemoryResultStore
from tests.memory_bucket import MemoryBucket

if TYPE_CHECKING:
    from refund_sorter.config import Settings
    from refund_sorter.jobs.report import BatchReport
    from refund_sorter.results import Result
    from refund_sorter.vision.sorter import Sorter

CUT_OFF_JPEG = b"\xff\xd8\xff\xe0 this upload was cut off"


@pytest.fixture
def bucket(settings: Settings) -> MemoryBucket:
    """incoming/: a product (camera), a cat (no product) and a broken upload."""
    bucket = MemoryBucket(settings)
    bucket.put("incoming/camera.png", photo_bytes("skimage/camera"))
    bucket.put("incoming/chelsea.png", photo_bytes("skimage/chelsea"))
    bucket.put("incoming/broken.jpg", CUT_OFF_JPEG)
    return bucket


def export_rows(bucket: MemoryBucket, key: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(bucket.exports[key].decode("utf-8-sig"))))


def test_nightly_classifies_stores_archives_and_exports(sorter: Sorter, bucket: MemoryBucket) -> None:
    store = MemoryResultStore()
    # WHEN the nightly job runs
    report = run_nightly(sorter, store, bucket)
    # THEN each photo has one Result, in processed/ or failed/ (with its reason), and the day's CSV has them all
    assert (report.classified, report.needs_review, report.failed, report.deferred) == (1, 1, 1, 0)
    today = utc_now().date().isoformat()
    results = {r.source.rsplit("/", 1)[-1]: r for r in store.by_day(today)}
    assert results["camera.png"].status is Status.CLASSIFIED
    assert results["chelsea.png"].status is Status.NEEDS_REVIEW
    assert results["broken.jpg"].error is not None
    assert bucket.keys("incoming/") == []
    assert bucket.keys("processed/") == ["processed/camera.png", "processed/chelsea.png"]
    assert bucket.errors["failed/broken.jpg"].code == results["broken.jpg"].error.code
    assert report.export_key == f"exports/{today}.csv"
    assert report.export_rows == 3
    # AND only the photo a person will look at has a thumbnail (the auto-sorted one would be a PUT for nobody)
    assert bucket.keys("thumbnails/") == [bucket.thumbnail_key(results["chelsea.png"].id)]
    assert len(export_rows(bucket, report.export_key)) == 3


def test_a_rerun_adds_nothing(sorter: Sorter, bucket: MemoryBucket) -> None:
    store = MemoryResultStore()
    run_nightly(sorter, store, bucket)
    again = run_nightly(sorter, store, bucket)
    assert again.processed == again.already_done == 0
    assert len(list(store.by_day(utc_now().date().isoformat()))) == 3


def test_a_photo_stored_but_not_archived_is_moved_by_the_next_run_without_a_second_result(
    sorter: Sorter, bucket: MemoryBucket
) -> None:
    # GIVEN a run that stored every Result but could not move the photos (S3 down after retries)
    store = MemoryResultStore()
    bucket.archive_error = StorageError("S3 is unavailable")
    first = run_nightly(sorter, store, bucket)
    assert first.processed == 3 and first.deferred == 0  # every Result is stored ...
    assert len(first.errors) == 1 and "could not delete 3 originals" in first.errors[0]  # ... and the report says
    assert len(bucket.keys("incoming/")) == 3  # nothing lost: the photos wait where they were
    # WHEN the next run comes THEN it only moves them
    bucket.archive_error = None
    second = run_nightly(sorter, store, bucket)
    assert second.processed == 0
    assert second.already_done == 3
    assert bucket.keys("incoming/") == []
    assert len(list(store.by_day(utc_now().date().isoformat()))) == 3


def test_a_transient_read_error_leaves_the_photo_for_the_next_run(sorter: Sorter, bucket: MemoryBucket) -> None:
    store = MemoryResultStore()
    bucket.unreadable["incoming/camera.png"] = ConnectionError("connection reset by peer")
    first = run_nightly(sorter, store, bucket)
    assert first.deferred == 1
    assert bucket.keys("incoming/") == ["incoming/camera.png"]
    assert "incoming/camera.png" in first.errors[0]
    del bucket.unreadable["incoming/camera.png"]
    second = run_nightly(sorter, store, bucket)
    assert second.classified == 1
    assert bucket.keys("incoming/") == []


class RefusingStore(MemoryResultStore):
    """DynamoDB refusing every write after botocore's retries."""

    def add(self, result: Result) -> bool:
        raise StorageError("ProvisionedThroughputExceededException")


def test_a_store_that_refuses_writes_loses_no_photo(sorter: Sorter, bucket: MemoryBucket) -> None:
    report = run_nightly(sorter, RefusingStore(), bucket)
    assert report.deferred == 3
    assert report.processed == 0
    assert len(bucket.keys("incoming/")) == 3
    assert report.export_key is not None  # the export is still written (empty)


def test_the_time_budget_stops_taking_photos_but_still_exports(sorter: Sorter, bucket: MemoryBucket) -> None:
    # GIVEN a Lambda whose time runs out after the first photo was taken (the clock is the test's)
    left = iter([1000.0, 0.0, 0.0, 0.0])
    store = MemoryResultStore()
    report = run_nightly(sorter, store, bucket, seconds_left=lambda: next(left))
    assert report.stopped_early
    assert report.processed == 1
    assert len(bucket.keys("incoming/")) == 2
    assert report.export_key is not None
    assert report.export_rows == 1


def test_on_result_is_told_about_every_photo(sorter: Sorter, bucket: MemoryBucket) -> None:
    seen: list[tuple[int, str | None]] = []

    def on_result(report: BatchReport, result: Result | None) -> None:
        seen.append((report.processed + report.deferred, result.status.value if result else None))

    bucket.unreadable["incoming/chelsea.png"] = TimeoutError("read timed out")
    classify_stored(sorter, MemoryResultStore(), bucket, bucket.incoming(), on_result=on_result)
    assert sorted(count for count, _ in seen) == [1, 2, 3]  # once per photo, the report counting up
    assert sorted(status or "deferred" for _, status in seen) == ["classified", "deferred", "failed"]
