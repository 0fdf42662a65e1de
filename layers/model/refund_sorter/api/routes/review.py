"""The review loop's decisions: ``PATCH /predictions/{id}`` (decide), ``DELETE /predictions/{id}/review``
(undo), and ``GET /summaries/{date}`` (a night in numbers). The rules are :mod:`refund_sorter.reviews`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

# Powertools reads route annotations at runtime: these imports are not for type checking only.
from refund_sorter.api.identity import caller_name
from refund_sorter.api.openapi import refusals
from refund_sorter.api.schemas import DayParam, ReviewRequest  # noqa: TC001
from refund_sorter.api.service import get_service
from refund_sorter.errors import ErrorCode
from refund_sorter.results import Result
from refund_sorter.summaries import NightSummary  # noqa: TC001

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

router = Router()

IdParam = Annotated[str, Path(min_length=1, max_length=64, description="The prediction's id")]
# After a decision, or its undo: read the Result again, take the decision back, or decide again.
NEXT_AFTER_A_DECISION = {
    "GetPrediction": {"operationId": "getPrediction", "parameters": {"id": "$response.body#/id"}},
    "UndoReview": {
        "operationId": "undoReview",
        "parameters": {"id": "$response.body#/id", "revision": "$response.body#/revision"},
    },
}
NEXT_AFTER_AN_UNDO = {
    "GetPrediction": {"operationId": "getPrediction", "parameters": {"id": "$response.body#/id"}},
    "ReviewPrediction": {
        "operationId": "reviewPrediction",
        "parameters": {"id": "$response.body#/id"},
        "requestBody": {"category": "$response.body#/prediction", "revision": "$response.body#/revision"},
    },
}
# review_conflict: someone decided first, or the revision is not the one stored; not_reviewable: failed
DECISION_REFUSALS = refusals(
    ErrorCode.NOT_FOUND,
    ErrorCode.REVIEW_CONFLICT,
    ErrorCode.NOT_REVIEWABLE,
    ErrorCode.NOTHING_TO_UNDO,
    ErrorCode.STORAGE_ERROR,
)


def _decided(description: str, links: dict[str, Any]) -> dict[int, OpenAPIResponse]:
    answer: OpenAPIResponse = {
        "description": description,
        "content": {"application/json": {"model": Result}},
        "links": links,
    }
    return {200: answer, **DECISION_REFUSALS}


@router.patch(
    "/predictions/<id>",
    summary="A person decides the department: status becomes reviewed",
    description="Confirming the model and correcting it are both decisions; the model's prediction and "
    "confidence stay. Without `revision` the decision is only taken if nobody decided yet; with the revision "
    "you saw, only if nothing changed since. The decision is recorded under the signed-in user.",
    operation_id="reviewPrediction",
    responses=_decided("The prediction, decided", NEXT_AFTER_A_DECISION),
)
def review_prediction(id: IdParam, review: ReviewRequest) -> Result:
    return get_service().review(id, review, by=caller_name(router.current_event.raw_event))


@router.delete(
    "/predictions/<id>/review",
    summary="Undo the decision in force (only the person who made it)",
    description="The decision before it stands again, or, with none, the prediction waits for a person again "
    "(or is classified, if it never waited). The undo is kept in review_history with the decision.",
    operation_id="undoReview",
    responses={
        **_decided("The prediction, its decision taken back", NEXT_AFTER_AN_UNDO),
        **refusals(ErrorCode.NOT_YOUR_DECISION),
    },
)
def undo_review(
    id: IdParam,
    revision: Annotated[int | None, Query(ge=0, description="Only if the prediction is still at this revision")] = None,
) -> Result:
    return get_service().undo_review(id, by=caller_name(router.current_event.raw_event), revision=revision)


@router.get(
    "/summaries/<date>",
    summary="A night in numbers: counts per department and status, review rate",
    operation_id="getSummary",
)
def get_summary(date: Annotated[DayParam, Path()]) -> NightSummary:
    return get_service().summary(date)
