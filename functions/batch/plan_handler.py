"""The nightly state machine's Plan step: take the run's lease, list incoming/, write the chunk manifest.

Orchestration only: the work is :func:`refund_sorter.jobs.plan.plan_night`. The event is what the state
machine passes: ``{"execution": $$.Execution.Name, "started": $$.Execution.StartTime}``.

No Powertools Tracer in the nightly functions: it imports the X-Ray SDK (~0.3–1 s of every cold start);
Lambda still traces each invocation (``Tracing: Active``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from refund_sorter.config import get_settings
from refund_sorter.jobs.plan import plan_night
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
    plan = plan_night(
        DynamoResultStore(settings.table),
        PhotoBucket(settings),
        JobsTable(settings.jobs_table),
        execution=event["execution"],
        started=event["started"],
    )
    if plan.skipped:
        metrics.add_metric(name="NightlyRunsSkipped", unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name="NightlyPhotosPlanned", unit=MetricUnit.Count, value=plan.photos)
    return plan.as_dict()
