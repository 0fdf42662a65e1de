"""The training job (``refund-sorter train``, the nightly state machine's Retrain step, or the optional
TrainingSchedule): learn the shop's departments from ``labelled/`` and every reviewed Result, publish the model
version, and activate it when the promotion rule says so (``"activate": true/false`` in the event overrides it;
``"nightly": true`` trains only when enough decisions were made since the last version).

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


def _asked_to_activate(event: dict[str, Any]) -> bool | None:
    """``"activate": true/false`` is a person's word (``train --activate / --no-activate``); absent or null,
    the promotion rule decides."""
    value = event.get("activate")
    return value if isinstance(value, bool) else None


@logger.inject_lambda_context(log_event=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = get_settings()
    summary = train_on_stack(
        settings,
        PhotoBucket(settings),
        DynamoResultStore(settings.table),
        ModelAdmin(settings),
        activate=_asked_to_activate(event),
        seed=int(event.get("seed", 0)),
        nightly=event.get("nightly") is True,
    )
    if "decisions_last_day" in summary:  # the nightly run: the dashboard's decisions per day
        metrics.add_metric(name="DecisionsMade", unit=MetricUnit.Count, value=summary["decisions_last_day"])
    if summary.get("skipped"):
        logger.info("no training", extra=summary)
        return summary
    metrics.add_metric(name="trained", unit=MetricUnit.Count, value=1 if summary["ok"] else 0)
    metrics.add_metric(
        name="labelled_without_features", unit=MetricUnit.Count, value=summary["labelled_without_features"]
    )
    if summary["ok"]:  # the dashboard's promotions: versions trained and versions that became active by it
        metrics.add_metric(name="VersionsTrained", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="VersionsActivated", unit=MetricUnit.Count, value=1 if summary["active"] else 0)
    logger.info("training done", extra=summary)
    return summary
