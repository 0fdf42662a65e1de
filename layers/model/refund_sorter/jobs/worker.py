"""One chunk of the night, in one worker invocation (the Distributed Map's child): classify, store, move.

Exactly once, whatever happens to the worker:

- Results are written with a conditional put under an id derived from bucket, key and ETag, and a photo
  leaves ``incoming/`` only after its Result is stored. A worker killed half-way (timeout, crash) leaves each
  photo either untouched, stored but not moved, or done; the map's retry (or the next night) looks every
  photo up first (BatchGetItem), moves what is stored and classifies only the rest. A photo the upload
  trigger classified meanwhile is looked up the same way and never classified twice.
- A *poison* photo (one that hangs the decoder until the timeout, crashes it, or exhausts memory) would kill
  every retry of its chunk. So a retry (``attempt`` ≥ 1: the previous invocation died) goes photo by photo and
  marks each one in flight in the jobs table before touching it; a mark still there on the next try names the
  photo that killed the worker, and that photo becomes a ``failed`` Result (``processing_crashed``) in
  ``failed/`` instead. The first attempt runs at full speed and writes no marks.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from refund_sorter.errors import ErrorCode, ImageError
from refund_sorter.jobs.report import BatchReport
from refund_sorter.jobs.stored import classify_stored, file_result
from refund_sorter.results import Status

if TYPE_CHECKING:
    from collections.abc import Callable

    from refund_sorter.jobs.chunks import Chunk
    from refund_sorter.results import Result
    from refund_sorter.storage.base import ResultStore
    from refund_sorter.storage.bucket import PhotoBucket, StoredPhoto
    from refund_sorter.storage.jobs_table import JobsTable
    from refund_sorter.vision.sorter import Sorter

# What a chunk report keeps of per-photo errors: enough to see what went wrong, small enough for the map's output.
REPORTED_ERRORS = 5


@dataclass
class ChunkReport:
    """What one invocation did with its chunk: the map's child output, summed up by the export step."""

    chunk: int
    attempt: int
    photos: int
    classified: int = 0
    needs_review: int = 0
    failed: int = 0
    crashed: int = 0  # of ``failed``: photos that killed an earlier try of this chunk
    already_done: int = 0
    deferred: int = 0
    left: int = 0  # not reached before the time budget ran out: the next night takes them
    departments: dict[str, int] = field(default_factory=dict)
    model_versions: dict[str, int] = field(default_factory=dict)  # the model each stored Result names
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def classify_chunk(
    sorter: Sorter,
    store: ResultStore,
    bucket: PhotoBucket,
    jobs: JobsTable,
    chunk: Chunk,
    *,
    attempt: int = 0,
    seconds_left: Callable[[], float] = lambda: float("inf"),
) -> ChunkReport:
    """Classify, store and move the chunk's photos; see the module docstring for the guarantees.

    Parameters
    ----------
    attempt
        How many times this chunk was tried before (Step Functions' ``$$.State.RetryCount``): from 1 on, the
        previous invocation died, so photos go one at a time with in-flight marks.
    seconds_left
        Time left in the invocation; no new photo is started with less than ``batch_safety_seconds`` left.
    """
    started = time.monotonic()
    report = BatchReport()
    departments: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    label = f"{chunk.index}"

    def run(photos: list[StoredPhoto]) -> None:
        tally = _DepartmentTally(departments, versions)  # one per pass: each pass has a report of its own
        report.absorb(classify_stored(sorter, store, bucket, photos, seconds_left=seconds_left, on_result=tally))

    crashed = _fail_poison_photos(
        sorter, store, bucket, jobs, photos=chunk.classify, report=report, tally=_DepartmentTally(departments, versions)
    )
    remaining = [p for p in chunk.classify if p.result_id not in crashed]
    run(chunk.archive)
    if attempt == 0:
        run(remaining)
    else:  # the last try died: one photo at a time, each marked while in hand
        for photo in remaining:
            if report.stopped_early or seconds_left() < sorter.settings.batch_safety_seconds:
                report.stopped_early = True
                break
            jobs.mark_in_flight(photo.result_id, label)
            run([photo])
            jobs.clear_in_flight(photo.result_id)  # not reached if this photo kills the worker
    done = report.processed + report.already_done + report.deferred
    return ChunkReport(
        chunk=chunk.index,
        attempt=attempt,
        photos=len(chunk.photos),
        classified=report.classified,
        needs_review=report.needs_review,
        failed=report.failed,
        crashed=len(crashed),
        already_done=report.already_done,
        deferred=report.deferred,
        left=max(0, len(chunk.photos) - done),
        departments=dict(departments),
        model_versions=dict(versions),
        errors=report.errors[:REPORTED_ERRORS],
        seconds=round(time.monotonic() - started, 3),
    )


def _fail_poison_photos(
    sorter: Sorter,
    store: ResultStore,
    bucket: PhotoBucket,
    jobs: JobsTable,
    *,
    photos: list[StoredPhoto],
    report: BatchReport,
    tally: _DepartmentTally,
) -> set[str]:
    """Store a ``failed`` Result for each photo still marked in flight (it killed a try); returns their ids."""
    suspects = jobs.in_flight(p.result_id for p in photos)
    if not suspects:
        return set()
    known = store.get_many(suspects)  # stored after all, before the worker died: the normal path moves it
    crashed = set()
    for photo in photos:
        if photo.result_id not in suspects or photo.result_id in known:
            continue
        error = ImageError(
            ErrorCode.PROCESSING_CRASHED,
            "the worker stopped (crashed, ran out of memory or time) while classifying this photo alone; "
            "it is not tried again",
        )
        result = sorter.failed_result(bucket.photo(photo), error)
        added = file_result(store, bucket, photo, result)
        jobs.clear_in_flight(photo.result_id)
        crashed.add(photo.result_id)
        if added:
            report.count(result.status)
        else:
            report.already_done += 1
        tally(report, result)
    return crashed


class _DepartmentTally:
    """Counts the department of every Result one pass stored (the ``on_result`` of one classify_stored call).

    ``classify_stored`` reports Results it found already stored the same way, after counting them in its
    report's ``already_done``; those were counted by the run that stored them, so they are skipped here.
    """

    def __init__(self, departments: Counter[str], versions: Counter[str] | None = None) -> None:
        self.departments = departments
        self.versions: Counter[str] = versions if versions is not None else Counter()
        self.already_done = 0  # the pass's report's already_done, as last seen

    def __call__(self, report: BatchReport, result: Result | None) -> None:
        new = report.already_done == self.already_done
        self.already_done = report.already_done
        if new and result is not None and result.status is not Status.FAILED and result.prediction:
            self.departments[result.prediction] += 1
            self.versions[result.model_version] += 1
