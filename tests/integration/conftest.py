"""A moto server on 127.0.0.1 for the whole run, reset and rebuilt from infra/template.yaml for each test."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import pytest

from refund_sorter.config import Settings, get_settings
from refund_sorter.storage.bucket import PhotoBucket
from refund_sorter.storage.clients import reset_clients
from refund_sorter.storage.dynamodb import DynamoResultStore
from refund_sorter_cli.local_stack import create_resources, function_environment, make_api_app
from refund_sorter_cli.template import Template

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client


# design.md §3: the fields every Result carries (one DynamoDB item, one CSV row, one API body)
CONTRACT_FIELDS = frozenset(
    {"id", "source", "status", "prediction", "confidence", "label", "label_confidence", "top_k", "model_version",
     "timestamp"}
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    patch = pytest.MonkeyPatch()
    endpoint = f"http://127.0.0.1:{port}"
    # Set before any client exists; with AWS_ENDPOINT_URL set, boto3 never reaches for real AWS.
    patch.setenv("AWS_ENDPOINT_URL", endpoint)
    patch.setenv("AWS_ACCESS_KEY_ID", "testing")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    patch.delenv("AWS_PROFILE", raising=False)
    reset_clients()
    yield endpoint
    patch.undo()
    server.stop()
    reset_clients()


@pytest.fixture(scope="session")
def template() -> Template:
    return Template()


@dataclass
class LocalAws:
    """The per-test stack: fresh bucket and tables named and shaped as the template says."""

    endpoint: str
    template: Template
    resources: dict[str, str]
    settings: Settings
    s3: S3Client
    dynamodb: DynamoDBClient

    @property
    def bucket(self) -> PhotoBucket:
        return PhotoBucket(self.settings, self.s3)

    @property
    def store(self) -> DynamoResultStore:
        return DynamoResultStore(self.settings.table, self.dynamodb)

    def put_photo(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.settings.bucket, Key=key, Body=data)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.settings.bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def items(self) -> list[dict[str, Any]]:
        pages = self.dynamodb.get_paginator("scan").paginate(TableName=self.settings.table)
        return [item for page in pages for item in page["Items"]]


@pytest.fixture
def aws(moto_endpoint: str, template: Template, monkeypatch: pytest.MonkeyPatch) -> LocalAws:
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))
    resources = create_resources(template)
    for key, value in function_environment(template, "PredictFunction").items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    settings = get_settings()
    return LocalAws(
        endpoint=moto_endpoint,
        template=template,
        resources=resources,
        settings=settings,
        s3=boto3.client("s3"),
        dynamodb=boto3.client("dynamodb"),
    )


@pytest.fixture
def photo_server() -> Iterator[str]:
    """Serves the wheel photos (coffee.png, chelsea.png, …) on 127.0.0.1, on a port the OS chooses."""
    import functools
    import http.server
    import threading

    from refund_sorter_cli.samples import photo_path

    folder = photo_path("skimage/coffee").parent
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class StartApi(Protocol):
    def __call__(self, prepare_event: Callable[[dict[str, Any]], None] | None = None) -> str: ...


@pytest.fixture
def start_api(aws: LocalAws) -> Iterator[StartApi]:
    """Starts the local API (the API Gateway stand-in and the real handler) on 127.0.0.1; returns its URL.
    ``prepare_event`` adds to each event what API Gateway would (an authorizer's claims, stage variables)."""
    import threading

    from werkzeug.serving import make_server

    from refund_sorter.api.service import get_service

    servers = []

    def start(prepare_event: Callable[[dict[str, Any]], None] | None = None) -> str:
        get_service.cache_clear()  # the service reads the table and bucket names of this test's stack
        server = make_server("127.0.0.1", 0, make_api_app(aws.template, prepare_event), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
    get_service.cache_clear()
