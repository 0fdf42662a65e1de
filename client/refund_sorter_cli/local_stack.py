"""The embedded local stack: moto on 127.0.0.1:5000 and the HTTP API on 127.0.0.1:3000.

Everything is built from ``infra/template.yaml``: the bucket and tables from their resource properties,
each function's environment from Globals + its own (as ``sam local invoke`` does), and the API's routes
from the predict function's events. A request to the local API becomes an API Gateway (REST, v1) proxy
event for the very handler Lambda runs.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from refund_sorter_cli.template import LOCAL_ACCOUNT, LOCAL_REGION, Template

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from werkzeug.wrappers import Request as WerkzeugRequest

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
MOTO_PORT = int(os.environ.get("REFUND_SORTER_MOTO_PORT", "5000"))
API_PORT = int(os.environ.get("REFUND_SORTER_API_PORT", "3000"))
LOCAL_STAGE = "local"
API_FUNCTION = "PredictFunction"
# Only the local stack may fetch URLs on loopback (the demo serves a photo from a throwaway local server).
LOCAL_ONLY_ENVIRONMENT = {"REFUND_SORTER_ALLOW_PRIVATE_URLS": "true", "POWERTOOLS_TRACE_DISABLED": "true"}


def endpoint_url() -> str:
    return os.environ.get("AWS_ENDPOINT_URL") or f"http://{HOST}:{MOTO_PORT}"


def use_local_aws(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Point boto3 at the local moto server unless the environment names another endpoint."""
    environ.setdefault("AWS_ENDPOINT_URL", f"http://{HOST}:{MOTO_PORT}")
    if environ["AWS_ENDPOINT_URL"].startswith(f"http://{HOST}"):
        # moto accepts any credentials; these keep boto3 from looking for real ones.
        environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    environ.setdefault("AWS_DEFAULT_REGION", LOCAL_REGION)


def function_environment(template: Template, logical_id: str) -> dict[str, str]:
    """A function's environment as the template gives it, plus what only the local stack sets."""
    return template.function(logical_id).environment | LOCAL_ONLY_ENVIRONMENT


def apply_function_environment(template: Template, logical_id: str) -> None:
    """Set the function's environment in this process (values already in the environment win)."""
    for key, value in function_environment(template, logical_id).items():
        os.environ.setdefault(key, value)
    from refund_sorter.config import get_settings
    from refund_sorter.storage.clients import reset_clients

    get_settings.cache_clear()
    reset_clients()


def create_resources(template: Template) -> dict[str, str]:
    """Create the template's bucket(s) and tables on the endpoint; returns logical id → physical name."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint_url(), region_name=LOCAL_REGION)
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint_url(), region_name=LOCAL_REGION)
    created: dict[str, str] = {}
    for logical_id, resource in template.resources_of_type("AWS::S3::Bucket").items():
        name = template.physical_name(logical_id)
        s3.create_bucket(Bucket=name)
        properties = resource.get("Properties", {})
        if properties.get("VersioningConfiguration", {}).get("Status") == "Enabled":
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        created[logical_id] = name
    existing = set(dynamodb.list_tables()["TableNames"])
    for logical_id, resource in template.resources_of_type("AWS::DynamoDB::Table").items():
        name = template.physical_name(logical_id)
        created[logical_id] = name
        if name in existing:
            continue
        properties = resource["Properties"]
        definition = {
            key: properties[key]
            for key in ("KeySchema", "AttributeDefinitions", "GlobalSecondaryIndexes", "BillingMode")
            if key in properties
        }
        dynamodb.create_table(TableName=name, **definition)
        if "TimeToLiveSpecification" in properties:
            dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=properties["TimeToLiveSpecification"])
    return created


@dataclass
class LambdaContext:
    """The parts of Lambda's context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{self.function_name}"

    @property
    def function_version(self) -> str:
        return "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self.started)) * 1000))


@cache
def _handler_module(code_dir: str, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, f"{code_dir}/{module_name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no handler module {module_name} in {code_dir}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_handler(template: Template, logical_id: str) -> Callable[[dict[str, Any], Any], Any]:
    """Import a function's handler from its CodeUri, as Lambda would (after its environment is set)."""
    spec = template.function(logical_id)
    module_name, _, attribute = spec.handler.rpartition(".")
    return getattr(_handler_module(str(spec.code_dir), module_name), attribute)


def invoke(template: Template, logical_id: str, event: dict[str, Any]) -> Any:
    """Run a function's handler in this process with its template environment (like ``sam local invoke``)."""
    apply_function_environment(template, logical_id)
    spec = template.function(logical_id)
    context = LambdaContext(template.physical_name(logical_id), spec.memory, spec.timeout)
    return load_handler(template, logical_id)(event, context)


def api_gateway_event(template: Template, request: WerkzeugRequest) -> dict[str, Any]:
    """The REST API (v1) proxy event API Gateway would send for this request."""
    path = request.path
    method = request.method.upper()
    resource, path_parameters = path, None
    for route in template.api_routes(API_FUNCTION):
        match = route.pattern.match(path)
        if match and route.method in (method, "ANY"):
            resource, path_parameters = route.path, match.groupdict()
            break
    body = request.get_data()
    text_body = _as_text(body) if body else None
    query = request.args
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": dict(request.headers.items()),
        "multiValueHeaders": {k: request.headers.getlist(k) for k in request.headers.keys()},  # noqa: SIM118
        "queryStringParameters": {k: query[k] for k in query} or None,
        "multiValueQueryStringParameters": {k: query.getlist(k) for k in query} or None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": path,
            "stage": LOCAL_STAGE,
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": request.remote_addr or HOST, "userAgent": request.user_agent.string},
            "accountId": LOCAL_ACCOUNT,
        },
        "body": text_body if text_body is not None else (base64.b64encode(body).decode() if body else None),
        "isBase64Encoded": bool(body) and text_body is None,
    }


def _as_text(body: bytes) -> str | None:
    """The body as text, or None if it is binary (API Gateway then base64-encodes it)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


# API Gateway's own limit on a request payload: a bigger body never reaches Lambda.
MAX_API_BODY = 10 * 1024 * 1024


def make_api_app(
    template: Template, prepare_event: Callable[[dict[str, Any]], None] | None = None
) -> Callable[..., Any]:
    """A WSGI app standing in for API Gateway in front of the predict function. ``prepare_event`` may add to each
    event what API Gateway would in AWS (tests: an authorizer's claims, the stage's variables)."""
    from werkzeug.wrappers import Request, Response

    apply_function_environment(template, API_FUNCTION)
    handler = load_handler(template, API_FUNCTION)
    spec = template.function(API_FUNCTION)
    lock = threading.Lock()  # one request at a time, like one Lambda execution environment

    @Request.application
    def app(request: Request) -> Response:
        if (request.content_length or 0) > MAX_API_BODY:
            message = {"error": {"code": "file_too_large", "message": "request body over API Gateway's 10 MB"}}
            return Response(json.dumps(message), status=413, content_type="application/json")
        event = api_gateway_event(template, request)
        if prepare_event is not None:
            prepare_event(event)
        with lock:
            reply = handler(event, LambdaContext(template.physical_name(API_FUNCTION), spec.memory, spec.timeout))
        body = reply.get("body") or ""
        data = base64.b64decode(body) if reply.get("isBase64Encoded") else body.encode("utf-8")
        response = Response(data, status=reply["statusCode"])
        response.headers.clear()
        for key, values in (reply.get("multiValueHeaders") or {}).items():
            for value in values:
                response.headers.add(key, value)
        for key, value in (reply.get("headers") or {}).items():
            response.headers[key] = value
        return response

    return app


@dataclass
class LocalStack:
    """moto + the local API, started and stopped together."""

    template: Template
    moto_port: int = MOTO_PORT
    api_port: int = API_PORT
    _moto: Any = None
    _api: Any = None
    _api_thread: threading.Thread | None = None

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def moto_url(self) -> str:
        return f"http://{HOST}:{self.moto_port}"

    def start(self) -> LocalStack:
        from moto.server import ThreadedMotoServer
        from werkzeug.serving import make_server

        self._moto = ThreadedMotoServer(ip_address=HOST, port=self.moto_port, verbose=False)
        self._moto.start()
        os.environ["AWS_ENDPOINT_URL"] = self.moto_url
        use_local_aws()
        create_resources(self.template)
        self._api = make_server(HOST, self.api_port, make_api_app(self.template), threaded=True)
        self._api_thread = threading.Thread(target=self._api.serve_forever, name="local-api", daemon=True)
        self._api_thread.start()
        return self

    def stop(self) -> None:
        if self._api is not None:
            self._api.shutdown()
            self._api.server_close()
            self._api = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None


def wait_for_port(url: str, timeout: float = 10.0) -> None:
    import socket

    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((parts.hostname or HOST, parts.port or 80), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
