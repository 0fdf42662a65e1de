"""Classify photos that sit in the bucket: the step the nightly job and the upload trigger share.

Safe to run twice at once or to stop half-way: a photo's Result id derives from bucket, key and ETag, the
write is conditional, and a photo leaves ``incoming/`` only after its Result is stored. So a run that is
cut short, or a photo whose read failed transiently (or whose "already done?" lookup failed), is simply
picked up by the next run.

A photo is moved in three steps, so that its Result always names a copy that exists: copy it to
``processed/`` or ``failed/`` (the copy's metadata names the Result), store the Result saying where the photo
is now, delete the original.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING

from refund_sorter.errors import StorageError
from refund_sorter.heads.embeddings import EmbeddingLog
from refund_sorter.jobs.report import BatchReport
from refund_sorter.results import Status

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from refund_sorter.photos import Photo
    from refund_sorter.results import Result
    from refund_sorter.storage.base import ResultStore
    from refund_sorter.storage.bucket import ArchivedCopy, PhotoBucket, StoredPhoto
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
        self.to_delete: list[ArchivedCopy] = []
        # The run's features, one S3 object at the end (heads.embeddings), marked with the backbone that made them.
        self.embeddings = EmbeddingLog(bucket, sorter.classifier.info.version)

    def over(self, photos: Iterable[StoredPhoto]) -> BatchReport:
        with ThreadPoolExecutor(max_workers=IO_WORKERS, thread_name_prefix="store") as self.io_pool:
            for outcome in self.sorter.classify(self._not_yet_classified(photos), thumbnails=True):
                stored = self.pending.pop(outcome.photo.id)
                if outcome.result is None:  # the read failed for a reason that may pass
                    error = outcome.transient_error or RuntimeError("no result")
                    self._record(None, error=error, source=outcome.photo.source)
                else:
                    self.embeddings.record(outcome.result.id, outcome.embedding)
                    store = partial(self._store_and_archive, thumbnail=outcome.thumbnail)
                    self._submit(store, stored, outcome.result)
        self._delete_originals(self.to_delete)  # the last, partial batch (every copy is done by now)
        self.embeddings.flush()
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
                yield self.bucket.photo(stored, to_archive=True)

    def _submit(self, work: Callable[[StoredPhoto, Result], None], stored: StoredPhoto, result: Result) -> None:
        self.slots.acquire()
        self.io_pool.submit(work, stored, result).add_done_callback(lambda _: self.slots.release())

    def _store_and_archive(self, stored: StoredPhoto, result: Result, thumbnail: bytes | None = None) -> None:
        # Only for the photos a person will look at: an auto-sorted photo's thumbnail would be one more PUT (a third
        # of a night's cost per photo, docs/scale.md) that the review page never asks for; the photo route falls
        # back to the original. First, so a stored needs_review Result has its thumbnail when the page asks.
        if thumbnail is not None and result.status == Status.NEEDS_REVIEW:
            self._keep_thumbnail(result.id, thumbnail)
        try:
            copy = self.bucket.copy_to_archive(stored, result.id, result.error)
            if copy is None:  # moved by a concurrent run, which stores its Result, or replaced by a new upload
                self._record(result, added=False)
                return
            # False: a concurrent run stored it first; copying and deleting twice is harmless
            added = self.store.add(_kept_at(result, copy.key, self.bucket.uri(copy.key)))
            self._delete_later(copy)
        except Exception as exc:  # noqa: BLE001 - whatever failed after retries, the photo waits for the next run
            self._record(result, error=exc, source=self.bucket.uri(stored.key))
        else:
            self._record(result, added=added)

    def _keep_thumbnail(self, result_id: str, thumbnail: bytes) -> None:
        try:
            self.bucket.put_thumbnail(result_id, thumbnail)
        except Exception as exc:  # noqa: BLE001 - a missing thumbnail only means the page shows the original
            logger.warning("no thumbnail kept for %s: %r", result_id, exc)

    def _archive_classified(self, stored: StoredPhoto, existing: Result) -> None:
        try:
            copy = self.bucket.copy_to_archive(stored, existing.id, existing.error)
            if copy is not None:
                if existing.photo_key != copy.key:  # e.g. classified through the API while in incoming/
                    self.store.relocate(existing.id, copy.key, self.bucket.uri(copy.key))
                self._delete_later(copy)
        except Exception as exc:  # noqa: BLE001 - as above
            self._record(existing, error=exc, source=self.bucket.uri(stored.key))
        else:
            self._record(existing, added=False)

    def _delete_later(self, copy: ArchivedCopy) -> None:
        """The original goes with the next batch of them (one DeleteObjects request for many photos)."""
        with self.lock:
            self.to_delete.append(copy)
            if len(self.to_delete) < DELETE_BATCH:
                return
            batch, self.to_delete = self.to_delete, []
        self._delete_originals(batch)

    def _delete_originals(self, batch: list[ArchivedCopy]) -> None:
        if not batch:
            return
        try:
            refused, reason = self.bucket.delete_originals(batch), "S3 refused"
        except Exception as exc:  # noqa: BLE001 - the Results are stored: the next run moves these photos
            refused, reason = [copy.original.key for copy in batch], repr(exc)
        if refused:
            message = (
                f"could not delete {len(refused)} originals after copying them ({reason}); the next run moves them"
            )
            logger.warning(message)
            with self.lock:
                self.report.errors.append(message)

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


def file_result(store: ResultStore, bucket: PhotoBucket, stored: StoredPhoto, result: Result) -> bool:
    """One photo the three steps of the module docstring, outside a run (a poison photo's ``failed`` Result).
    Returns whether this call stored the Result (False: it was stored before)."""
    copy = bucket.copy_to_archive(stored, result.id, result.error)
    if copy is None:  # moved or replaced since it was listed: store the Result as it is, naming the original
        return store.add(result)
    added = store.add(_kept_at(result, copy.key, bucket.uri(copy.key)))
    bucket.delete_original(copy)
    return added


def _kept_at(result: Result, key: str, uri: str) -> Result:
    """The Result, saying where its photo is kept now."""
    return result.model_copy(update={"photo_key": key, "source": uri})
