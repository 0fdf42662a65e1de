"""``GET /departments``: what a prediction (and a reviewer) can name."""

from __future__ import annotations

from aws_lambda_powertools.event_handler.api_gateway import Router

from refund_sorter.api.schemas import DepartmentOut  # noqa: TC001 - Powertools reads route annotations at runtime
from refund_sorter.api.service import get_service

router = Router()


@router.get("/departments", summary="The departments a prediction can name", operation_id="listDepartments")
def list_departments() -> list[DepartmentOut]:
    return get_service().departments()
