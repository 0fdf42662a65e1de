"""``GET /health``: liveness, without loading the model."""

from __future__ import annotations

from aws_lambda_powertools.event_handler.api_gateway import Router

from refund_sorter.api.schemas import Health
from refund_sorter.api.service import get_service

router = Router()


@router.get("/health", summary="Liveness; does not load the model", operation_id="health")
def health() -> Health:
    return Health(model_version=get_service().sorter.model_version)
