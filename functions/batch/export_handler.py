"""The nightly state machine's Export step: the day's CSV, the night's summary, the lease given back.

Orchestration only: the work is :func:`refund_sorter.jobs.summary.finish_night`. The event is the state
machine's whole state (``plan``, and ``map`` or ``map_error``). The metrics it emits feed the
``NightlyChunksFailedAlarm`` (chunks that failed after their retries, within the map's tolerated share).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from refund_sorter.config import get_settings
from refund_sorter.jobs.summary import finish_night
from refund_sorter.storage.bucket import PhotoBucket
from refund_sorter.storage.dynamodb import DynamoResultStore
from refund_sorter.storage.jobs_table import JobsTable

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(log_event=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = get_settings()
    summary = finish_night(
        DynamoResultStore(settings.table), PhotoBucket(settings), JobsTable(settings.jobs_table), event
    )
    metrics.add_metric(name="NightlyChunksFailed", unit=MetricUnit.Count, value=summary.chunks_failed)
    metrics.add_metric(name="NightlyPhotosWaiting", unit=MetricUnit.Count, value=summary.waiting)
    for name, value in summary.counts.items():
        metrics.add_metric(name=f"NightlyPhotos_{name}", unit=MetricUnit.Count, value=value)
    return summary.as_dict()
