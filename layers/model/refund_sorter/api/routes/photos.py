"""``GET /predictions/{id}/photo``: the photo a person should look at, as a short-lived link."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from refund_sorter.api.schemas import PhotoLink
from refund_sorter.api.service import get_service

router = Router()


@router.get(
    "/predictions/<id>/photo",
    summary="The photo: a 303 to a short-lived link (the thumbnail, or size=full the original)",
    operation_id="getPhoto",
    description="The thumbnail (JPEG, long side 512 px) by default; `size=full` the original wherever it is now. "
    "Without a thumbnail, the original; a photo kept only as a thumbnail gives it for both. `as=json` answers "
    "the link as JSON instead of redirecting (the review page asks this way: its requests carry a token that "
    "an image element cannot send, and the photo itself then comes straight from S3).",
    responses={
        200: {
            "description": "as=json: the link",
            "content": {"application/json": {"model": PhotoLink}},
        },
        # no body: an empty content, or Powertools documents the route's return type for it
        303: {"description": "Location is a presigned S3 link to the photo", "content": {}},
        404: {"description": "No such prediction, or no photo kept for it"},
    },
)
def get_photo(
    id: Annotated[str, Path(min_length=1, max_length=64, description="The prediction's id")],
    size: Annotated[Literal["thumbnail", "full"], Query(description="thumbnail (default) or full")] = "thumbnail",
    as_: Annotated[Literal["redirect", "json"], Query(alias="as", description="json: the link as JSON")] = "redirect",
) -> Response[PhotoLink | str]:
    link = get_service().photo_link(id, size)
    if as_ == "json":
        return Response(status_code=HTTPStatus.OK, content_type=content_types.APPLICATION_JSON, body=link)
    return Response(
        status_code=HTTPStatus.SEE_OTHER,
        headers={"Location": link.url, "Cache-Control": "private, no-store"},
        body="",
    )
