"""SnapStart, emulated in this process: the hooks the predict handler registers run as Lambda runs them.

Lambda's runtime imports the handler (init), calls every ``snapshot_restore_py`` before-snapshot hook, saves the
process, and in each restored copy calls the after-restore hooks before the first request. Here the same
registry (the real ``snapshot_restore_py`` package, a dev dependency) is run by hand; the "restored" process
finds itself on another network: its boto3 clients from before the snapshot point at an address where nothing
listens, and only new clients reach the moto server.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import snapshot_restore_py

from refund_sorter.api import snapstart
from refund_sorter.api.service import get_service
from refund_sorter.storage import clients
from refund_sorter.vision.sorter import get_sorter
from refund_sorter_cli.local_stack import LambdaContext
from refund_sorter_cli.net import refused_port
from tests.odd_images import FORMAT_FIXTURES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import ModuleType

    from refund_sorter_cli.template import Template
    from tests.integration.conftest import LocalAws

EVENTS = Path(__file__).resolve().parents[2] / "events"


def init_handler(template: Template) -> ModuleType:
    """Import the predict handler from its CodeUri as Lambda's init does: a new module object every time (the
    local stack's loader keeps one per process), so the hooks it registers land in this test's registry."""
    function = template.function("PredictFunction")
    module_name = function.handler.rpartition(".")[0]
    spec = importlib.util.spec_from_file_location(f"snapstart_{module_name}", function.code_dir / f"{module_name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_hooks(registry: list[Any]) -> None:
    """What Lambda's runtime does with a snapshot_restore_py registry: call each (function, args, kwargs)."""
    for function, args, kwargs in registry:
        function(*args, **kwargs)


def post_event(photo: bytes) -> dict[str, Any]:
    event = json.loads((EVENTS / "api-post-prediction-base64.json").read_text())
    event["body"] = json.dumps({"image_base64": base64.b64encode(photo).decode()})
    return event


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty hook registries for this test (handlers imported by other tests registered theirs too)."""
    monkeypatch.setattr(snapshot_restore_py, "_before_snapshot_registry", [])
    monkeypatch.setattr(snapshot_restore_py, "_after_restore_registry", [])


@pytest.fixture
def fresh_process() -> Any:
    """No service, model or client yet, as in a new execution environment; cleaned up the same way after."""
    get_service.cache_clear()
    get_sorter.cache_clear()
    clients.reset_clients()
    yield
    get_service.cache_clear()
    clients.reset_clients()


@pytest.mark.usefixtures("registry", "fresh_process")
def test_handler_registers_the_hooks(aws: LocalAws) -> None:
    init_handler(aws.template)
    assert [f for f, _, _ in snapshot_restore_py.get_before_snapshot()] == [snapstart.prepare_snapshot]
    assert [f for f, _, _ in snapshot_restore_py.get_after_restore()] == [snapstart.refresh_after_restore]


@pytest.mark.usefixtures("registry", "fresh_process")
def test_before_snapshot_loads_the_model_and_makes_no_client(aws: LocalAws) -> None:
    # GIVEN a freshly initialised handler
    init_handler(aws.template)
    assert get_sorter.cache_info().currsize == 0
    # WHEN Lambda runs the before-snapshot hooks
    run_hooks(snapshot_restore_py.get_before_snapshot())
    # THEN the onnxruntime session exists (it ran an inference) and no network client was made
    assert "session" in vars(get_sorter().classifier)
    assert clients.s3_client.cache_info().currsize == 0
    assert clients.dynamodb_client.cache_info().currsize == 0


@pytest.fixture
def nowhere() -> Iterator[str]:
    """An endpoint that refuses connections (for the test's length)."""
    with refused_port() as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.usefixtures("registry", "fresh_process")
def test_a_restored_process_answers_with_new_clients(
    aws: LocalAws, nowhere: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a snapshot taken after init, in an environment whose network is gone after the restore: its clients
    # (made here on purpose, e.g. by a request served before the snapshot) point where nothing listens
    handler: Callable[[dict[str, Any], Any], Any] = init_handler(aws.template).lambda_handler
    run_hooks(snapshot_restore_py.get_before_snapshot())
    monkeypatch.setenv("AWS_ENDPOINT_URL", nowhere)
    monkeypatch.setenv("REFUND_SORTER_AWS_MAX_ATTEMPTS", "1")
    stale = get_service().store.client
    random.seed(7)
    copied_state = random.getstate()
    # WHEN the copy is restored on the network where the stack is, and Lambda runs the after-restore hooks
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
    run_hooks(snapshot_restore_py.get_after_restore())
    # THEN the first request (an iPhone HEIC) is answered through new clients, and random has its own state
    context = LambdaContext("refund-sorter-predict", 1024, 29)
    reply = handler(post_event((FORMAT_FIXTURES / "coffee-irot.heic").read_bytes()), context)
    assert reply["statusCode"] == 201, reply["body"]
    result = json.loads(reply["body"])
    assert result["department"] == "food_drink"
    assert get_service().store.client is not stale
    assert aws.store.get(result["id"]) is not None
    assert random.getstate() != copied_state
