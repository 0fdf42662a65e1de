"""How refusals become HTTP answers: the one place the API's error policy lives.

Every answer that is not a success is ``{"error": {"code", "message"}}`` (:class:`~refund_sorter.api.schemas.ErrorBody`)
with a code from :class:`~refund_sorter.errors.ErrorCode`, and each code always comes with the same status:

- 400 ``invalid_json``: we could not read the body at all (not JSON, not UTF-8, nested deeper or with a longer
  number than :func:`read_json_body` reads);
- 415 ``unsupported_media_type``: the body is not ``application/json``;
- 422: we read the request and refuse what it says (``invalid_request`` for a field, a parameter or a date,
  the photo's and the URL's own codes for a photo we cannot classify, ``idempotency_key_reused``);
- 404 ``not_found``, 409 ``request_in_progress``, 413 ``file_too_large``;
- 421 ``unknown_host``, from the local stack only: the Host header is not an address it listens on (a page
  on another site reaching it through DNS rebinding); in AWS, API Gateway routes by Host itself;
- 5xx only for our own failures: 503 storage or model (worth a retry), 500 ``internal_error`` (a bug; logged),
  never with a stack trace.
"""

from __future__ import annotations

import json
import sys
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
    ResponseValidationError,
)

from refund_sorter.api.schemas import ErrorBody, ErrorDetail
from refund_sorter.errors import (
    ConflictError,
    ErrorCode,
    FetchError,
    ImageError,
    InvalidRequestError,
    NotFoundError,
    RefundSorterError,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver

logger = Logger(child=True)

# The photo, or the URL that names it, cannot be classified: what the client sent, so 422, never a 5xx.
PHOTO_CODES = (
    ErrorCode.EMPTY_FILE,
    ErrorCode.NOT_AN_IMAGE,
    ErrorCode.CORRUPT_IMAGE,
    ErrorCode.UNSUPPORTED_FORMAT,
    ErrorCode.PROCESSING_CRASHED,
    ErrorCode.DECOMPRESSION_BOMB,
    ErrorCode.INVALID_URL,
    ErrorCode.BLOCKED_ADDRESS,
    ErrorCode.FETCH_TIMEOUT,
    ErrorCode.FETCH_FAILED,
    ErrorCode.UPSTREAM_STATUS,
    ErrorCode.TOO_MANY_REDIRECTS,
    ErrorCode.BAD_CONTENT_TYPE,
)

# Every code's status. Complete over ErrorCode (a unit test holds it so): a new code needs a decision here.
STATUS_BY_CODE: dict[ErrorCode, HTTPStatus] = {
    **dict.fromkeys(PHOTO_CODES, HTTPStatus.UNPROCESSABLE_ENTITY),
    ErrorCode.INVALID_REQUEST: HTTPStatus.UNPROCESSABLE_ENTITY,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: HTTPStatus.UNPROCESSABLE_ENTITY,
    ErrorCode.INVALID_JSON: HTTPStatus.BAD_REQUEST,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    ErrorCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    ErrorCode.REQUEST_IN_PROGRESS: HTTPStatus.CONFLICT,
    ErrorCode.UNKNOWN_HOST: HTTPStatus.MISDIRECTED_REQUEST,
    ErrorCode.FILE_TOO_LARGE: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    ErrorCode.STORAGE_ERROR: HTTPStatus.SERVICE_UNAVAILABLE,
    ErrorCode.MODEL_ERROR: HTTPStatus.SERVICE_UNAVAILABLE,
    ErrorCode.INTERNAL_ERROR: HTTPStatus.INTERNAL_SERVER_ERROR,
    ErrorCode.REVIEW_CONFLICT: HTTPStatus.CONFLICT,
    ErrorCode.NOT_REVIEWABLE: HTTPStatus.CONFLICT,
    ErrorCode.NOTHING_TO_UNDO: HTTPStatus.CONFLICT,
    ErrorCode.NOT_YOUR_DECISION: HTTPStatus.FORBIDDEN,
}

# For a code raised before anyone decided its status above: the kind of error still says whose mistake it is.
_STATUS_BY_KIND: tuple[tuple[type[RefundSorterError], HTTPStatus], ...] = (
    (ImageError, HTTPStatus.UNPROCESSABLE_ENTITY),
    (FetchError, HTTPStatus.UNPROCESSABLE_ENTITY),
    (InvalidRequestError, HTTPStatus.UNPROCESSABLE_ENTITY),
    (NotFoundError, HTTPStatus.NOT_FOUND),
    (ConflictError, HTTPStatus.CONFLICT),
)


def status_for(exc: RefundSorterError) -> HTTPStatus:
    """The HTTP status of a refusal: by its code, else by its kind; unknown failures are ours (503)."""
    if exc.code in STATUS_BY_CODE:
        return STATUS_BY_CODE[exc.code]
    kind = next((status for kind, status in _STATUS_BY_KIND if isinstance(exc, kind)), None)
    return kind or HTTPStatus.SERVICE_UNAVAILABLE


def codes_for(status: HTTPStatus) -> list[ErrorCode]:
    """The codes an answer with this status can carry, in ErrorCode's order."""
    return [code for code in ErrorCode if STATUS_BY_CODE.get(code) == status]


def error_body(code: ErrorCode, message: str) -> dict[str, Any]:
    return ErrorBody(error=ErrorDetail(code=code, message=message)).model_dump(mode="json")


def error_response(code: ErrorCode, message: str) -> Response[dict[str, Any]]:
    """The answer for a refusal: the code decides the status."""
    return Response(
        status_code=STATUS_BY_CODE[code], content_type=content_types.APPLICATION_JSON, body=error_body(code, message)
    )


def describe_validation_errors(errors: Iterable[Mapping[str, Any]]) -> str:
    """Pydantic's errors as one line a person can act on: ``query parameter 'limit': Input should be …``."""
    return "; ".join(f"{_where(tuple(e.get('loc', ())))}: {_what(e)}" for e in errors) or "the request is invalid"


_PARAMETER_KINDS = {"query": "query parameter", "path": "path parameter", "header": "header", "cookie": "cookie"}


def _where(loc: tuple[Any, ...]) -> str:
    if not loc:
        return "request"
    kind, rest = str(loc[0]), [str(part) for part in loc[1:]]
    if kind == "body":
        return f"body field '{'.'.join(rest)}'" if rest else "body"
    if kind == "response":
        return "response"
    return f"{_PARAMETER_KINDS.get(kind, kind)} '{'.'.join(rest)}'"


# Pydantic's words for a body that is missing or not an object, in the API's terms.
_BODY_PROBLEMS = {
    "missing": "missing; send a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
}


def _what(error: Mapping[str, Any]) -> str:
    if tuple(error.get("loc", ())) == ("body",) and error.get("type") in _BODY_PROBLEMS:
        return _BODY_PROBLEMS[str(error["type"])]
    if error.get("type") == "extra_forbidden":
        return "not a field of this request"
    message = str(error.get("msg") or "is invalid")
    # a ValueError raised in one of our validators: pydantic prefixes it; the message is already for people
    return message.removeprefix("Value error, ")


# No body of this API nests deeper than 2; a limit well above that, and far below Python's recursion limit (which
# json.loads and anything walking the parsed body would otherwise hit as a RecursionError: a 500).
MAX_JSON_DEPTH = 32


class UnreadableJsonError(ValueError):
    """A body that may be JSON but that the API will not read: nested too deep, or a number with too many digits."""


def read_json_body(text: str | bytes) -> Any:
    """``json.loads`` for request bodies (the resolver's ``json_body_deserializer``): what it cannot hold is an
    :class:`UnreadableJsonError` (400 ``invalid_json``), never a RecursionError or ValueError that would be a 500.

    Malformed JSON stays a :class:`json.JSONDecodeError`, which Powertools reports with its position.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError as exc:
        raise UnreadableJsonError(f"it nests arrays or objects more than {MAX_JSON_DEPTH} deep") from exc
    except ValueError as exc:  # Python's cap on int(str) (CVE-2020-10735): a number of thousands of digits
        limit = sys.get_int_max_str_digits()
        raise UnreadableJsonError(f"a number has more than {limit} digits") from exc
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise UnreadableJsonError(f"it nests arrays or objects more than {MAX_JSON_DEPTH} deep")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers more than ``limit`` deep (without recursion of its own)."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth + 1 > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def _is_unreadable_json(exc: RequestValidationError) -> str | None:
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            position = error.get("loc", ("body", "?"))[-1]
            return f"{error.get('ctx', {}).get('error', 'JSON decode error')} (at character {position})"
    return None


def register_error_handlers(app: ApiGatewayResolver) -> None:
    """Map every exception a route can raise to its answer."""

    @app.exception_handler(RequestValidationError)
    def _invalid_request(exc: RequestValidationError) -> Response[dict[str, Any]]:
        reason = _is_unreadable_json(exc)
        if reason is not None:
            return error_response(ErrorCode.INVALID_JSON, f"the body is not valid JSON: {reason}")
        return error_response(ErrorCode.INVALID_REQUEST, describe_validation_errors(exc.errors()))

    @app.exception_handler(UnreadableJsonError)
    def _unreadable(exc: UnreadableJsonError) -> Response[dict[str, Any]]:
        return error_response(ErrorCode.INVALID_JSON, f"the body is not JSON this API reads: {exc}")

    @app.exception_handler(UnicodeDecodeError)
    def _not_utf8(exc: UnicodeDecodeError) -> Response[dict[str, Any]]:
        return error_response(ErrorCode.INVALID_JSON, "the body is not valid JSON: it is not UTF-8 text")

    @app.exception_handler(RequestUnsupportedContentType)
    def _not_json(exc: RequestUnsupportedContentType) -> Response[dict[str, Any]]:
        return error_response(ErrorCode.UNSUPPORTED_MEDIA_TYPE, UNSUPPORTED_MEDIA_TYPE_MESSAGE)

    @app.exception_handler(ResponseValidationError)
    def _bad_answer(exc: ResponseValidationError) -> Response[dict[str, Any]]:
        # our answer broke our own documented contract: a bug of ours, never the client's 422
        logger.error("response does not match its schema", extra={"errors": describe_validation_errors(exc.errors())})
        return error_response(ErrorCode.INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE)

    @app.exception_handler(RefundSorterError)
    def _refused(exc: RefundSorterError) -> Response[dict[str, Any]]:
        status = status_for(exc)
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            logger.exception("internal failure")
        return Response(
            status_code=status,
            content_type=content_types.APPLICATION_JSON,
            body=error_body(exc.code, exc.message),
        )

    @app.not_found
    def _no_route(exc: Exception) -> Response[dict[str, Any]]:
        event = app.current_event
        return error_response(ErrorCode.NOT_FOUND, f"no route {event.http_method} {event.path}")

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response[dict[str, Any]]:
        logger.exception("unexpected failure")
        return error_response(ErrorCode.INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE)


INTERNAL_ERROR_MESSAGE = "something went wrong on our side; it is logged"
UNSUPPORTED_MEDIA_TYPE_MESSAGE = "send the body as application/json"
_BODY_METHODS = frozenset({"POST", "PATCH", "PUT"})


def refuse_unsupported_media_type(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """Bodies are JSON, said so by ``Content-Type: application/json``: any other body is refused (415) before
    Powertools' validation tries to read it, in AWS and on the local stack alike.

    This runs before routing because Powertools would read a form or multipart body as data (a
    ``multipart/form-data`` without a boundary makes its parser raise a bare ValueError), and would read a body
    without a Content-Type as JSON. A browser sends exactly those to another origin without asking first (a
    "simple" request: text/plain, a form, or a Blob without a type): refusing them keeps any web page the
    reviewer opens from making the API fetch URLs and store Results on the reviewer's behalf.
    """
    if event.get("httpMethod") not in _BODY_METHODS or not event.get("body"):
        return None
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    content_type = str(headers.get("content-type") or "")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == content_types.APPLICATION_JSON:
        return None
    message = UNSUPPORTED_MEDIA_TYPE_MESSAGE if content_type else f"{UNSUPPORTED_MEDIA_TYPE_MESSAGE} (no Content-Type)"
    return {
        "statusCode": int(HTTPStatus.UNSUPPORTED_MEDIA_TYPE),
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": json.dumps(error_body(ErrorCode.UNSUPPORTED_MEDIA_TYPE, message), separators=(",", ":")),
        "isBase64Encoded": False,
    }
