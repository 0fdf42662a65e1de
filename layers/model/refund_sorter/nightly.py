"""The nightly job: classify everything in ``incoming/``, store one Result per photo, archive, export.

Safe to run twice at once or to stop half-way: a photo's Result id derives from bucket, key and ETag, the
write is conditional, and a photo leaves ``incoming/`` only after its Result is stored. So a run that is
cut short, or a photo whose read failed transiently, is simply picked up by the next run.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from refund_sorter.errors import NotFoundError
from refund_sorter.results import Status, utc_now

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from refund_sorter.bucket import PhotoBucket, StoredPhoto
    from refund_sorter.pipeline import Photo, Sorter
    from refund_sorter.results import Result
    from refund_sorter.store import ResultStore

logger = logging.getLogger(__name__)

# Threads that store Results and move photos while inference goes on, and how many photos may wait for them.
IO_WORKERS = 8
IO_IN_FLIGHT = 64


@dataclass
class BatchReport:
    """What one run did. ``remaining`` photos were left for the next run (time budget or transient errors)."""

    classified: int = 0
    needs_review: int = 0
    failed: int = 0
    already_done: int = 0
    deferred: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    export_key: str | None = None
    export_rows: int = 0
    errors: list[str] = field(default_factory=list)

    def count(self, status: Status) -> None:
        if status is Status.FAILED:
            self.failed += 1
        elif status is Status.NEEDS_REVIEW:
            self.needs_review += 1
        else:
            self.classified += 1

    @property
    def processed(self) -> int:
        return self.classified + self.needs_review + self.failed

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"processed": self.processed}


def run_nightly(
    sorter: Sorter,
    store: ResultStore,
    bucket: PhotoBucket,
    *,
    seconds_left: Callable[[], float] = lambda: float("inf"),
    on_result: Callable[[BatchReport, Result | None], None] | None = None,
    day: str | None = None,
) -> BatchReport:
    """Classify everything in ``incoming/``, then write ``exports/<day>.csv``.

    Parameters
    ----------
    seconds_left
        Time left in the Lambda invocation; no new photo is started with less than
        ``settings.batch_safety_seconds`` left, and the export is still written.
    on_result
        Called after each photo with the report so far and the photo's Result (``None`` if deferred).
    day
        The export's day (UTC); today by default.
    """
    started = time.monotonic()
    report = classify_stored(sorter, store, bucket, bucket.incoming(), seconds_left=seconds_left, on_result=on_result)
    report.export_key, report.export_rows = write_export(store, bucket, day or utc_now().date().isoformat())
    report.seconds = round(time.monotonic() - started, 3)
    return report


def classify_uploaded(sorter: Sorter, store: ResultStore, bucket: PhotoBucket, keys: Iterable[str]) -> BatchReport:
    """Classify photos minutes after they land (S3 ObjectCreated); the nightly run skips them afterwards."""
    started = time.monotonic()

    def still_waiting() -> Iterator[StoredPhoto]:
        for key in keys:
            if not key.startswith(bucket.settings.incoming_prefix):
                continue
            try:
                yield bucket.head(key)
            except NotFoundError:  # the nightly run (or a retry of this event) got there first
                continue

    report = classify_stored(sorter, store, bucket, still_waiting())
    report.seconds = round(time.monotonic() - started, 3)
    return report


def classify_stored(
    sorter: Sorter,
    store: ResultStore,
    bucket: PhotoBucket,
    photos: Iterable[StoredPhoto],
    *,
    seconds_left: Callable[[], float] = lambda: float("inf"),
    on_result: Callable[[BatchReport, Result | None], None] | None = None,
) -> BatchReport:
    """Classify, store (conditionally) and archive each photo; see the module docstring for why it is safe."""
    return _Run(sorter, store, bucket, seconds_left, on_result).over(photos)


class _Run:
    """One pass over photos. Storing and archiving run on a small I/O pool, so inference never waits on
    DynamoDB or S3 (on moto they cost ~40 ms a photo, as much as decoding and inference together). A failure
    there, after botocore's retries, leaves that photo in ``incoming/`` for the next run."""

    def __init__(
        self,
        sorter: Sorter,
        store: ResultStore,
        bucket: PhotoBucket,
        seconds_left: Callable[[], float],
        on_result: Callable[[BatchReport, Result | None], None] | None,
    ) -> None:
        self.sorter, self.store, self.bucket = sorter, store, bucket
        self.seconds_left, self.on_result = seconds_left, on_result
        self.report = BatchReport()
        self.lock = threading.Lock()
        self.pending: dict[str, StoredPhoto] = {}
        self.slots = threading.BoundedSemaphore(IO_IN_FLIGHT)  # bounds what waits for storage

    def over(self, photos: Iterable[StoredPhoto]) -> BatchReport:
        with ThreadPoolExecutor(max_workers=IO_WORKERS, thread_name_prefix="store") as self.io_pool:
            for outcome in self.sorter.classify(self._not_yet_classified(photos)):
                stored = self.pending.pop(outcome.photo.id)
                if outcome.result is None:  # the read failed for a reason that may pass
                    error = outcome.transient_error or RuntimeError("no result")
                    self._record(None, error=error, source=outcome.photo.source)
                else:
                    self._submit(self._store_and_archive, stored, outcome.result)
        return self.report

    def _not_yet_classified(self, photos: Iterable[StoredPhoto]) -> Iterator[Photo]:
        safety = self.sorter.settings.batch_safety_seconds
        for stored in photos:
            if self.seconds_left() < safety:
                self.report.stopped_early = True
                logger.warning("time budget nearly spent: stopping; the next run takes the rest")
                return
            existing = self.store.get(stored.result_id)
            if existing is not None:  # classified by a run that stopped before archiving it
                self._submit(self._archive_classified, stored, existing)
                continue
            self.pending[stored.result_id] = stored
            yield self.bucket.photo(stored)

    def _submit(self, work: Callable[[StoredPhoto, Result], None], stored: StoredPhoto, result: Result) -> None:
        self.slots.acquire()
        self.io_pool.submit(work, stored, result).add_done_callback(lambda _: self.slots.release())

    def _store_and_archive(self, stored: StoredPhoto, result: Result) -> None:
        try:
            added = self.store.add(result)  # False: a concurrent run stored it first; archiving twice is harmless
            self.bucket.archive(stored, result.error)
        except Exception as exc:  # noqa: BLE001 - whatever failed after retries, the photo waits for the next run
            self._record(result, error=exc, source=self.bucket.uri(stored.key))
        else:
            self._record(result, added=added)

    def _archive_classified(self, stored: StoredPhoto, existing: Result) -> None:
        try:
            self.bucket.archive(stored, existing.error)
        except Exception as exc:  # noqa: BLE001 - as above
            self._record(existing, error=exc, source=self.bucket.uri(stored.key))
        else:
            self._record(existing, added=False)

    def _record(
        self, result: Result | None, *, added: bool = True, error: Exception | None = None, source: str = ""
    ) -> None:
        with self.lock:
            if error is not None:
                logger.warning("leaving %s for the next run: %r", source, error)
                self.report.deferred += 1
                self.report.errors.append(f"{source}: {error!r}")
            elif result is not None and added:
                self.report.count(result.status)
            else:
                self.report.already_done += 1  # by an earlier run that stopped before archiving, or a concurrent one
            if self.on_result:
                self.on_result(self.report, None if error else result)


def write_export(store: ResultStore, bucket: PhotoBucket, day: str) -> tuple[str, int]:
    """Write ``exports/<day>.csv`` from the store; returns its key and row count."""
    from refund_sorter.export import csv_file

    export = csv_file(store.by_day(day))
    key = f"{bucket.settings.exports_prefix}{day}.csv"
    with export.body:
        bucket.put_export(key, export.body)
    return key, export.rows
