"""The optional classify-on-upload path (S3 ObjectCreated on incoming/).

Orchestration only: the work is :func:`refund_sorter.jobs.upload.classify_uploaded`. The nightly job is the
state machine of plan_handler → worker_handler (a Distributed Map) → export_handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event, event_source

from refund_sorter.config import get_settings
from refund_sorter.jobs.upload import classify_uploaded
from refund_sorter.storage.bucket import PhotoBucket
from refund_sorter.storage.dynamodb import DynamoResultStore
from refund_sorter.vision.sorter import get_sorter

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@event_source(data_class=S3Event)
def on_upload(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    settings = get_settings()
    keys = [unquote_plus(record.s3.get_object.key) for record in event.records]
    report = classify_uploaded(get_sorter(), DynamoResultStore(settings.table), PhotoBucket(settings), keys)
    for name in ("classified", "needs_review", "failed"):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=getattr(report, name))
    logger.info("uploaded photos classified", extra=report.as_dict())
    return report.as_dict()
