"""Classify photos minutes after they land in ``incoming/`` (S3 ObjectCreated): the optional upload trigger."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from refund_sorter.errors import NotFoundError, StorageError
from refund_sorter.jobs.stored import classify_stored

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from refund_sorter.jobs.report import BatchReport
    from refund_sorter.storage.base import ResultStore
    from refund_sorter.storage.bucket import PhotoBucket, StoredPhoto
    from refund_sorter.vision.sorter import Sorter

logger = logging.getLogger(__name__)


def classify_uploaded(sorter: Sorter, store: ResultStore, bucket: PhotoBucket, keys: Iterable[str]) -> BatchReport:
    """Classify photos minutes after they land (S3 ObjectCreated); the nightly run skips them afterwards.

    A photo S3 cannot tell us about now is left for the nightly run (counted as deferred), like a photo
    whose classification could not be stored.
    """
    started = time.monotonic()
    unreachable: list[str] = []

    def still_waiting() -> Iterator[StoredPhoto]:
        for key in keys:
            if not key.startswith(bucket.settings.incoming_prefix):
                continue
            try:
                yield bucket.head(key)
            except NotFoundError:  # the nightly run (or a retry of this event) got there first
                continue
            except StorageError as exc:
                logger.warning("leaving %s for the nightly run: %r", bucket.uri(key), exc)
                unreachable.append(f"{bucket.uri(key)}: {exc!r}")

    report = classify_stored(sorter, store, bucket, still_waiting())
    report.deferred += len(unreachable)
    report.errors += unreachable
    report.seconds = round(time.monotonic() - started, 3)
    return report
