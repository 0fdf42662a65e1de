"""The nightly state machine's Export step: the day's CSV, the night's summary, the lease given back.

Orchestration only: the work is :func:`refund_sorter.jobs.summary.finish_night`. The event is the state
machine's whole state (``plan``, and ``map`` or ``map_error``). The metrics it emits feed the
``NightlyChunksFailedAlarm`` (chunks that failed after their retries, within the map's tolerated share).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.metrics import MetricUnit

from refund_sorter.config import get_settings
from refund_sorter.jobs.summary import finish_night
from refund_sorter.storage.bucket import PhotoBucket
from refund_sorter.storage.dynamodb import DynamoResultStore
from refund_sorter.storage.jobs_table import JobsTable

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from refund_sorter.jobs.summary import NightSummary

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
    publish_loop_metrics(summary)
    return summary.as_dict()


def publish_loop_metrics(summary: NightSummary) -> None:
    """What the loop dashboard draws and AutoSortedShareDropAlarm watches: the share of the night sorted without a
    person, the review rate, the backlog left, and the photos each model version sorted (a dimension per version,
    so a promotion shows as a new line)."""
    if summary.auto_sorted_share is not None:  # a night with nothing classified says nothing about the share
        metrics.add_metric(name="AutoSortedShare", unit=MetricUnit.Percent, value=100 * summary.auto_sorted_share)
        metrics.add_metric(name="ReviewRate", unit=MetricUnit.Percent, value=100 * (summary.review_rate or 0.0))
    metrics.add_metric(name="ReviewBacklog", unit=MetricUnit.Count, value=summary.review_backlog)
    for version, photos in summary.model_versions.items():
        with single_metric(
            name="PhotosByModelVersion",
            unit=MetricUnit.Count,
            value=photos,
            namespace=metrics.namespace,
            default_dimensions=metrics.default_dimensions,
        ) as metric:
            metric.add_dimension(name="ModelVersion", value=version)
