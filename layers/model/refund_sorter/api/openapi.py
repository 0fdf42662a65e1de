"""The OpenAPI document tells the truth about errors.

Powertools documents a route's success and, with validation on, a 422 ``HTTPValidationError {detail: [...]}``
that this API never sends. :func:`complete_document` rewrites the generated document so that every
operation lists each error status it can answer, with :class:`~refund_sorter.api.schemas.ErrorBody` and the
``error.code`` values that come with it (``x-error-codes``):

- by the operation's shape, for every route, including routes added later: 500 always (and 421, which only
  the local stack answers: see :mod:`refund_sorter_cli.local_stack`); 422 when it takes
  parameters or a body; 404 when it has path parameters (an unknown id, a path no route matches);
  400/413/415 when it takes a body;
- by the route itself, for what its service can refuse: ``responses={200: ..., **refusals(ErrorCode.X, ...)}``.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

from aws_lambda_powertools.event_handler.openapi.models import OpenAPI
from aws_lambda_powertools.event_handler.openapi.types import COMPONENT_REF_PREFIX, COMPONENT_REF_TEMPLATE

from refund_sorter.api.errors import STATUS_BY_CODE
from refund_sorter.api.schemas import ErrorBody
from refund_sorter.errors import ErrorCode

if TYPE_CHECKING:
    from collections.abc import Iterable

    from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

CODES_KEY = "x-error-codes"
JSON = "application/json"
_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# What each error status means to a client; the codes that come with it are listed next to it.
MEANING = {
    HTTPStatus.BAD_REQUEST: "The body could not be read: it is not JSON",
    HTTPStatus.NOT_FOUND: "Nothing there: no such prediction, object or route",
    HTTPStatus.FORBIDDEN: "Not yours to do: only the person who decided may undo it",
    HTTPStatus.CONFLICT: "Not now: the same request is still running, or someone decided first",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "The body or the photo is over the size limit (a request over the 6 MB a "
    "Lambda invocation carries is refused by API Gateway itself: send big photos by s3_key or url)",
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: "The body is not sent as Content-Type: application/json",
    HTTPStatus.MISDIRECTED_REQUEST: "The local stack only: the Host header names no address it listens on",
    HTTPStatus.UNPROCESSABLE_ENTITY: "Read, but refused: a parameter or field is invalid, or the photo cannot be used",
    HTTPStatus.INTERNAL_SERVER_ERROR: "A bug of ours; it is logged",
    HTTPStatus.SERVICE_UNAVAILABLE: "Storage or the model failed; retry later",
}

# What any operation of a given shape can answer, whatever its route says.
ALWAYS = (ErrorCode.INTERNAL_ERROR, ErrorCode.UNKNOWN_HOST)
WITH_INPUT = (ErrorCode.INVALID_REQUEST,)
WITH_PATH_PARAMETERS = (ErrorCode.NOT_FOUND,)
WITH_BODY = (ErrorCode.INVALID_JSON, ErrorCode.UNSUPPORTED_MEDIA_TYPE, ErrorCode.FILE_TOO_LARGE)


def refusals(*codes: ErrorCode) -> dict[int, OpenAPIResponse]:
    """The error responses a route declares for the codes its service can refuse with, grouped by status.

    Examples
    --------
    A route whose service reads the store (its 404, 422 and 500 come from its shape)::

        @router.get("/things/<id>", responses={200: {"description": "The thing"}, **refusals(ErrorCode.STORAGE_ERROR)})
    """
    # OpenAPIResponse's TypedDict has no room for the x-error-codes extension; the document model keeps it
    return cast("dict[int, OpenAPIResponse]", _error_responses(codes))


def _error_responses(codes: Iterable[ErrorCode]) -> dict[int, dict[str, Any]]:
    grouped: dict[int, list[ErrorCode]] = {}
    for code in codes:
        grouped.setdefault(int(STATUS_BY_CODE[code]), []).append(code)
    return {status: _error_response(status, found) for status, found in sorted(grouped.items())}


def _error_response(status: int, codes: list[ErrorCode]) -> dict[str, Any]:
    ordered = [code.value for code in ErrorCode if code in codes]
    return {
        "description": f"{MEANING[HTTPStatus(status)]}. error.code: {', '.join(ordered)}",
        "content": {JSON: {"schema": {"$ref": f"{COMPONENT_REF_PREFIX}ErrorBody"}}},
        CODES_KEY: ordered,
    }


def complete_document(document: OpenAPI) -> OpenAPI:
    """The generated document with the API's real error answers on every operation (see the module doc)."""
    data = json.loads(document.model_dump_json(by_alias=True, exclude_none=True))
    for path_item in data.get("paths", {}).values():
        for method in _HTTP_METHODS:
            if method in path_item:
                _complete_operation(path_item[method])
    schemas = data.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(_error_body_schemas())
    data["components"]["schemas"] = _reachable(schemas, data["paths"])
    return OpenAPI.model_validate(data)


def _complete_operation(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for key, documented in list(responses.items()):
        if _is_powertools_default(documented):
            del responses[key]  # HTTPValidationError / ResponseValidationError: never sent by this API
    parameters = operation.get("parameters") or []
    codes: list[ErrorCode] = list(ALWAYS)
    if parameters or "requestBody" in operation:
        codes += WITH_INPUT
    if any(parameter.get("in") == "path" for parameter in parameters):
        codes += WITH_PATH_PARAMETERS
    if "requestBody" in operation:
        codes += WITH_BODY
    for status, response in _error_responses(codes).items():
        declared = responses.get(str(status))
        if declared is None:
            responses[str(status)] = response
        else:  # the route declared this status too: one response listing every code
            merged = [*declared.get(CODES_KEY, []), *response[CODES_KEY]]
            responses[str(status)] = _error_response(status, [ErrorCode(code) for code in merged])
    operation["responses"] = dict(sorted(responses.items()))


def _is_powertools_default(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get(JSON, {}).get("schema", {})
    return schema.get("$ref") in {
        f"{COMPONENT_REF_PREFIX}HTTPValidationError",
        f"{COMPONENT_REF_PREFIX}ResponseValidationError",
    }


def _error_body_schemas() -> dict[str, Any]:
    schema = ErrorBody.model_json_schema(ref_template=COMPONENT_REF_TEMPLATE)
    definitions = schema.pop("$defs", {})
    return {**definitions, "ErrorBody": schema}


def _reachable(schemas: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    """Only the component schemas the paths use, directly or through each other."""
    seen: set[str] = set()
    pending = _refs(paths)
    while pending:
        name = pending.pop()
        if name in seen or name not in schemas:
            continue
        seen.add(name)
        pending |= _refs(schemas[name])
    return {name: schemas[name] for name in sorted(seen)}


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"].removeprefix(COMPONENT_REF_PREFIX)} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node)) if node else set()
    return set()
