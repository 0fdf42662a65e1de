"""The nightly job: classify everything in ``incoming/``, store one Result per photo, archive, export."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from refund_sorter.jobs.stored import classify_stored
from refund_sorter.results import utc_now

if TYPE_CHECKING:
    from collections.abc import Callable

    from refund_sorter.jobs.report import BatchReport
    from refund_sorter.results import Result
    from refund_sorter.storage.base import ResultStore
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter.vision.sorter import Sorter


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


def write_export(store: ResultStore, bucket: PhotoBucket, day: str) -> tuple[str, int]:
    """Write ``exports/<day>.csv`` from the store; returns its key and row count."""
    from refund_sorter.storage.export import csv_file

    export = csv_file(store.by_day(day))
    key = f"{bucket.settings.exports_prefix}{day}.csv"
    with export.body:
        bucket.put_export(key, export.body)
    return key, export.rows
