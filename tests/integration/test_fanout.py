"""The nightly fan-out on the moto server: the template's state machine, run by the local runner with its
Lambda tasks in separate processes — plan (lease, one BatchGetItem per 100 photos, chunk manifest), the
Distributed Map of workers, export (CSV, summary, lease back)."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from refund_sorter.jobs.chunks import Chunk, ChunkRef
from refund_sorter.jobs.plan import LEASE, plan_night
from refund_sorter.jobs.worker import classify_chunk
from refund_sorter.results import Result, Status
from refund_sorter.storage.bucket import StoredPhoto
from refund_sorter.storage.jobs_table import JobsTable
from refund_sorter_cli.samples import photo_bytes
from refund_sorter_cli.stepfunctions import LocalLambdas
from tests.integration.nightly import assert_each_photo_once, run_night, small_jpeg, summary_of
from tests.odd_images import odd_images

if TYPE_CHECKING:
    from pathlib import Path

    from refund_sorter.vision.sorter import Sorter
    from tests.integration.conftest import LocalAws


def jobs_table(aws: LocalAws) -> JobsTable:
    return JobsTable(aws.template.physical_name("JobsTable"), aws.dynamodb)


def jobs_items(aws: LocalAws) -> list[dict[str, Any]]:
    return aws.dynamodb.scan(TableName=aws.template.physical_name("JobsTable"))["Items"]


class Calls:
    """Counts the DynamoDB operations a client makes (a botocore event hook: the real calls still go out)."""

    def __init__(self, client: Any) -> None:
        self.counts: Counter[str] = Counter()
        client.meta.events.register("before-call.dynamodb.*", self)

    def __call__(self, model: Any, **_: Any) -> None:
        self.counts[model.name] += 1


@pytest.mark.slow
def test_a_night_runs_through_the_state_machine_on_parallel_workers(
    aws: LocalAws, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN generated photos, two real ones and the odd and hostile ones, in chunks of three
    keys = [f"incoming/generated/{i:02d}.jpg" for i in range(6)]
    for i, key in enumerate(keys):
        aws.put_photo(key, small_jpeg(i))
    for name in ("skimage/coffee", "skimage/chelsea"):
        keys.append(f"incoming/{name.replace('/', '-')}.png")
        aws.put_photo(keys[-1], photo_bytes(name))
    odd = odd_images()
    for case in odd:
        keys.append(f"incoming/odd/{case.name.replace(' ', '_')}/{case.filename}")
        aws.put_photo(keys[-1], case.data)
    monkeypatch.setenv("REFUND_SORTER_CHUNK_SIZE", "3")
    # WHEN the schedule starts the state machine, with two workers here
    with LocalLambdas(aws.template, log_dir=tmp_path) as lambdas:
        night = run_night(aws, lambdas, workers=2)
        started = lambdas.started
    # THEN it succeeded through plan → map → export, two worker processes at a time
    assert night.status == "SUCCEEDED", night.cause
    (map_run,) = night.events_of("MapRunStarted")
    assert map_run.detail == {"items": -(-len(keys) // 3), "concurrency": 2}
    assert started == 5  # plan, export, retrain and two worker environments (kept warm between chunks)
    # AND every photo has exactly one Result and sits in processed/ or failed/
    assert_each_photo_once(aws, keys)
    summary = summary_of(night)
    failures = sum(case.expect != "ok" for case in odd)
    assert summary["counts"]["failed"] == failures == len(aws.keys("failed/"))
    assert summary["counts"]["classified"] + summary["counts"]["needs_review"] == len(keys) - failures
    assert sum(summary["departments"].values()) == len(keys) - failures
    assert summary["departments"]["food_drink"] >= 1  # the espresso
    assert summary["status"] == "succeeded" and summary["waiting"] == 0
    # AND the day's CSV, the summary and the run's records are in the bucket; the lease is given back
    csv = aws.s3.get_object(Bucket=aws.settings.bucket, Key=summary["export_key"])["Body"].read()
    assert csv.decode("utf-8-sig").count("\r\n") == len(keys) + 1
    stored = json.loads(aws.s3.get_object(Bucket=aws.settings.bucket, Key=summary["summary_key"])["Body"].read())
    assert stored["counts"] == summary["counts"]
    run = summary["summary_key"].rsplit("/", 1)[0]
    assert len(aws.keys(f"{run}/chunks/")) == map_run.detail["items"]
    assert summary["lease_released"] and jobs_items(aws) == []


def test_a_run_that_finds_the_lease_taken_does_nothing(aws: LocalAws, tmp_path: Path) -> None:
    aws.put_photo("incoming/a.jpg", small_jpeg(1))
    # GIVEN another run holding the lease
    assert jobs_table(aws).take_lease(LEASE, "the-other-run", 3600) is not None
    with LocalLambdas(aws.template, log_dir=tmp_path) as lambdas:
        night = run_night(aws, lambdas)
    # THEN this run ends at once, cleanly, having touched nothing
    assert night.status == "SUCCEEDED"
    assert night.output["plan"]["skipped"] and night.output["plan"]["lease_holder"] == "the-other-run"
    assert not night.events_of("MapRunStarted")
    assert aws.items() == [] and aws.keys("incoming/") == ["incoming/a.jpg"]
    lease = jobs_table(aws).lease(LEASE)
    assert lease is not None and lease.holder == "the-other-run"


def test_an_expired_lease_is_taken_over(aws: LocalAws, tmp_path: Path) -> None:
    aws.put_photo("incoming/a.jpg", small_jpeg(1))
    # GIVEN a run that died holding the lease, which has expired since
    long_ago = JobsTable(aws.template.physical_name("JobsTable"), aws.dynamodb, clock=lambda: time.time() - 7200)
    assert long_ago.take_lease(LEASE, "a-dead-run", 3600) is not None
    with LocalLambdas(aws.template, log_dir=tmp_path) as lambdas:
        night = run_night(aws, lambdas)
    assert night.status == "SUCCEEDED" and not night.output["plan"]["skipped"]
    assert_each_photo_once(aws, ["incoming/a.jpg"])


def test_the_plan_looks_up_a_hundred_photos_per_request_and_only_moves_the_classified_ones(
    aws: LocalAws, sorter: Sorter
) -> None:
    # GIVEN 250 photos, 5 of which already have a Result (a run stopped before moving them)
    for i in range(250):
        aws.put_photo(f"incoming/{i:03d}.jpg", b"not read by the plan")
    listed = list(aws.bucket.incoming())
    done = listed[::50]
    for photo in done:
        aws.store.add(Result(id=photo.result_id, source=aws.bucket.uri(photo.key), status=Status.CLASSIFIED,
                             model_version=sorter.model_version))  # fmt: skip
    calls = Calls(aws.dynamodb)
    # WHEN the night is planned in chunks of 100
    settings = aws.settings.model_copy(update={"chunk_size": 100})
    bucket = type(aws.bucket)(settings, aws.s3)
    plan = plan_night(aws.store, bucket, jobs_table(aws), execution="run-1", started="2026-11-25T02:00:00.000Z")
    # THEN one BatchGetItem per 100 photos, not a GetItem each; the classified ones are only to be moved
    assert calls.counts["BatchGetItem"] == 3 and calls.counts["GetItem"] == 0
    assert (plan.to_classify, plan.to_archive, plan.photos) == (245, 5, 250)
    manifest = json.loads(bucket.get_bytes(plan.manifest_key))
    chunks = [Chunk.from_json(bucket.get_bytes(ChunkRef.from_item(item).key)) for item in manifest]
    assert plan.chunks == len(chunks) == 3
    assert all(len(c.classify) <= 100 for c in chunks)
    assert sorted(p.key for c in chunks for p in c.archive) == sorted(p.key for p in done)
    assert sorted(p.key for c in chunks for p in c.photos) == sorted(p.key for p in listed)
    assert plan.day == "2026-11-25" and plan.run == "2026-11-25/run-1"


def test_the_worker_reads_results_in_batches_and_moves_what_was_done_before(aws: LocalAws, sorter: Sorter) -> None:
    keys = [f"incoming/{i:02d}.jpg" for i in range(12)]
    for i, key in enumerate(keys):
        aws.put_photo(key, small_jpeg(i))
    photos = list(aws.bucket.incoming())
    # GIVEN one photo classified earlier (Result stored, still in incoming/)
    (first,) = [o.result for o in sorter.classify([aws.bucket.photo(photos[0])])]
    assert first is not None and aws.store.add(first)
    calls = Calls(aws.dynamodb)
    report = classify_chunk(sorter, aws.store, aws.bucket, jobs_table(aws), Chunk(index=0, classify=photos))
    # THEN one BatchGetItem for the Results and one for in-flight marks; one conditional PutItem per new Result
    assert calls.counts["BatchGetItem"] == 2 and calls.counts["GetItem"] == 0
    assert calls.counts["PutItem"] == len(keys) - 1
    assert report.already_done == 1 and report.classified + report.needs_review + report.failed == len(keys) - 1
    assert_each_photo_once(aws, keys)


def test_a_retried_chunk_marks_each_photo_in_flight_and_clears_the_mark(aws: LocalAws, sorter: Sorter) -> None:
    keys = [f"incoming/{i}.jpg" for i in range(3)]
    for i, key in enumerate(keys):
        aws.put_photo(key, small_jpeg(i))
    calls = Calls(aws.dynamodb)
    chunk = Chunk(index=4, classify=list(aws.bucket.incoming()))
    report = classify_chunk(sorter, aws.store, aws.bucket, jobs_table(aws), chunk, attempt=1)
    assert report.classified + report.needs_review == len(keys) and report.crashed == 0
    # one mark and one clear per photo, none left behind
    assert calls.counts["DeleteItem"] == len(keys) and jobs_items(aws) == []
    assert_each_photo_once(aws, keys)


def test_a_failed_photo_counts_in_no_department(aws: LocalAws, sorter: Sorter) -> None:
    aws.put_photo("incoming/broken.jpg", b"\xff\xd8\xff not really")
    aws.put_photo("incoming/ok.jpg", small_jpeg(3))
    report = classify_chunk(
        sorter, aws.store, aws.bucket, jobs_table(aws), Chunk(index=0, classify=list(aws.bucket.incoming()))
    )
    assert report.failed == 1 and sum(report.departments.values()) == 1


def test_photos_listed_but_gone_count_as_done_by_someone_else(aws: LocalAws, sorter: Sorter) -> None:
    aws.put_photo("incoming/a.jpg", small_jpeg(1))
    (listed,) = list(aws.bucket.incoming())
    gone = StoredPhoto("incoming/vanished.jpg", listed.etag, listed.size)
    report = classify_chunk(sorter, aws.store, aws.bucket, jobs_table(aws), Chunk(index=0, classify=[listed, gone]))
    # a photo gone since the plan was moved by someone else (who stores its Result): no Result of ours, no
    # crashed chunk
    assert (report.classified + report.needs_review + report.failed, report.already_done) == (1, 1)
    assert [item["photo_key"]["S"] for item in aws.items()] == ["processed/a.jpg"]
