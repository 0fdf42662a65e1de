"""The API's resolver: every resource's routes, Swagger UI and the error policy, assembled once per process."""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

from refund_sorter import __version__
from refund_sorter.api.errors import read_json_body, refuse_unsupported_media_type, register_error_handlers
from refund_sorter.api.openapi import complete_document
from refund_sorter.api.routes import departments, exports, health, page, photos, predictions, review

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aws_lambda_powertools.event_handler.openapi.models import OpenAPI
    from aws_lambda_powertools.utilities.typing import LambdaContext

ROUTERS = (
    health.router,
    predictions.router,
    exports.router,
    departments.router,
    review.router,
    photos.router,
    page.router,
)
TITLE = "refund-sorter"
DESCRIPTION = (
    "Sorts photos of returned items into departments. Every answer that is not a success is "
    '`{"error": {"code", "message"}}`; each `code` (see ErrorCode) always comes with the same status.'
)


class ApiResolver(APIGatewayRestResolver):
    """Powertools' REST resolver, with the API's two house rules: bodies are JSON, and the OpenAPI document
    (``/swagger?format=json``, ``docs/openapi.json``) shows the errors the API really answers."""

    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        return refuse_unsupported_media_type(event) or super().resolve(event, context)

    def get_openapi_schema(self, **kwargs: Any) -> OpenAPI:
        return complete_document(super().get_openapi_schema(**kwargs))


def build_app() -> ApiResolver:
    # A response that breaks its own schema is our bug: 500, not Powertools' default 422 (the client's fault).
    app = ApiResolver(
        enable_validation=True,
        response_validation_error_http_code=HTTPStatus.INTERNAL_SERVER_ERROR,
        json_body_deserializer=read_json_body,
    )
    app.configure_openapi(title=TITLE, version=__version__, description=DESCRIPTION)
    app.enable_swagger(path="/swagger")
    for router in ROUTERS:
        app.include_router(router)
    register_error_handlers(app)
    return app
