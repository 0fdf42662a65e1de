"""Record the features of labelled photos (``labelled/<department>/``): when they land (S3 ObjectCreated),
and on request for the ones still without (``{"embed_missing": true}``, what ``refund-sorter train`` sends).

Orchestration only: the work is :mod:`refund_sorter.jobs.embed_labelled`.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event

from refund_sorter.config import get_settings
from refund_sorter.heads.labelled import department_of, missing
from refund_sorter.jobs.embed_labelled import backbone_sorter, embed_labelled
from refund_sorter.storage.bucket import PhotoBucket, StoredPhoto

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from refund_sorter.vision.sorter import Sorter

logger = Logger()
metrics = Metrics()


@cache
def _sorter() -> Sorter:
    return backbone_sorter(get_settings())


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    bucket = PhotoBucket(get_settings())
    if event.get("embed_missing"):
        photos = [photo.stored for photo in missing(bucket, _sorter().classifier.info.version)]
    else:
        # The event names the exact version that landed (key, ETag, size): a later upload to the same key
        # brings its own event, and this one's read (If-Match) then fails instead of embedding the wrong photo.
        prefix = bucket.settings.labelled_prefix
        objects = [record.s3.get_object for record in S3Event(event).records]
        photos = [
            StoredPhoto(unquote_plus(o.key), o.etag, o.size or 0)
            for o in objects
            if department_of(unquote_plus(o.key), prefix) is not None
        ]
    report = embed_labelled(
        _sorter(), bucket, photos, seconds_left=lambda: context.get_remaining_time_in_millis() / 1000
    )
    metrics.add_metric(name="labelled_embedded", unit=MetricUnit.Count, value=report.embedded)
    metrics.add_metric(name="labelled_failed", unit=MetricUnit.Count, value=len(report.failed))
    logger.info("labelled photos embedded", extra=report.as_dict())
    return report.as_dict()
