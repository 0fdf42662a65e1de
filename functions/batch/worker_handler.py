"""The nightly state machine's worker: one chunk of photos per invocation (the Distributed Map's child).

Orchestration only: the work is :func:`refund_sorter.jobs.worker.classify_chunk`. The event is the map's
item plus the retry count: ``{"run": …, "chunk": {"index", "key", "photos"}, "attempt": $$.State.RetryCount}``.
An exception here fails the invocation, and the state machine retries the chunk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from refund_sorter.config import get_settings
from refund_sorter.jobs.chunks import Chunk, ChunkRef
from refund_sorter.jobs.worker import classify_chunk
from refund_sorter.storage.bucket import PhotoBucket
from refund_sorter.storage.dynamodb import DynamoResultStore
from refund_sorter.storage.jobs_table import JobsTable
from refund_sorter.vision.sorter import get_sorter

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(log_event=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = get_settings()
    bucket = PhotoBucket(settings)
    ref = ChunkRef.from_item(event["chunk"])
    report = classify_chunk(
        get_sorter(),
        DynamoResultStore(settings.table),
        bucket,
        JobsTable(settings.jobs_table),
        Chunk.from_json(bucket.get_bytes(ref.key)),
        attempt=int(event.get("attempt", 0)),
        seconds_left=lambda: context.get_remaining_time_in_millis() / 1000,
    )
    for name in ("classified", "needs_review", "failed", "crashed", "deferred", "left"):
        metrics.add_metric(name=f"Photos_{name}", unit=MetricUnit.Count, value=getattr(report, name))
    logger.info("chunk done", extra=report.as_dict())
    return report.as_dict()
