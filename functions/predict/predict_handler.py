"""API Gateway → refund-sorter: the Lambda adapter of the HTTP API.

The routes are per-resource Routers in :mod:`refund_sorter.api.routes`, the error policy is
:mod:`refund_sorter.api.errors` (the resolver refuses non-JSON bodies itself); this file only wires Lambda
to them.

No Powertools Tracer here: creating it imports the X-Ray SDK, which measured ~0.3–1 s of this function's
cold start; the function is still traced by Lambda itself (``Tracing: Active``). No function uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths

from refund_sorter.api.app import build_app
from refund_sorter.api.snapstart import register_snapstart_hooks

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
metrics = Metrics()
app = build_app()
register_snapstart_hooks()  # with SnapStart on, the model is loaded before the snapshot; clients made after restore


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
