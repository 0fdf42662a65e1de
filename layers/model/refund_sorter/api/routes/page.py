"""``GET /review``: the review page and its files (public: the page itself asks the reviewer to sign in)."""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path

from refund_sorter.api import page
from refund_sorter.api.service import get_service

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

router = Router()

_HTML: dict[int, OpenAPIResponse] = {
    200: {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}
}


@router.get(
    "/review",
    summary="The review page (HTML; everything it loads comes from this API)",
    operation_id="getReviewPage",
    responses=_HTML,
)
def review_page() -> Response[str]:
    sign_in = page.sign_in_settings(router.current_event.raw_event.get("stageVariables"))
    return Response(
        status_code=HTTPStatus.OK,
        content_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": page.content_security_policy(get_service().photo_origin(), sign_in),
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
        body=page.page_html(sign_in),
    )


@router.get(
    "/review/<asset>",
    summary="One of the review page's files (CSS, JS)",
    operation_id="getReviewAsset",
    responses={
        200: {
            "description": "The file",
            "content": {
                "text/javascript": {"schema": {"type": "string"}},
                "text/css": {"schema": {"type": "string"}},
            },
        },
        404: {"description": "No such file"},
    },
)
def review_asset(asset: Annotated[str, Path(min_length=1, max_length=64)]) -> Response[str]:
    text, media_type = page.asset(asset)
    return Response(
        status_code=HTTPStatus.OK,
        content_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        body=text,
    )
