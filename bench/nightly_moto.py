"""The nightly job in one process against moto: ``run_nightly`` over the corpus uploaded to ``incoming/`` (S3
reads, classification, DynamoDB puts, the archive, the CSV export), and how long the calling thread waits on
storage per photo."""

from __future__ import annotations

import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from refund_sorter.vision.sorter import Sorter


def batch_on_moto(sorter: Sorter, datas: list[bytes], names: list[str]) -> dict[str, Any]:
    """Upload the corpus to incoming/ and time ``run_nightly`` (DynamoDB store, archive, CSV export)."""
    import boto3

    from refund_sorter.config import get_settings
    from refund_sorter.jobs.nightly import run_nightly
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter.storage.dynamodb import DynamoResultStore
    from refund_sorter_cli.local_stack import function_environment
    from refund_sorter_cli.template import Template

    template = Template()
    for key, value in function_environment(template, "ClassifyChunkFunction").items():
        os.environ[key] = value
    get_settings.cache_clear()
    settings = get_settings()
    s3 = boto3.client("s3")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(
            pool.map(
                lambda kv: s3.put_object(Bucket=settings.bucket, Key=f"incoming/{kv[0]}", Body=kv[1]),
                zip(names, datas, strict=True),
            )
        )
    upload_seconds = time.perf_counter() - started
    # How long the calling thread waits on S3/DynamoDB per photo (classify_stored makes these calls between
    # batches, on the thread that also runs inference); the get_object reads run on the decode workers.
    waits: dict[str, float] = {}
    patched = [
        (DynamoResultStore, "get"),
        (DynamoResultStore, "add"),
        (PhotoBucket, "copy_to_archive"),
        (PhotoBucket, "delete_original"),
    ]
    originals = [getattr(owner, name) for owner, name in patched]
    for (owner, name), original in zip(patched, originals, strict=True):
        setattr(owner, name, clocked_method(original, f"{owner.__name__}.{name}", waits))
    try:
        report = run_nightly(sorter, DynamoResultStore(settings.table), PhotoBucket(settings))
    finally:
        for (owner, name), original in zip(patched, originals, strict=True):
            setattr(owner, name, original)
    processed = report.processed
    return {
        "what": "refund_sorter.nightly.run_nightly on moto: list incoming/, get_object, classify, head + copy to "
        "processed/, DynamoDB put (conditional), delete, then the CSV export",
        "images": processed,
        "seconds": report.seconds,
        "images_per_s": processed / report.seconds if report.seconds else None,
        "upload_seconds_not_counted": round(upload_seconds, 2),
        "calling_thread_storage_ms_per_photo": {k: round(1000 * v / max(processed, 1), 1) for k, v in waits.items()},
        "report": report.as_dict() | {"errors": report.errors[:3]},
        "caveat": "moto runs on the same 2 vCPUs (its own process); every S3/DynamoDB call is a local HTTP request",
    }


def clocked_method(original: Callable[..., Any], key: str, totals: dict[str, float]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - started

    return wrapper
