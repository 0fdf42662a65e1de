"""API Gateway → refund-sorter. Routes only: each one translates HTTP to one PredictionService call.

No Powertools Tracer here: creating it imports the X-Ray SDK, which measured ~0.3–1 s of this function's
cold start; the function is still traced by Lambda itself (``Tracing: Active``). The nightly batch keeps it.

Errors map to HTTP in one place (the exception handlers below): what the client sent is always a 4xx with
``{"error": {"code", "message"}}``; only our own failures (storage, model) are 5xx, and never with a trace.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from refund_sorter.errors import ErrorCode, FetchError, ImageError, RefundSorterError
from refund_sorter.results import Result  # noqa: TC001 - Powertools reads route annotations at runtime
from refund_sorter.service import (
    DayParam,
    DepartmentOut,
    Health,
    PredictionPage,
    PredictionRequest,
    ReviewRequest,
    get_service,
)

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
    body, link = get_service().export(date)
    if link is not None:
        return Response(status_code=HTTPStatus.SEE_OTHER, headers={"Location": link}, body="")
    return Response(
        status_code=HTTPStatus.OK,
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="refund-sorter-{date}.csv"'},
        body=(body or b"").decode("utf-8"),
    )


@app.get("/departments", summary="The departments a prediction can name")
def list_departments() -> list[DepartmentOut]:
    return get_service().departments()


def _error(status: HTTPStatus, code: str, message: str) -> Response[dict[str, Any]]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body={"error": {"code": code, "message": message}},
    )


@app.exception_handler(RequestValidationError)
def _invalid_request(exc: RequestValidationError) -> Response[dict[str, Any]]:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()
    )
    return _error(HTTPStatus.UNPROCESSABLE_ENTITY, ErrorCode.INVALID_REQUEST, problems or "invalid request")


@app.exception_handler(UnicodeDecodeError)
def _not_utf8(exc: UnicodeDecodeError) -> Response[dict[str, Any]]:
    return _error(HTTPStatus.BAD_REQUEST, ErrorCode.INVALID_REQUEST, "the body is not UTF-8 JSON")


# What the client gets for each refusal; anything about the photo or the URL it named is 422.
STATUS_BY_CODE = {
    ErrorCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    ErrorCode.INVALID_REQUEST: HTTPStatus.BAD_REQUEST,
    ErrorCode.FILE_TOO_LARGE: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: HTTPStatus.UNPROCESSABLE_ENTITY,
    ErrorCode.REQUEST_IN_PROGRESS: HTTPStatus.CONFLICT,
}


@app.exception_handler(RefundSorterError)
def _refused(exc: RefundSorterError) -> Response[dict[str, Any]]:
    status = STATUS_BY_CODE.get(exc.code)
    if status is None and isinstance(exc, ImageError | FetchError):
        status = HTTPStatus.UNPROCESSABLE_ENTITY
    if status is None:  # storage or model: ours, not the client's
        logger.exception("internal failure")
        status = HTTPStatus.SERVICE_UNAVAILABLE
    return _error(status, exc.code, exc.message)


@app.not_found
def _no_route(exc: Exception) -> Response[dict[str, Any]]:
    event = app.current_event
    return _error(HTTPStatus.NOT_FOUND, ErrorCode.NOT_FOUND, f"no route {event.http_method} {event.path}")


@app.exception_handler(Exception)
def _unexpected(exc: Exception) -> Response[dict[str, Any]]:
    logger.exception("unexpected failure")
    return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", "something went wrong on our side; it is logged")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _unsupported_media_type(event) or app.resolve(event, context)


def _unsupported_media_type(event: dict[str, Any]) -> dict[str, Any] | None:
    """Bodies are JSON. Anything else is refused before Powertools' validation tries to parse it as a form
    (a ``multipart/form-data`` without a boundary makes that parser raise a bare ValueError)."""
    if event.get("httpMethod") not in {"POST", "PATCH", "PUT"} or not event.get("body"):
        return None
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    media_type = str(headers.get("content-type", "application/json")).split(";")[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return None
    message = {"error": {"code": "unsupported_media_type", "message": "send the body as application/json"}}
    return {
        "statusCode": HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": json.dumps(message),
        "isBase64Encoded": False,
    }
