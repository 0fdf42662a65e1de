"""The nightly batch end to end on the moto server: photos in incoming/, Results in DynamoDB, CSV in exports/."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from refund_sorter.jobs.nightly import run_nightly
from refund_sorter.photos import Photo
from refund_sorter.storage.bucket import PhotoBucket, StoredPhoto
from refund_sorter.vision.sorter import Sorter
from refund_sorter_cli.samples import PHOTOS, photo_bytes
from refund_sorter_cli.stepfunctions import LocalLambdas
from tests.integration.conftest import LocalAws
from tests.integration.nightly import run_night, summary_of
from tests.odd_images import odd_images

if TYPE_CHECKING:
    from collections.abc import Iterator

    from refund_sorter.config import Settings
    from refund_sorter.jobs.report import BatchReport

REAL = ["skimage/coffee", "skimage/chelsea", "skimage/astronaut", "sklearn/china", "matplotlib/grace_hopper"]


def upload_real_photos(aws: LocalAws) -> list[str]:
    keys = [f"incoming/{name.replace('/', '-')}{Path(PHOTOS[name][1]).suffix}" for name in REAL]
    for name, key in zip(REAL, keys, strict=True):
        aws.put_photo(key, photo_bytes(name))
    return keys


def export_rows(aws: LocalAws, key: str) -> list[dict[str, str]]:
    body = aws.s3.get_object(Bucket=aws.settings.bucket, Key=key)["Body"].read().decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(body)))


@pytest.mark.slow
def test_aws_cli_upload_then_batch_then_rerun_adds_nothing(aws: LocalAws, tmp_path: Path) -> None:
    # GIVEN photos dropped into incoming/ by a real client, the AWS CLI
    for name in REAL:
        (tmp_path / f"{name.replace('/', '-')}{Path(PHOTOS[name][1]).suffix}").write_bytes(photo_bytes(name))
    aws_cli = Path(sys.executable).with_name("aws")
    subprocess.run(
        [
            str(aws_cli),
            "s3",
            "cp",
            str(tmp_path),
            f"s3://{aws.settings.bucket}/incoming/",
            "--recursive",
            "--endpoint-url",
            aws.endpoint,
            "--only-show-errors",
        ],
        check=True,
        timeout=60,
    )
    # WHEN the schedule fires (the template's state machine, its functions in their own processes)
    with LocalLambdas(aws.template) as lambdas:
        night = run_night(aws, lambdas)
        # THEN one Result per photo, every photo moved to processed/, and the export has one row per photo
        assert night.status == "SUCCEEDED"
        summary = summary_of(night)
        assert summary["counts"]["classified"] + summary["counts"]["needs_review"] == len(REAL)
        assert len(aws.items()) == len(REAL)
        assert aws.keys("incoming/") == []
        assert len(aws.keys("processed/")) == len(REAL)
        rows = export_rows(aws, summary["export_key"])
        assert len(rows) == len(REAL)
        assert list(rows[0])[:4] == ["timestamp", "source", "prediction", "confidence"]
        coffee = next(r for r in rows if "coffee" in r["source"])
        assert coffee["label"] == "espresso"
        # WHEN it runs again THEN nothing is added
        again = summary_of(run_night(aws, lambdas))
    assert again["photos"] == 0 and again["chunks"] == 0
    assert len(aws.items()) == len(REAL)
    assert len(export_rows(aws, again["export_key"])) == len(REAL)


def test_odd_images_land_in_processed_or_failed_with_the_reason(aws: LocalAws, sorter: Sorter) -> None:
    cases = odd_images()
    for case in cases:
        aws.put_photo(f"incoming/{case.name.replace(' ', '_')}/{case.filename}", case.data)
    report = run_nightly(sorter, aws.store, aws.bucket)
    expected_failures = [c for c in cases if c.expect != "ok"]
    assert report.failed == len(expected_failures)
    assert report.classified + report.needs_review == len(cases) - len(expected_failures)
    assert len(aws.items()) == len(cases)
    for case in expected_failures:
        key = f"failed/{case.name.replace(' ', '_')}/{case.filename}"
        head = aws.s3.head_object(Bucket=aws.settings.bucket, Key=key)
        assert head["Metadata"]["error-code"] == case.expect
        tags = aws.s3.get_object_tagging(Bucket=aws.settings.bucket, Key=key)["TagSet"]
        assert {"Key": "error-code", "Value": case.expect} in tags
    assert aws.keys("incoming/") == []


def test_time_budget_stops_cleanly_and_the_next_run_finishes(aws: LocalAws, sorter: Sorter) -> None:
    keys = upload_real_photos(aws)
    # GIVEN a run whose Lambda time runs out after two photos were started
    clock = iter([100.0, 100.0] + [1.0] * 100)
    first = run_nightly(sorter, aws.store, aws.bucket, seconds_left=lambda: next(clock))
    assert first.stopped_early
    assert first.processed == 2
    assert len(aws.keys("incoming/")) == len(keys) - 2
    assert first.export_key is not None  # the export is still written
    # WHEN the next run comes THEN it takes the rest, and each photo has exactly one Result
    second = run_nightly(sorter, aws.store, aws.bucket)
    assert second.processed == len(keys) - 2
    assert len(aws.items()) == len(keys)
    assert aws.keys("incoming/") == []


class MeetingBucket(PhotoBucket):
    """A bucket whose listing waits, after its first photo, until the other run has got that far too.

    So both runs are mid-run at once, whatever the scheduler does: if one could finish before the other
    started, its wait would time out (BrokenBarrierError) and the test fail.
    """

    def __init__(self, settings: Settings, client: Any, barrier: threading.Barrier) -> None:
        super().__init__(settings, client)
        self.barrier = barrier
        self.met = False

    def incoming(self) -> Iterator[StoredPhoto]:
        for position, stored in enumerate(super().incoming()):
            yield stored
            if position == 0:
                self.barrier.wait()  # this run has taken a photo; do not take the next until the other has too
                self.met = True


def test_two_runs_at_once_store_each_photo_once(aws: LocalAws, sorter: Sorter) -> None:
    keys = upload_real_photos(aws)
    barrier = threading.Barrier(2, timeout=120)
    buckets = [MeetingBucket(aws.settings, aws.s3, barrier) for _ in range(2)]
    reports: list[BatchReport] = []
    errors: list[BaseException] = []

    def run(bucket: PhotoBucket) -> None:
        try:
            reports.append(run_nightly(sorter, aws.store, bucket))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()  # never leave the other run waiting

    threads = [threading.Thread(target=run, args=(bucket,)) for bucket in buckets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # THEN the two runs overlapped (both passed the meeting point) ...
    assert errors == []
    assert all(bucket.met for bucket in buckets)
    # ... and still each photo has one Result, was counted once, and was moved once
    assert len(aws.items()) == len(keys)
    assert sum(r.processed for r in reports) == len(keys)
    assert aws.keys("incoming/") == []
    assert len(aws.keys("processed/")) == len(keys)


def test_transient_read_errors_are_retried_by_the_next_run(
    aws: LocalAws, sorter: Sorter, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = upload_real_photos(aws)
    original = PhotoBucket.photo

    def throttled(self: PhotoBucket, stored: StoredPhoto, result_id: str | None = None, **kwargs: bool) -> Photo:
        photo = original(self, stored, result_id, **kwargs)
        if "coffee" not in stored.key:
            return photo

        def read() -> bytes:
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Reduce your request rate"}}, "GetObject")

        return Photo(photo.id, photo.source, read)

    monkeypatch.setattr(PhotoBucket, "photo", throttled)
    first = run_nightly(sorter, aws.store, aws.bucket)
    assert first.deferred == 1
    assert [k for k in aws.keys("incoming/") if "coffee" in k]  # left where it was
    monkeypatch.setattr(PhotoBucket, "photo", original)
    second = run_nightly(sorter, aws.store, aws.bucket)
    assert second.processed == 1
    assert len(aws.items()) == len(keys)


def test_a_photo_classified_but_not_moved_is_moved_without_a_second_result(aws: LocalAws, sorter: Sorter) -> None:
    upload_real_photos(aws)
    # GIVEN a run that stored every Result but died before moving the photos (simulated by copying them back)
    run_nightly(sorter, aws.store, aws.bucket)
    for key in aws.keys("processed/"):
        aws.s3.copy_object(
            Bucket=aws.settings.bucket,
            Key=key.replace("processed/", "incoming/"),
            CopySource={"Bucket": aws.settings.bucket, "Key": key},
        )
    # WHEN the next run comes THEN it only moves them
    report = run_nightly(sorter, aws.store, aws.bucket)
    assert report.processed == 0
    assert report.already_done == len(REAL)
    assert aws.keys("incoming/") == []
    assert len(aws.items()) == len(REAL)
