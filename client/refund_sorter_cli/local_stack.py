"""The embedded local stack: moto on 127.0.0.1:5000 and the HTTP API on 127.0.0.1:3000.

The ports come from ``REFUND_SORTER_MOTO_PORT`` / ``REFUND_SORTER_API_PORT`` (or ``refund-sorter local
--moto-port/--api-port``); both are claimed before anything is served, so a taken port is an error at once.

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

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from refund_sorter.api.schemas import INLINE_PHOTO_BYTES, INVOCATION_PAYLOAD_BYTES
from refund_sorter_cli.net import HOST, PortInUseError, is_loopback_url, listen
from refund_sorter_cli.template import LOCAL_ACCOUNT, LOCAL_REGION, Template

if TYPE_CHECKING:
    from collections.abc import Callable
    from socket import socket
    from types import ModuleType

    from werkzeug.serving import BaseWSGIServer
    from werkzeug.wrappers import Request as WerkzeugRequest
    from werkzeug.wrappers import Response as WerkzeugResponse

logger = logging.getLogger(__name__)

LOCAL_STAGE = "local"
API_FUNCTION = "PredictFunction"
# Only the local stack may fetch URLs on loopback (the demo serves a photo from a throwaway local server).
LOCAL_ONLY_ENVIRONMENT = {
    "REFUND_SORTER_ALLOW_PRIVATE_URLS": "true",
    "POWERTOOLS_TRACE_DISABLED": "true",
    # `refund-sorter models activate` reaches the running local API in seconds (in AWS: 60 s, one read a minute)
    "REFUND_SORTER_HEAD_POINTER_TTL_SECONDS": "5",
}


# How a person changes each port: named in the error when the port is taken.
PORT_OPTIONS = {
    "moto": ("--moto-port", "REFUND_SORTER_MOTO_PORT"),
    "API": ("--api-port", "REFUND_SORTER_API_PORT"),
}


class LocalStackError(Exception):
    """The local stack cannot start (or is not there); the message says what to do about it."""


class LocalPortInUseError(LocalStackError):
    """One of the stack's ports is taken by another program."""

    def __init__(self, port: int, service: str) -> None:
        flag, variable = PORT_OPTIONS[service]
        super().__init__(
            f"port {port} on {HOST} ({service}) is already in use: stop the program using it, "
            f"or choose another port with {flag} or {variable}"
        )
        self.port = port
        self.service = service


class LocalPorts(BaseSettings):
    """Where the local stack listens: ``REFUND_SORTER_MOTO_PORT`` and ``REFUND_SORTER_API_PORT``.

    The defaults are the ports ``moto_server`` and ``sam local start-api`` use; 0 means "any free port".
    """

    model_config = SettingsConfigDict(env_prefix="REFUND_SORTER_", extra="ignore")

    moto_port: int = Field(5000, ge=0, le=65535, description="moto (S3, DynamoDB)")
    api_port: int = Field(3000, ge=0, le=65535, description="the local API Gateway stand-in")

    @classmethod
    def from_environment(cls) -> LocalPorts:
        """The ports the environment names, or a :class:`LocalStackError` naming the variable that is wrong."""
        try:
            return cls()
        except ValidationError as exc:
            error = exc.errors()[0]
            variable = f"REFUND_SORTER_{str(error['loc'][0]).upper()}"
            raise LocalStackError(f"{variable}={error.get('input')!r} is not a port number (0-65535)") from exc


def local_endpoint() -> str:
    """The moto server of a local stack started with this environment's ports."""
    return f"http://{HOST}:{LocalPorts.from_environment().moto_port}"


def endpoint_url() -> str:
    return os.environ.get("AWS_ENDPOINT_URL") or local_endpoint()


def use_local_aws(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Point boto3 at the local moto server unless the environment names another endpoint."""
    if not environ.get("AWS_ENDPOINT_URL"):
        environ["AWS_ENDPOINT_URL"] = local_endpoint()
    if is_loopback_url(environ["AWS_ENDPOINT_URL"]):
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


# API Gateway's own limit on a request payload: a bigger body is refused (413) before anything else.
MAX_API_BODY = 10 * 1024 * 1024
# Below it, the event API Gateway makes of the request must fit a synchronous Lambda invocation
# (refund_sorter.api.schemas.INVOCATION_PAYLOAD_BYTES): API Gateway answers 413 to one that does not.
OVER_THE_INVOCATION_LIMIT = (
    f"the request is over the {INVOCATION_PAYLOAD_BYTES:,} bytes a Lambda invocation carries (API Gateway refuses "
    f"it in AWS): send a photo over {INLINE_PHOTO_BYTES / 1e6:.1f} MB by s3_key or url, not as image_base64"
)
# The names a request to the local API may carry in its Host header: the address it listens on. Any other name
# reaching 127.0.0.1 is a page on another site whose DNS answer was switched to loopback (DNS rebinding), which
# would then read the API's answers as its own origin. In AWS, API Gateway routes by Host: no such request
# reaches the function, so the check is the stand-in's, not the package's.
LOCAL_API_HOSTS = (HOST, "localhost")


def _refusal(code: str, message: str) -> WerkzeugResponse:
    """An answer of the stand-in's own, in the API's error shape (:mod:`refund_sorter.api.errors`)."""
    from werkzeug.wrappers import Response

    from refund_sorter.api.errors import STATUS_BY_CODE, error_body
    from refund_sorter.errors import ErrorCode

    status = STATUS_BY_CODE[ErrorCode(code)]
    return Response(json.dumps(error_body(ErrorCode(code), message)), status=status, content_type="application/json")


def refuse_before_the_function(request: WerkzeugRequest) -> WerkzeugResponse | None:
    """What API Gateway (or, for Host, its routing) would refuse before the function sees the request."""
    from werkzeug.sansio.utils import host_is_trusted

    host = request.headers.get("Host")
    if not host_is_trusted(host.lower() if host else None, LOCAL_API_HOSTS):
        return _refusal("unknown_host", f"Host {host!r} is not this local API: use http://{HOST}:<port>")
    if (request.content_length or 0) > MAX_API_BODY:
        return _refusal("file_too_large", f"the request body is over API Gateway's {MAX_API_BODY:,} bytes")
    return None


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
        refused = refuse_before_the_function(request)
        if refused is not None:
            return refused
        event = api_gateway_event(template, request)
        if prepare_event is not None:
            prepare_event(event)
        if len(json.dumps(event, separators=(",", ":")).encode()) > INVOCATION_PAYLOAD_BYTES:
            return _refusal("file_too_large", OVER_THE_INVOCATION_LIMIT)
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
    """moto + the local API, started and stopped together.

    Ports default to :class:`LocalPorts` (the environment); 0 picks a free one, and after :meth:`start` the
    fields hold the ports actually used.
    """

    template: Template
    moto_port: int = field(default_factory=lambda: LocalPorts.from_environment().moto_port)
    api_port: int = field(default_factory=lambda: LocalPorts.from_environment().api_port)
    resources: dict[str, str] = field(default_factory=dict)
    _servers: list[_Serving] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def moto_url(self) -> str:
        return f"http://{HOST}:{self.moto_port}"

    def start(self) -> LocalStack:
        """Claim both ports (:class:`LocalPortInUseError` if either is taken), then serve moto and the API."""
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

        moto_socket = _claim(self.moto_port, "moto")
        try:
            api_socket = _claim(self.api_port, "API")
        except LocalStackError:
            moto_socket.close()
            raise
        self.moto_port, self.api_port = moto_socket.getsockname()[1], api_socket.getsockname()[1]
        try:
            # What moto.server.ThreadedMotoServer serves, on the socket claimed above.
            moto_app = DomainDispatcherApplication(create_backend_app)
            self._servers.append(_Serving.start("moto", moto_socket, moto_app, MotoRequestHandler))
            os.environ["AWS_ENDPOINT_URL"] = self.moto_url
            use_local_aws()
            self.resources = create_resources(self.template)
            self._servers.append(_Serving.start("local-api", api_socket, make_api_app(self.template)))
        except BaseException:
            self.stop()
            moto_socket.close()
            api_socket.close()
            raise
        return self

    def client_environment(self) -> dict[str, str]:
        """What another shell needs to reach this stack (the AWS CLI, boto3, the CLI, the example notebook)."""
        function = function_environment(self.template, API_FUNCTION)
        return {
            "AWS_ENDPOINT_URL": self.moto_url,
            # moto takes any credentials, but boto3 and the AWS CLI refuse to send a request without some.
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": LOCAL_REGION,
            "REFUND_SORTER_BUCKET": function["REFUND_SORTER_BUCKET"],
            "REFUND_SORTER_TABLE": function["REFUND_SORTER_TABLE"],
            "REFUND_SORTER_API_URL": self.api_url,
        }

    def stop(self) -> None:
        while self._servers:
            self._servers.pop().stop()


def _claim(port: int, service: str) -> socket:
    try:
        return listen(port)
    except PortInUseError as exc:
        raise LocalPortInUseError(port, service) from exc


@dataclass
class _Serving:
    """A werkzeug server on an already listening socket, in a daemon thread."""

    server: BaseWSGIServer
    thread: threading.Thread

    @classmethod
    def start(cls, name: str, sock: socket, app: Callable[..., Any], handler: Any = None) -> _Serving:
        from werkzeug.serving import make_server

        # werkzeug serves a duplicate of the descriptor (socket.fromfd), so ours is closed right after.
        with sock:
            server = make_server(HOST, 0, app, threaded=True, request_handler=handler, fd=sock.fileno())
        thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
        thread.start()
        return cls(server, thread)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
