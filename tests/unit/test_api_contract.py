"""The API's contract: the OpenAPI document shows the answers the API really gives, and one kind of mistake
gets one status and one readable message. Requests here are refused before any AWS call, so they run on
the real resolver in-process, without a stack."""

from __future__ import annotations

import base64
import json
import re
from http import HTTPStatus
from typing import Annotated, Any

import pytest
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from refund_sorter.api.app import ApiResolver, build_app
from refund_sorter.api.errors import STATUS_BY_CODE, register_error_handlers
from refund_sorter.api.openapi import CODES_KEY, refusals
from refund_sorter.api.schemas import DepartmentOut, ErrorBody, Health, ReviewRequest
from refund_sorter.errors import ErrorCode

ERROR_BODY_REF = {"$ref": "#/components/schemas/ErrorBody"}


@pytest.fixture(scope="module")
def app() -> ApiResolver:
    return build_app()


@pytest.fixture(scope="module")
def document(app: ApiResolver) -> dict[str, Any]:
    return json.loads(app.get_openapi_json_schema())


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in document["paths"].items() for method, op in item.items()]


def event(
    method: str,
    path: str,
    body: str | None = None,
    *,
    query: dict[str, str] | None = None,
    content_type: str | None = "application/json",
    base64_encoded: bool = False,
) -> dict[str, Any]:
    """An API Gateway (REST) proxy event, as API Gateway sends it."""
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": content_type} if content_type else {},
        "multiValueHeaders": {"Content-Type": [content_type]} if content_type else {},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": None,
        "requestContext": {"stage": "test", "httpMethod": method, "path": path, "requestId": "test"},
        "body": body,
        "isBase64Encoded": base64_encoded,
    }


def answer(app: ApiResolver, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    reply = app.resolve(request, None)  # type: ignore[arg-type]  # the routes here never read the context
    return reply["statusCode"], json.loads(reply["body"])


def test_every_error_code_has_exactly_one_status() -> None:
    # a code added without a decision here would be answered by its exception's kind, not by the policy
    assert set(STATUS_BY_CODE) == set(ErrorCode)


def test_error_codes_the_api_returns_are_in_the_enum() -> None:
    assert {"unsupported_media_type", "internal_error", "invalid_json"} <= {code.value for code in ErrorCode}


def test_the_document_has_no_error_shape_the_api_never_sends(document: dict[str, Any]) -> None:
    text = json.dumps(document)
    for never_sent in ("HTTPValidationError", "ValidationError", "ResponseValidationError", '"detail"'):
        assert never_sent not in text


def test_every_error_response_is_an_error_body_with_its_codes(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        errors = {int(status): r for status, r in op["responses"].items() if int(status) >= 400}
        assert {HTTPStatus.INTERNAL_SERVER_ERROR} <= set(errors), (method, path)
        for status, response in errors.items():
            assert response["content"] == {"application/json": {"schema": ERROR_BODY_REF}}, (method, path, status)
            assert response[CODES_KEY], (method, path, status)
            # each listed code is one this status carries, and the description names them for people
            assert {STATUS_BY_CODE[ErrorCode(code)] for code in response[CODES_KEY]} == {status}
            assert all(code in response["description"] for code in response[CODES_KEY])


def test_error_code_enum_is_documented_whole(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["ErrorCode"]["enum"] == [code.value for code in ErrorCode]
    assert schemas["ErrorDetail"]["properties"]["code"]["$ref"] == "#/components/schemas/ErrorCode"
    assert schemas["ErrorBody"]["required"] == ["error"]


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("POST", "/predictions", {200, 201, 400, 404, 409, 413, 415, 421, 422, 500, 503}),
        ("GET", "/predictions/{id}", {200, 404, 421, 422, 500, 503}),
        ("PATCH", "/predictions/{id}", {200, 400, 404, 409, 413, 415, 421, 422, 500, 503}),
        ("GET", "/predictions", {200, 421, 422, 500, 503}),
        ("GET", "/exports/{date}", {200, 303, 404, 421, 422, 500, 503}),
        ("GET", "/departments", {200, 421, 500}),
        ("GET", "/health", {200, 421, 500}),
    ],
)
def test_each_operation_documents_each_status_it_can_answer(
    document: dict[str, Any], method: str, path: str, statuses: set[int]
) -> None:
    assert {int(s) for s in document["paths"][path][method.lower()]["responses"]} == statuses


def test_create_prediction_documents_new_and_known_results(document: dict[str, Any]) -> None:
    responses = document["paths"]["/predictions"]["post"]["responses"]
    for status in ("201", "200"):
        assert responses[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Result"}
        assert responses[status]["links"]["GetPrediction"]["operationId"] == "getPrediction"
    photo_refusals = set(responses["422"][CODES_KEY])
    assert {"corrupt_image", "blocked_address", "invalid_request", "idempotency_key_reused"} <= photo_refusals


def test_prediction_request_documents_exactly_one_source(document: dict[str, Any]) -> None:
    schema = document["components"]["schemas"]["PredictionRequest"]
    assert [branch["required"] for branch in schema["oneOf"]] == [["url"], ["s3_key"], ["image_base64"]]
    assert schema["additionalProperties"] is False


def test_a_new_route_gets_the_standard_error_responses_by_default() -> None:
    # GIVEN a route added later, which declares only what its own service can refuse with
    router = Router()

    @router.put("/things/<thing_id>", responses={200: {"description": "ok"}, **refusals(ErrorCode.STORAGE_ERROR)})
    def put_thing(thing_id: Annotated[str, Path(max_length=8)], review: ReviewRequest) -> DepartmentOut:
        raise NotImplementedError

    @router.get("/plain")
    def plain() -> Health:
        raise NotImplementedError

    app = ApiResolver(enable_validation=True)
    app.include_router(router)
    # WHEN the document is generated
    document = json.loads(app.get_openapi_json_schema())
    # THEN its shape decides the rest: body → 400/413/415, inputs → 422, path parameters → 404, always 500 (and the
    # local stack's 421)
    put = document["paths"]["/things/{thing_id}"]["put"]["responses"]
    assert {int(s) for s in put} == {200, 400, 404, 413, 415, 421, 422, 500, 503}
    assert put["422"][CODES_KEY] == ["invalid_request"]
    assert {int(s) for s in document["paths"]["/plain"]["get"]["responses"]} == {200, 421, 500}
    assert "HTTPValidationError" not in json.dumps(document)


def test_a_route_declaring_a_default_status_lists_both_codes() -> None:
    router = Router()

    @router.get("/things", responses={200: {"description": "ok"}, **refusals(ErrorCode.CORRUPT_IMAGE)})
    def things(day: Annotated[str, Query()]) -> Health:
        raise NotImplementedError

    app = ApiResolver(enable_validation=True)
    app.include_router(router)
    responses = json.loads(app.get_openapi_json_schema())["paths"]["/things"]["get"]["responses"]
    assert responses["422"][CODES_KEY] == ["corrupt_image", "invalid_request"]


BAD_DAY = "'{day}' is not a date of the form YYYY-MM-DD"


@pytest.mark.parametrize("day", ["today", "2026-13-01", "2026-02-30", "25/11/2026", "20261125", "2026-11-25T00:00"])
def test_every_bad_day_gets_the_same_status_and_message(app: ApiResolver, day: str) -> None:
    reason = BAD_DAY.format(day=day)
    listing = answer(app, event("GET", "/predictions", query={"date": day}))
    assert listing == (422, {"error": {"code": "invalid_request", "message": f"query parameter 'date': {reason}"}})
    if "/" not in day:  # "/exports/25/11/2026" is another path: no route, 404
        export = answer(app, event("GET", f"/exports/{day}"))
        assert export == (422, {"error": {"code": "invalid_request", "message": f"path parameter 'date': {reason}"}})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"url": 5', "Expecting ',' delimiter (at character 9)"),
        ("not json", "Expecting value (at character 0)"),
        ('{"url": "http://x.test/a.jpg",}', "Expecting property name enclosed in double quotes (at character 30)"),
    ],
)
def test_malformed_json_is_400_invalid_json_with_the_reason(app: ApiResolver, body: str, reason: str) -> None:
    status, reply = answer(app, event("POST", "/predictions", body))
    assert (status, reply["error"]["code"]) == (400, "invalid_json")
    assert reply["error"]["message"] == f"the body is not valid JSON: {reason}"


NESTED_1000_DEEP = '{"url": ' + "[" * 1000 + "]" * 1000 + "}"
REVISION_OF_5000_DIGITS = '{"category": "shoes", "revision": ' + "9" * 5000 + "}"


@pytest.mark.parametrize(
    ("method", "path", "body", "reason"),
    [
        ("POST", "/predictions", NESTED_1000_DEEP, "it nests arrays or objects more than 32 deep"),
        ("PATCH", "/predictions/abc", NESTED_1000_DEEP.replace("url", "category"), "it nests arrays or objects more"),
        ("POST", "/predictions", '{"url": ' + "[" * 33 + "]" * 33 + "}", "it nests arrays or objects more than 32"),
        ("PATCH", "/predictions/abc", REVISION_OF_5000_DIGITS, "a number has more than 4300 digits"),
        ("POST", "/predictions", '{"url": "x", "n": -' + "1" * 4301 + "}", "a number has more than 4300 digits"),
    ],
    ids=["nested-1000-post", "nested-1000-patch", "nested-33", "revision-5000-digits", "negative-4301-digits"],
)
def test_json_the_reader_cannot_hold_is_400_invalid_json_not_500(
    app: ApiResolver, method: str, path: str, body: str, reason: str
) -> None:
    # Python's json raises RecursionError / ValueError for these, which were answered 500 internal_error
    status, reply = answer(app, event(method, path, body))
    assert (status, reply["error"]["code"]) == (400, "invalid_json"), reply
    assert reply["error"]["message"].startswith(f"the body is not JSON this API reads: {reason}")


def test_json_nested_as_deep_as_the_limit_is_read_and_refused_by_field(app: ApiResolver) -> None:
    status, reply = answer(app, event("POST", "/predictions", '{"url": ' + "[" * 31 + "]" * 31 + "}"))
    assert (status, reply["error"]["code"]) == (422, "invalid_request")


def test_a_body_that_is_not_utf8_is_400_invalid_json(app: ApiResolver) -> None:
    body = base64.b64encode(b'{"url": "\xff\xfe"}').decode()
    status, reply = answer(app, event("PATCH", "/predictions/abc", body, base64_encoded=True))
    assert (status, reply["error"]["code"]) == (400, "invalid_json")


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data", "text/plain", "application/merge-patch+json"],
)
def test_a_body_that_is_not_json_is_415(app: ApiResolver, content_type: str) -> None:
    status, reply = answer(app, event("POST", "/predictions", "url=x", content_type=content_type))
    assert (status, reply) == (
        415,
        {"error": {"code": "unsupported_media_type", "message": "send the body as application/json"}},
    )


@pytest.mark.parametrize(("method", "path"), [("POST", "/predictions"), ("PATCH", "/predictions/abc")])
def test_a_body_without_a_content_type_is_415_not_read_as_json(app: ApiResolver, method: str, path: str) -> None:
    # what a browser sends to another origin without a preflight when a page posts a Blob: in AWS too
    status, reply = answer(app, event(method, path, '{"url": "http://x.test/a.jpg"}', content_type=None))
    assert (status, reply) == (
        415,
        {"error": {"code": "unsupported_media_type", "message": "send the body as application/json (no Content-Type)"}},
    )


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (event("POST", "/predictions", "{}"), "body: give exactly one of url, s3_key, image_base64 (got none)"),
        (event("POST", "/predictions", None), "body: missing; send a JSON object"),
        (event("POST", "/predictions", "[]"), "body: must be a JSON object"),
        (event("POST", "/predictions", '{"url": 5}'), "body field 'url': Input should be a valid string"),
        (event("POST", "/predictions", '{"URL": "x"}'), "body field 'URL': not a field of this request"),
        (
            event("GET", "/predictions", query={"date": "2026-11-25", "limit": "0"}),
            "query parameter 'limit': Input should be greater than or equal to 1",
        ),
        (
            event("GET", "/predictions"),
            "query parameter 'date': Field required: date, or status=needs_review for the review queue",
        ),
        (event("GET", f"/predictions/{'a' * 65}"), "path parameter 'id': String should have at most 64 characters"),
    ],
    ids=["no-source", "no-body", "array", "wrong-type", "unknown-field", "limit", "no-date", "long-id"],
)
def test_invalid_fields_and_parameters_are_422_naming_what_is_wrong(
    app: ApiResolver, request_: dict[str, Any], message: str
) -> None:
    assert answer(app, request_) == (422, {"error": {"code": "invalid_request", "message": message}})


def test_no_route_is_404_not_found(app: ApiResolver) -> None:
    status, reply = answer(app, event("DELETE", "/predictions"))
    assert (status, reply["error"]["code"]) == (404, "not_found")


def _app_with(router: Router) -> ApiResolver:
    app = ApiResolver(enable_validation=True, response_validation_error_http_code=HTTPStatus.INTERNAL_SERVER_ERROR)
    app.include_router(router)
    register_error_handlers(app)
    return app


def test_an_answer_that_breaks_its_own_schema_is_our_500_not_the_clients_422() -> None:
    router = Router()

    @router.get("/broken")
    def broken() -> Health:
        return {"status": "not ok"}  # type: ignore[return-value]  # the bug under test

    status, reply = answer(_app_with(router), event("GET", "/broken"))
    assert (status, reply["error"]["code"]) == (500, "internal_error")
    ErrorBody.model_validate(reply)


def test_an_unexpected_exception_is_a_500_that_shows_no_internals() -> None:
    router = Router()

    @router.get("/crash")
    def crash() -> Health:
        raise KeyError("/var/task/secret_table_name")

    status, reply = answer(_app_with(router), event("GET", "/crash"))
    assert status == 500
    assert reply == {"error": {"code": "internal_error", "message": "something went wrong on our side; it is logged"}}


CAMEL_CASE = re.compile(r"[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)*")


def test_every_operation_has_a_unique_camel_case_operation_id(document: dict[str, Any]) -> None:
    # Powertools' default (review_prediction_predictions__id__patch) changes with the path; clients and links
    # name operations by these
    ids = [op.get("operationId", "") for _, _, op in operations(document)]
    assert all(CAMEL_CASE.fullmatch(operation_id) for operation_id in ids), ids
    assert len(set(ids)) == len(ids), ids


def test_every_link_names_an_operation_and_its_parameters(document: dict[str, Any]) -> None:
    by_id = {op["operationId"]: op for _, _, op in operations(document)}
    links = [
        (method, path, status, name, link)
        for method, path, op in operations(document)
        for status, response in op["responses"].items()
        for name, link in response.get("links", {}).items()
    ]
    assert links
    for method, path, status, name, link in links:
        target = by_id.get(link["operationId"])
        assert target is not None, (method, path, status, name, link["operationId"])
        parameters = {parameter["name"] for parameter in target.get("parameters", [])}
        assert set(link.get("parameters", {})) <= parameters, (method, path, status, name)
        assert ("requestBody" in link) <= ("requestBody" in target), (method, path, status, name)
        # each value is read from the answer the link hangs on: a field its schema has
        schema = document["components"]["schemas"]["Result"]
        values = [*link.get("parameters", {}).values(), *(link.get("requestBody") or {}).values()]
        for value in values:
            assert value.startswith("$response.body#/"), value
            assert value.removeprefix("$response.body#/") in schema["properties"], value


def test_the_review_loop_is_linked_from_create_to_undo(document: dict[str, Any]) -> None:
    def linked(path: str, method: str, status: str) -> set[str]:
        links = document["paths"][path][method]["responses"][status].get("links", {})
        return {link["operationId"] for link in links.values()}

    assert {"getPrediction", "reviewPrediction"} <= linked("/predictions", "post", "201")
    assert {"getPrediction", "reviewPrediction"} <= linked("/predictions", "post", "200")
    assert "undoReview" in linked("/predictions/{id}", "patch", "200")
    assert "reviewPrediction" in linked("/predictions/{id}/review", "delete", "200")
