"""Classify photos minutes after they land in ``incoming/`` (S3 ObjectCreated): the optional upload trigger."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from refund_sorter.errors import NotFoundError
from refund_sorter.jobs.stored import classify_stored

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from refund_sorter.jobs.report import BatchReport
    from refund_sorter.storage.base import ResultStore
    from refund_sorter.storage.bucket import PhotoBucket, StoredPhoto
    from refund_sorter.vision.sorter import Sorter


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
