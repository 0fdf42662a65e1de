"""Exactly once under faults, through the template's state machine with workers in their own processes.

A worker killed mid-chunk (crash, timeout) → the map's retry finishes its photos; a poison photo that kills
every worker touching it → a ``failed`` Result in failed/ on the third try, the rest of its chunk classified;
photos the upload trigger classified meanwhile → skipped, not classified twice; a chunk that keeps failing →
tolerated up to the map's threshold, past it the run fails — and both times the export still writes the
summary, gives the lease back, and emits the metric the alarm watches.

Faults are injected *inside* the worker processes by an initializer the runner calls first in every new
execution environment (as a ``ProcessPoolExecutor`` initializer would): the environment kills itself with
``os._exit`` (what a segfault in a native decoder or the out-of-memory killer looks like from outside) or
sleeps past the function's timeout, at a chosen point. A flag file makes "once" faults happen only once.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from refund_sorter.jobs.upload import classify_uploaded
from refund_sorter_cli.stepfunctions import Event, LocalLambdas
from tests.integration.nightly import assert_each_photo_once, results_per_photo, run_night, small_jpeg, summary_of

if TYPE_CHECKING:
    from refund_sorter.vision.sorter import Sorter
    from tests.integration.conftest import LocalAws

pytestmark = pytest.mark.slow  # whole nights, with workers in processes of their own

POISON = b"POISON-PHOTO"
HANG = b"HANGS-THE-DECODER"
# What the hang costs the test. An invocation that does not hang needs a second or two (onnxruntime is loaded in
# the environment's init, see hang_on_marked_photo); this leaves room for a busy 2-vCPU machine.
HANG_TIMEOUT_SECONDS = 10.0


# ------------------------------------------------------------------------------- faults (run in the workers)


def die_after_storing(results: int, flag: str) -> None:
    """The first environment to store ``results`` Results dies right after the last of them (once)."""
    from refund_sorter.storage.dynamodb import DynamoResultStore

    original = DynamoResultStore.add
    stored = [0]

    def add(self: DynamoResultStore, result: Any) -> bool:
        added = original(self, result)
        stored[0] += 1
        if stored[0] == results and not Path(flag).exists():
            Path(flag).touch()
            os._exit(1)
        return added

    DynamoResultStore.add = add  # type: ignore[method-assign]


def hang_on_marked_photo(flag: str) -> None:
    """Decoding the photo carrying ``HANG`` hangs, the first time, until the function's timeout ends it.

    onnxruntime is loaded here, in the environment's init (which no timeout counts), so that an invocation that
    does not hang takes a second or two, and the test's short timeout only ever ends the hang.
    """
    import onnxruntime

    from refund_sorter.config import Settings
    from refund_sorter.vision import images

    onnxruntime.InferenceSession(str(Settings().model_path), providers=["CPUExecutionProvider"])  # a warm cache
    original = images.decode_photo

    def decode_photo(data: bytes, **limits: Any) -> Any:
        if HANG in data and not Path(flag).exists():
            Path(flag).touch()
            threading.Event().wait()  # never set: the runner kills this environment at the timeout
        return original(data, **limits)

    images.decode_photo = decode_photo


def crash_on_poison() -> None:
    """Decoding the photo carrying ``POISON`` kills the process, every time."""
    from refund_sorter.vision import images

    original = images.decode_photo

    def decode_photo(data: bytes, **limits: Any) -> Any:
        if POISON in data:
            os._exit(139)
        return original(data, **limits)

    images.decode_photo = decode_photo


def fail_chunk(index: int) -> None:
    """The worker fails (raises) on the chunk ``index``, every time."""
    from refund_sorter.jobs import worker

    original = worker.classify_chunk

    def classify_chunk(*args: Any, **kwargs: Any) -> Any:
        chunk = args[4]
        if chunk.index == index:
            raise RuntimeError(f"chunk {index} always fails here")
        return original(*args, **kwargs)

    worker.classify_chunk = classify_chunk


# ------------------------------------------------------------------------------------------------ helpers


def upload(aws: LocalAws, count: int, marked: dict[int, bytes] | None = None) -> list[str]:
    keys = [f"incoming/photo-{i:02d}.jpg" for i in range(count)]
    for i, key in enumerate(keys):
        aws.put_photo(key, small_jpeg(i, (marked or {}).get(i, b"")))
    return keys


def retries_of(night: Any, error: str) -> list[Event]:
    return [e for e in night.events_of("ChildTaskRetried") if e.detail["error"] == error]


def emitted_metrics(log_dir: Path, function: str) -> dict[str, float]:
    """The CloudWatch metrics (embedded metric format lines) a function's environments printed."""
    metrics: dict[str, float] = {}
    for log in log_dir.glob(f"{function}-*.log"):
        for line in log.read_text(encoding="utf-8").splitlines():
            if '"_aws"' in line:
                document = json.loads(line)
                for definition in document["_aws"]["CloudWatchMetrics"]:
                    for metric in definition["Metrics"]:
                        values = document[metric["Name"]]  # Powertools writes a list of values
                        metrics[metric["Name"]] = metrics.get(metric["Name"], 0.0) + sum(as_values(values))
    return metrics


def as_values(value: Any) -> list[float]:
    return [float(v) for v in value] if isinstance(value, list) else [float(value)]


@pytest.fixture
def chunks_of_three(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUND_SORTER_CHUNK_SIZE", "3")


# ------------------------------------------------------------------------------------------------ the tests


@pytest.mark.usefixtures("chunks_of_three")
def test_a_worker_that_dies_mid_chunk_is_finished_by_the_maps_retry(aws: LocalAws, tmp_path: Path) -> None:
    keys = upload(aws, 6)
    die = functools.partial(die_after_storing, 2, str(tmp_path / "died"))
    with LocalLambdas(aws.template, initializer=die, log_dir=tmp_path / "logs") as lambdas:
        night = run_night(aws, lambdas, workers=2)
    # THEN the dead worker's chunk was retried (Lambda: "Runtime exited") and finished
    assert (tmp_path / "died").exists()
    assert len(retries_of(night, "Runtime.ExitError")) == 1
    assert night.status == "SUCCEEDED"
    summary = summary_of(night)
    assert summary["chunks_failed"] == 0 and summary["waiting"] == 0
    # AND none of its photos was classified twice: the retry moved what the dead worker had stored
    assert_each_photo_once(aws, keys)
    assert summary["counts"]["already_done"] >= 1


@pytest.mark.usefixtures("chunks_of_three")
def test_a_worker_that_hangs_is_killed_at_its_timeout_and_the_retry_finishes(aws: LocalAws, tmp_path: Path) -> None:
    keys = upload(aws, 6, marked={4: HANG})
    hang = functools.partial(hang_on_marked_photo, str(tmp_path / "hung"))
    timeouts = {"ClassifyChunkFunction": HANG_TIMEOUT_SECONDS}
    no_safety_margin = {"REFUND_SORTER_BATCH_SAFETY_SECONDS": "0"}  # the short test timeout is all work time
    with LocalLambdas(
        aws.template, initializer=hang, timeouts=timeouts, log_dir=tmp_path / "logs", environment=no_safety_margin
    ) as lambdas:
        night = run_night(aws, lambdas, workers=2)
    assert (tmp_path / "hung").exists()
    assert len(retries_of(night, "Sandbox.Timedout")) == 1
    assert night.status == "SUCCEEDED"
    assert summary_of(night)["waiting"] == 0
    assert_each_photo_once(aws, keys)


def test_a_poison_photo_fails_alone_and_its_chunk_goes_through(aws: LocalAws, tmp_path: Path) -> None:
    keys = upload(aws, 5, marked={2: POISON})
    with LocalLambdas(aws.template, initializer=crash_on_poison, log_dir=tmp_path / "logs") as lambdas:
        night = run_night(aws, lambdas, workers=1)
    # THEN: the first try and the careful retry die on it; the third try marks it failed and does the rest
    assert len(retries_of(night, "Runtime.ExitError")) == 2
    assert night.status == "SUCCEEDED"
    summary = summary_of(night)
    assert summary["counts"]["crashed"] == 1 and summary["counts"]["failed"] == 1
    assert summary["chunks_failed"] == 0 and summary["waiting"] == 0
    assert_each_photo_once(aws, keys)
    assert aws.keys("failed/") == ["failed/photo-02.jpg"]
    head = aws.s3.head_object(Bucket=aws.settings.bucket, Key="failed/photo-02.jpg")
    assert head["Metadata"]["error-code"] == "processing_crashed"
    (poisoned,) = [i for i in aws.items() if i["source"]["S"].endswith("photo-02.jpg")]
    assert poisoned["status"]["S"] == "failed" and poisoned["error"]["M"]["code"]["S"] == "processing_crashed"
    # no in-flight mark is left behind
    assert aws.dynamodb.scan(TableName=aws.template.physical_name("JobsTable"))["Items"] == []


def test_photos_the_upload_trigger_classified_meanwhile_are_skipped(
    aws: LocalAws, sorter: Sorter, tmp_path: Path
) -> None:
    keys = upload(aws, 6)

    def upload_trigger_runs_after_the_plan(event: Event) -> None:
        if event.kind == "TaskSucceeded" and event.state == "Plan":
            # two photos classified and moved by the trigger; a third stored, its move not done yet
            classify_uploaded(sorter, aws.store, aws.bucket, keys[:2])
            third = aws.bucket.head(keys[2])
            result = sorter.classify_one(aws.bucket.photo(third))
            assert aws.store.add(result)

    with LocalLambdas(aws.template, log_dir=tmp_path) as lambdas:
        night = run_night(aws, lambdas, on_event=upload_trigger_runs_after_the_plan)
    assert night.status == "SUCCEEDED"
    summary = summary_of(night)
    assert summary["photos"] == 6  # planned before the trigger ran
    assert summary["counts"]["already_done"] == 3
    assert summary["counts"]["classified"] + summary["counts"]["needs_review"] == 3
    assert_each_photo_once(aws, keys)
    assert set(results_per_photo(aws).values()) == {1}


@pytest.mark.usefixtures("chunks_of_three")
def test_a_chunk_that_keeps_failing_fails_the_run_past_the_threshold_and_the_export_still_runs(
    aws: LocalAws, tmp_path: Path
) -> None:
    keys = upload(aws, 6)  # two chunks: one failing is 50 %, more than the 10 % tolerated
    logs = tmp_path / "logs"
    with LocalLambdas(aws.template, initializer=functools.partial(fail_chunk, 1), log_dir=logs) as lambdas:
        # one at a time: chunk 0 is done before chunk 1 fails (a chunk still running when the map run fails is
        # stopped, as in AWS: tests/unit/test_stepfunctions_interpreter.py)
        night = run_night(aws, lambdas, workers=1)
    # THEN the chunk was tried three times, the map failed, and the run failed after the export
    assert len([e for e in night.events_of("ChildTaskFailed") if e.detail["input"]["chunk"]["index"] == 1]) == 3
    assert night.status == "FAILED" and night.error == "NightlyChunksFailed"
    summary = json.loads(aws.s3.get_object(Bucket=aws.settings.bucket, Key=_summary_key(aws))["Body"].read())
    assert summary["status"] == "failed" and summary["chunks_failed"] == 1
    (failure,) = summary["failed_chunks"]
    assert failure["chunk"] == 1 and failure["error"] == "RuntimeError" and failure["photos"] == 3
    assert summary["waiting"] == 3 and summary["lease_released"]
    # the failed chunk's photos wait in incoming/, untouched, for the next night; the others are done
    assert len(aws.keys("incoming/")) == 3 and len(aws.items()) == 3
    assert emitted_metrics(logs, "ExportFunction")["NightlyChunksFailed"] == 1
    # AND the next night (the fault gone) finishes them, each photo once
    with LocalLambdas(aws.template, log_dir=logs) as lambdas:
        assert run_night(aws, lambdas).status == "SUCCEEDED"
    assert_each_photo_once(aws, keys)


def test_a_failing_chunk_within_the_threshold_is_tolerated_and_reported(
    aws: LocalAws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFUND_SORTER_CHUNK_SIZE", "1")
    upload(aws, 11)  # eleven chunks: one failing is 9 %, within the 10 % tolerated
    logs = tmp_path / "logs"
    with LocalLambdas(aws.template, initializer=functools.partial(fail_chunk, 0), log_dir=logs) as lambdas:
        night = run_night(aws, lambdas, workers=2)
    assert night.status == "SUCCEEDED"
    summary = summary_of(night)
    assert summary["status"] == "tolerated_failures" and summary["chunks_failed"] == 1
    assert summary["chunks_succeeded"] == 10 and summary["waiting"] == 1
    assert emitted_metrics(logs, "ExportFunction")["NightlyChunksFailed"] == 1


def _summary_key(aws: LocalAws) -> str:
    (key,) = [k for k in aws.keys("runs/") if k.endswith("/summary.json")]
    return key
