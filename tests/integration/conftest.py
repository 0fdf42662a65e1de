"""The one local stack of the run (``refund-sorter local``, started as a user starts it), reset and rebuilt from
infra/template.yaml for each test.

Integration tests talk to its moto server; the API tests start their own in-process API in front of it (they
patch and inspect the handler), and the example notebook's test uses the stack's own API.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import pytest

from refund_sorter.config import Settings, get_settings
from refund_sorter.storage.bucket import PhotoBucket
from refund_sorter.storage.clients import reset_clients
from refund_sorter.storage.dynamodb import DynamoResultStore
from refund_sorter.vision.sorter import get_sorter
from refund_sorter_cli.local_stack import function_environment, make_api_app
from refund_sorter_cli.template import Template
from tests.contract import CONTRACT_FIELDS  # noqa: F401 - re-exported: the API tests take it from here
from tests.stack_process import RunningStack, StackError, running_stack

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The real ``refund-sorter local`` on ports the OS picks (``--moto-port 0 --api-port 0``), for the run."""
    log = tmp_path_factory.mktemp("local-stack") / "stack.log"
    try:
        with running_stack(log) as stack:
            yield stack
    except StackError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def moto_endpoint(local_stack: RunningStack) -> Iterator[str]:
    """The stack's moto server, with this process's boto3 pointed at it."""
    patch = pytest.MonkeyPatch()
    # Set before any client exists; with AWS_ENDPOINT_URL set, boto3 never reaches for real AWS.
    for key, value in local_stack.aws_environment.items():
        patch.setenv(key, value)
    patch.delenv("AWS_PROFILE", raising=False)
    reset_clients()
    yield local_stack.moto_url
    patch.undo()
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
def aws(local_stack: RunningStack, moto_endpoint: str, template: Template, monkeypatch: pytest.MonkeyPatch) -> LocalAws:
    resources = local_stack.reset(template)
    if get_sorter.cache_info().currsize:  # a head another test activated is gone with the reset tables: read anew
        get_sorter().heads.forget()
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


@pytest.fixture
def api(start_api: StartApi) -> str:
    """The local API (the real predict handler behind the API Gateway stand-in) on this test's stack."""
    return start_api()
