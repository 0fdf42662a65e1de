"""The API's resolver: every resource's routes, Swagger UI and the error policy, assembled once per process."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

from refund_sorter.api.errors import register_error_handlers
from refund_sorter.api.routes import departments, exports, health, page, photos, predictions, review

ROUTERS = (
    health.router,
    predictions.router,
    exports.router,
    departments.router,
    review.router,
    photos.router,
    page.router,
)


def build_app() -> APIGatewayRestResolver:
    app = APIGatewayRestResolver(enable_validation=True)
    app.enable_swagger(
        path="/swagger", title="refund-sorter", description="Sorts photos of returned items into departments"
    )
    for router in ROUTERS:
        app.include_router(router)
    register_error_handlers(app)
    return app
