"""API Gateway → refund-sorter. Routes only: each one translates HTTP to one PredictionService call.

No Powertools Tracer here: creating it imports the X-Ray SDK, which measured ~0.3–1 s of this function's
cold start; the function is still traced by Lambda itself (``Tracing: Active``). The nightly batch keeps it.

Errors map to HTTP in one place, :mod:`refund_sorter.api.errors`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from refund_sorter.api.errors import refuse_unsupported_media_type, register_error_handlers
from refund_sorter.api.schemas import (
    DayParam,
    DepartmentOut,
    Health,
    PredictionPage,
    PredictionRequest,
    ReviewRequest,
)
from refund_sorter.api.service import get_service
from refund_sorter.results import Result  # noqa: TC001 - Powertools reads route annotations at runtime

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
metrics = Metrics()
app = APIGatewayRestResolver(enable_validation=True)
app.enable_swagger(
    path="/swagger", title="refund-sorter", description="Sorts photos of returned items into departments"
)

IdParam = Annotated[str, Path(min_length=1, max_length=64, description="The prediction's id")]


@app.get("/health", summary="Liveness; does not load the model")
def health() -> Health:
    return Health(model_version=get_service().sorter.model_version)


@app.post("/predictions", summary="Classify a photo by URL, S3 key or base64 bytes")
def create_prediction(
    request: PredictionRequest,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key", min_length=1, max_length=128, description="A retry with it gets the first answer"
        ),
    ] = None,
) -> Response[Result]:
    service = get_service()
    if idempotency_key:
        result, created = service.predict_once(request, idempotency_key, app.lambda_context)
    else:
        result, created = service.predict(request)
    metrics.add_metric(name=f"api_{result.status.value}", unit=MetricUnit.Count, value=1)
    logger.info("prediction", extra={"id": result.id, "status": result.status, "prediction": result.prediction})
    status = HTTPStatus.CREATED if created else HTTPStatus.OK
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=result)


@app.get("/predictions/<id>", summary="One prediction")
def get_prediction(id: IdParam) -> Result:
    return get_service().get(id)


@app.get("/predictions", summary="A day's predictions, oldest first, paged")
def list_predictions(
    date: Annotated[DayParam, Query(description="UTC day, YYYY-MM-DD")],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    next_token: Annotated[str | None, Query(max_length=2048)] = None,
) -> PredictionPage:
    return get_service().list_day(date, limit, next_token)


@app.patch("/predictions/<id>", summary="A person decides the department: status becomes reviewed")
def review_prediction(id: IdParam, review: ReviewRequest) -> Result:
    return get_service().review(id, review)


@app.get(
    "/exports/<date>",
    summary="The day's results as CSV (a presigned link when large)",
    responses={
        200: {"description": "The CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
        303: {"description": "Over 5 MB: Location is a presigned S3 link to the stored export"},
    },
)
def get_export(date: Annotated[DayParam, Path()]) -> Response[str]:
    csv_text, link = get_service().export(date)
    if link is not None:
        return Response(status_code=HTTPStatus.SEE_OTHER, headers={"Location": link}, body="")
    return Response(
        status_code=HTTPStatus.OK,
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="refund-sorter-{date}.csv"'},
        body=csv_text,
    )


@app.get("/departments", summary="The departments a prediction can name")
def list_departments() -> list[DepartmentOut]:
    return get_service().departments()


register_error_handlers(app)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return refuse_unsupported_media_type(event) or app.resolve(event, context)
