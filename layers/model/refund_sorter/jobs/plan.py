"""The nightly state machine's first step: take the run's lease, list ``incoming/``, write the work as chunks.

What is in ``incoming/`` is listed page by page; for every 100 photos one BatchGetItem asks which already have
a Result (classified by the upload trigger, or by a run that stopped before moving them). Those are not
classified again: they go into the chunks' ``archive`` lists, to be moved only. The rest fill the chunks'
``classify`` lists, ``chunk_size`` photos each. The lookups run on a few threads while the listing goes on,
and nothing holds more than a few pages in memory, so a night of a million photos plans in minutes.

Two runs never overlap: the plan takes the lease ``nightly`` (a conditional put in the jobs table) and a run
that finds it taken returns ``skipped`` at once; the export step gives it back.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING

from refund_sorter.jobs.chunks import Chunk, ChunkRef

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from refund_sorter.config import Settings
    from refund_sorter.results import Result
    from refund_sorter.storage.base import ResultStore
    from refund_sorter.storage.bucket import PhotoBucket, StoredPhoto
    from refund_sorter.storage.jobs_table import JobsTable

logger = logging.getLogger(__name__)

LEASE = "nightly"
LOOKUP_KEYS = 100  # BatchGetItem's limit
LOOKUP_THREADS = 8
LOOKUPS_AHEAD = 16  # batches of 100 looked up while the listing goes on: bounds memory
# An archive-only photo is only moved (a copy and a delete): a chunk takes this many of them per photo to classify.
ARCHIVE_WEIGHT = 10


@dataclass
class Plan:
    """What the plan step decided; the state machine passes it on (it must stay small: no photo lists)."""

    run: str
    day: str
    execution: str
    skipped: bool = False
    lease_holder: str = ""
    bucket: str = ""
    manifest_key: str = ""
    results_prefix: str = ""
    summary_key: str = ""
    photos: int = 0
    to_classify: int = 0
    to_archive: int = 0
    chunks: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def run_prefix(settings: Settings, day: str, execution: str) -> str:
    return f"{settings.runs_prefix}{day}/{execution}/"


def plan_night(
    store: ResultStore, bucket: PhotoBucket, jobs: JobsTable, *, execution: str, started: str | datetime
) -> Plan:
    """Plan the night for the state-machine execution ``execution`` (its name), started at ``started``.

    Parameters
    ----------
    execution
        The execution's name: unique per state machine, so it names the run (and holds the lease).
    started
        The execution's start time (``$$.Execution.StartTime``, ISO 8601): the run's day, in UTC.
    """
    began = time.monotonic()
    settings = bucket.settings
    moment = started if isinstance(started, datetime) else datetime.fromisoformat(started)
    day = moment.astimezone(UTC).date().isoformat()
    plan = Plan(run=f"{day}/{execution}", day=day, execution=execution, bucket=bucket.name)
    if jobs.take_lease(LEASE, execution, settings.run_lease_seconds) is None:
        holder = jobs.lease(LEASE)
        plan.skipped, plan.lease_holder = True, holder.holder if holder else "?"
        logger.warning("another nightly run (%s) is still going: this one stops here", plan.lease_holder)
        return plan
    prefix = run_prefix(settings, day, execution)
    plan.manifest_key = f"{prefix}manifest.json"
    plan.results_prefix = f"{prefix}map"
    plan.summary_key = f"{prefix}summary.json"
    with ThreadPoolExecutor(max_workers=LOOKUP_THREADS, thread_name_prefix="plan") as pool:
        writer = _ChunkWriter(bucket, prefix, settings.chunk_size, pool)
        for photo, result in _with_results(store, bucket.incoming(), pool):
            writer.add(photo, archive_only=result is not None)
        refs = writer.close()
    bucket.put_bytes(plan.manifest_key, _json_array(ref.as_item() for ref in refs))
    plan.chunks = len(refs)
    plan.to_classify, plan.to_archive = writer.to_classify, writer.to_archive
    plan.photos = plan.to_classify + plan.to_archive
    plan.seconds = round(time.monotonic() - began, 3)
    logger.info("night planned", extra=plan.as_dict())
    return plan


def _with_results(
    store: ResultStore, photos: Iterable[StoredPhoto], pool: ThreadPoolExecutor
) -> Iterator[tuple[StoredPhoto, Result | None]]:
    """Each photo with its Result if it has one; the lookups (one BatchGetItem per 100) run ahead on ``pool``."""
    ahead: deque[tuple[list[StoredPhoto], Future[dict[str, Result]]]] = deque()
    source = iter(photos)
    while batch := list(islice(source, LOOKUP_KEYS)):
        ahead.append((batch, pool.submit(store.get_many, [p.result_id for p in batch])))
        if len(ahead) >= LOOKUPS_AHEAD:
            yield from _settle(*ahead.popleft())
    while ahead:
        yield from _settle(*ahead.popleft())


def _settle(batch: list[StoredPhoto], lookup: Future[dict[str, Result]]) -> Iterator[tuple[StoredPhoto, Result | None]]:
    known = lookup.result()
    for photo in batch:
        yield photo, known.get(photo.result_id)


class _ChunkWriter:
    """Fills chunks and writes each to S3 (on the pool) as soon as it is full."""

    def __init__(self, bucket: PhotoBucket, prefix: str, chunk_size: int, pool: ThreadPoolExecutor) -> None:
        self.bucket, self.prefix, self.chunk_size, self.pool = bucket, prefix, chunk_size, pool
        self.refs: list[ChunkRef] = []
        self.uploads: list[Future[None]] = []
        self.current = Chunk(index=0)
        self.to_classify = self.to_archive = 0

    def add(self, photo: StoredPhoto, *, archive_only: bool) -> None:
        if archive_only:
            self.current.archive.append(photo)
            self.to_archive += 1
        else:
            self.current.classify.append(photo)
            self.to_classify += 1
        if len(self.current.classify) + len(self.current.archive) / ARCHIVE_WEIGHT >= self.chunk_size:
            self._flush()

    def close(self) -> list[ChunkRef]:
        if self.current.photos:
            self._flush()
        for upload in self.uploads:
            upload.result()  # a failed write fails the plan (the state machine retries it)
        return self.refs

    def _flush(self) -> None:
        chunk = self.current
        key = f"{self.prefix}chunks/{chunk.index:05d}.json"
        self.uploads.append(self.pool.submit(self.bucket.put_bytes, key, chunk.to_json()))
        self.refs.append(ChunkRef(index=chunk.index, key=key, photos=len(chunk.photos)))
        self.current = Chunk(index=chunk.index + 1)


def _json_array(items: Iterable[dict[str, object]]) -> bytes:
    import json

    return json.dumps(list(items), separators=(",", ":")).encode()
