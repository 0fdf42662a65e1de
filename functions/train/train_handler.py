"""The training job (``refund-sorter train``, or the optional TrainingSchedule): learn the shop's departments
from ``labelled/`` and every reviewed Result, publish the model version, activate it when the event says
``"activate": true``.

Orchestration only: the work is :func:`refund_sorter_training.job.train_on_stack`. Runs with TrainLayer
(scikit-learn, no onnxruntime or Pillow): it reads features the other functions recorded, decodes no photo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from refund_sorter.config import get_settings
from refund_sorter.storage.bucket import PhotoBucket
from refund_sorter.storage.dynamodb import DynamoResultStore
from refund_sorter_training.admin import ModelAdmin
from refund_sorter_training.job import train_on_stack

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(log_event=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = get_settings()
    summary = train_on_stack(
        settings,
        PhotoBucket(settings),
        DynamoResultStore(settings.table),
        ModelAdmin(settings),
        activate=event.get("activate") is True,
        seed=int(event.get("seed", 0)),
    )
    metrics.add_metric(name="trained", unit=MetricUnit.Count, value=1 if summary["ok"] else 0)
    metrics.add_metric(
        name="labelled_without_features", unit=MetricUnit.Count, value=summary["labelled_without_features"]
    )
    logger.info("training done", extra=summary)
    return summary
