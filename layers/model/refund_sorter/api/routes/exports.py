"""``GET /exports/{date}``: a day's Results as CSV."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path

from refund_sorter.api.openapi import refusals
from refund_sorter.api.schemas import DayParam  # noqa: TC001 - Powertools reads route annotations at runtime
from refund_sorter.api.service import get_service
from refund_sorter.errors import ErrorCode

router = Router()


@router.get(
    "/exports/<date>",
    summary="The day's results as CSV (a presigned link when large)",
    operation_id="getExport",
    responses={
        200: {"description": "The CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
        303: {"description": "Over 5 MB: Location is a presigned S3 link to the stored export", "content": {}},
        **refusals(ErrorCode.STORAGE_ERROR),
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
