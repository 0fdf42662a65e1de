"""Classify photos that sit in the bucket: the step the nightly job and the upload trigger share.

Safe to run twice at once or to stop half-way: a photo's Result id derives from bucket, key and ETag, the
write is conditional, and a photo leaves ``incoming/`` only after its Result is stored. So a run that is
cut short, or a photo whose read failed transiently, is simply picked up by the next run.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import TYPE_CHECKING

from refund_sorter.errors import StorageError
from refund_sorter.jobs.report import BatchReport

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from refund_sorter.photos import Photo
    from refund_sorter.results import Result
    from refund_sorter.storage.base import ResultStore
    from refund_sorter.storage.bucket import ArchiveCopy, PhotoBucket, StoredPhoto
    from refund_sorter.vision.sorter import Sorter

logger = logging.getLogger(__name__)

# Threads that store Results and move photos while inference goes on, and how many photos may wait for them.
IO_WORKERS = 8
IO_IN_FLIGHT = 64
# Photos whose Results are looked up together (DynamoDB's BatchGetItem takes up to 100 keys).
LOOKUP_BATCH = 100
# Originals deleted together (one DeleteObjects request) once their copies are in processed/ or failed/.
DELETE_BATCH = 50


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
    there, after botocore's retries, leaves that photo in ``incoming/`` for the next run.

    Reads and writes are batched where their meaning allows: which photos have a Result is asked 100 at a
    time (BatchGetItem), and the originals are deleted 50 at a time (DeleteObjects) after their copies exist.
    Results themselves are written one conditional PutItem each, on the I/O pool: BatchWriteItem cannot be
    conditional, and an unconditional write could overwrite a person's review."""

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
        self.to_delete: list[ArchiveCopy] = []

    def over(self, photos: Iterable[StoredPhoto]) -> BatchReport:
        with ThreadPoolExecutor(max_workers=IO_WORKERS, thread_name_prefix="store") as self.io_pool:
            for outcome in self.sorter.classify(self._not_yet_classified(photos)):
                stored = self.pending.pop(outcome.photo.id)
                if outcome.result is None:  # the read failed for a reason that may pass
                    error = outcome.transient_error or RuntimeError("no result")
                    self._record(None, error=error, source=outcome.photo.source)
                else:
                    self._submit(self._store_and_archive, stored, outcome.result)
        self._delete_originals(self.to_delete)  # the last, partial batch (every copy is done by now)
        return self.report

    def _not_yet_classified(self, photos: Iterable[StoredPhoto]) -> Iterator[Photo]:
        safety = self.sorter.settings.batch_safety_seconds
        source = iter(photos)
        # Which photos have a Result already: one BatchGetItem per LOOKUP_BATCH photos, not a GetItem each.
        while batch := list(islice(source, LOOKUP_BATCH)):
            try:
                known = self.store.get_many([stored.result_id for stored in batch])
            except StorageError as exc:  # cannot tell what is done: those photos wait for the next run
                for stored in batch:
                    self._record(None, error=exc, source=self.bucket.uri(stored.key))
                continue
            for stored in batch:
                if self.seconds_left() < safety:
                    self.report.stopped_early = True
                    logger.warning("time budget nearly spent: stopping; the next run takes the rest")
                    return
                existing = known.get(stored.result_id)
                if existing is not None:  # classified by a run (or the upload trigger) that stopped before moving it
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
            self._move(stored, result)
        except Exception as exc:  # noqa: BLE001 - whatever failed after retries, the photo waits for the next run
            self._record(result, error=exc, source=self.bucket.uri(stored.key))
        else:
            self._record(result, added=added)

    def _archive_classified(self, stored: StoredPhoto, existing: Result) -> None:
        try:
            self._move(stored, existing)
        except Exception as exc:  # noqa: BLE001 - as above
            self._record(existing, error=exc, source=self.bucket.uri(stored.key))
        else:
            self._record(existing, added=False)

    def _move(self, stored: StoredPhoto, result: Result) -> None:
        """Copy to processed/ or failed/ now; the original is deleted with the next batch of them."""
        copy = self.bucket.copy_to_archive(stored, result.error)
        if copy is None:  # gone: moved by someone else since it was listed
            return
        with self.lock:
            self.to_delete.append(copy)
            if len(self.to_delete) < DELETE_BATCH:
                return
            batch, self.to_delete = self.to_delete, []
        self._delete_originals(batch)

    def _delete_originals(self, batch: list[ArchiveCopy]) -> None:
        if not batch:
            return
        try:
            refused = self.bucket.delete_originals(batch)
        except Exception as exc:  # noqa: BLE001 - the Results are stored: the next run moves these photos
            refused = [copy.original for copy in batch]
            logger.warning("could not delete %d originals: %r", len(batch), exc)
        if refused:
            with self.lock:
                self.report.errors.append(f"{len(refused)} photos copied but left in incoming/ for the next run")

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
