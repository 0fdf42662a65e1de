"""How refusals become HTTP answers: the one place the API's error policy lives.

What the client sent is always a 4xx with ``{"error": {"code", "message"}}``; only our own failures (storage,
the model) are 5xx, and never with a stack trace.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from refund_sorter.errors import ErrorCode, FetchError, ImageError, RefundSorterError

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver

logger = Logger(child=True)

# What the client gets for each refusal; anything about the photo or the URL it named is 422.
STATUS_BY_CODE = {
    ErrorCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    ErrorCode.INVALID_REQUEST: HTTPStatus.BAD_REQUEST,
    ErrorCode.FILE_TOO_LARGE: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: HTTPStatus.UNPROCESSABLE_ENTITY,
    ErrorCode.REQUEST_IN_PROGRESS: HTTPStatus.CONFLICT,
    ErrorCode.REVIEW_CONFLICT: HTTPStatus.CONFLICT,
    ErrorCode.NOT_REVIEWABLE: HTTPStatus.CONFLICT,
    ErrorCode.NOTHING_TO_UNDO: HTTPStatus.CONFLICT,
    ErrorCode.NOT_YOUR_DECISION: HTTPStatus.FORBIDDEN,
}


def error_response(status: HTTPStatus, code: str, message: str) -> Response[dict[str, Any]]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body={"error": {"code": code, "message": message}},
    )


def status_for(exc: RefundSorterError) -> HTTPStatus:
    status = STATUS_BY_CODE.get(exc.code)
    if status is None and isinstance(exc, ImageError | FetchError):
        return HTTPStatus.UNPROCESSABLE_ENTITY
    return status or HTTPStatus.SERVICE_UNAVAILABLE  # storage or model: ours, not the client's


def register_error_handlers(app: ApiGatewayResolver) -> None:
    """Map every exception a route can raise to its answer."""

    @app.exception_handler(RequestValidationError)
    def _invalid_request(exc: RequestValidationError) -> Response[dict[str, Any]]:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()
        )
        return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, ErrorCode.INVALID_REQUEST, problems or "invalid request")

    @app.exception_handler(UnicodeDecodeError)
    def _not_utf8(exc: UnicodeDecodeError) -> Response[dict[str, Any]]:
        return error_response(HTTPStatus.BAD_REQUEST, ErrorCode.INVALID_REQUEST, "the body is not UTF-8 JSON")

    @app.exception_handler(RefundSorterError)
    def _refused(exc: RefundSorterError) -> Response[dict[str, Any]]:
        status = status_for(exc)
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            logger.exception("internal failure")
        return error_response(status, exc.code, exc.message)

    @app.not_found
    def _no_route(exc: Exception) -> Response[dict[str, Any]]:
        event = app.current_event
        return error_response(HTTPStatus.NOT_FOUND, ErrorCode.NOT_FOUND, f"no route {event.http_method} {event.path}")

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response[dict[str, Any]]:
        logger.exception("unexpected failure")
        return error_response(
            HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", "something went wrong on our side; it is logged"
        )


def refuse_unsupported_media_type(event: dict[str, Any]) -> dict[str, Any] | None:
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
