"""``/predictions``: classify a photo, read Results and the review queue (decisions: :mod:`.review`)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Literal

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.metrics import MetricUnit

from refund_sorter.api.errors import PHOTO_CODES
from refund_sorter.api.openapi import refusals

# Powertools reads route annotations at runtime: these imports are not for type checking only.
from refund_sorter.api.schemas import DayParam, PredictionPage, PredictionRequest  # noqa: TC001
from refund_sorter.api.service import get_service
from refund_sorter.errors import ErrorCode
from refund_sorter.results import Result  # noqa: TC001
from refund_sorter.storage.base import QueueOrder  # noqa: TC001

router = Router()
logger = Logger(child=True)
metrics = Metrics()

IdParam = Annotated[str, Path(min_length=1, max_length=64, description="The prediction's id")]
# What a client (and schemathesis' stateful phase) can do next with the Result a POST answered: read it, look
# at its photo, decide it (a confirmation of the model: the category it predicted, at the revision it is at).
NEXT_WITH_THE_RESULT = {
    "GetPrediction": {"operationId": "getPrediction", "parameters": {"id": "$response.body#/id"}},
    "GetPhoto": {"operationId": "getPhoto", "parameters": {"id": "$response.body#/id"}},
    "ReviewPrediction": {
        "operationId": "reviewPrediction",
        "parameters": {"id": "$response.body#/id"},
        "requestBody": {"category": "$response.body#/prediction", "revision": "$response.body#/revision"},
    },
}


@router.post(
    "/predictions",
    summary="Classify a photo by URL, S3 key or base64 bytes",
    operation_id="createPrediction",
    responses={
        201: {"description": "A new Result", "links": NEXT_WITH_THE_RESULT},
        200: {
            "description": "Already known: the photo's Result (or the first answer to this Idempotency-Key)",
            "links": NEXT_WITH_THE_RESULT,
        },
        **refusals(
            *PHOTO_CODES,
            ErrorCode.FILE_TOO_LARGE,
            ErrorCode.NOT_FOUND,  # the s3_key names no object
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            ErrorCode.REQUEST_IN_PROGRESS,
            ErrorCode.STORAGE_ERROR,
            ErrorCode.MODEL_ERROR,
        ),
    },
)
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
        result, created = service.predict_once(request, idempotency_key, router.lambda_context)
    else:
        result, created = service.predict(request)
    metrics.add_metric(name=f"api_{result.status.value}", unit=MetricUnit.Count, value=1)
    logger.info("prediction", extra={"id": result.id, "status": result.status, "prediction": result.prediction})
    status = HTTPStatus.CREATED if created else HTTPStatus.OK
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=result)


@router.get(
    "/predictions/<id>",
    summary="One prediction",
    operation_id="getPrediction",
    responses={200: {"description": "The Result"}, **refusals(ErrorCode.STORAGE_ERROR)},
)
def get_prediction(id: IdParam) -> Result:
    return get_service().get(id)


@router.get(
    "/predictions",
    summary="A day's predictions, or the review queue (status=needs_review), paged",
    description="With `status=needs_review`: the Results waiting for a person (`date` and `department` narrow "
    "it), and on the first page `counts` of what is left. `order=informative` lists first the photos whose "
    "answer would teach the active head most (lowest `priority`; each says why in `asked_because`), then the "
    "Results stored before the queue had an order, oldest first; `order=oldest` lists oldest first across "
    "nights. The default is `informative` while a head is active, `oldest` otherwise. Paging with `next_token` "
    "neither skips nor repeats a photo while people decide; a token only continues the order it came from.",
    operation_id="listPredictions",
    responses={200: {"description": "One page of Results"}, **refusals(ErrorCode.STORAGE_ERROR)},
)
def list_predictions(  # Powertools passes query parameters by name
    *,
    date: Annotated[DayParam | None, Query(description="UTC day, YYYY-MM-DD (optional for the review queue)")] = None,
    status: Annotated[Literal["needs_review"] | None, Query(description="needs_review: the review queue")] = None,
    department: Annotated[
        str | None, Query(min_length=1, max_length=64, description="The queue's predicted department")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    next_token: Annotated[str | None, Query(max_length=2048)] = None,
    counts: Annotated[bool, Query(description="The queue's first page: say how much is left (costs 3 queries)")] = True,
    order: Annotated[
        QueueOrder | None,
        Query(description="The review queue's order: informative (default while a head is active) or oldest"),
    ] = None,
) -> PredictionPage:
    if status is None and date is None:  # a missing parameter, answered like every other one (422)
        missing = "Field required: date, or status=needs_review for the review queue"
        raise RequestValidationError([{"loc": ("query", "date"), "msg": missing, "type": "missing"}])
    return get_service().list_predictions(
        date=date, status=status, department=department, limit=limit, next_token=next_token, counts=counts, order=order
    )
