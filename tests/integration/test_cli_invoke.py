"""``refund-sorter invoke``: on the local stack, the function runs as Lambda would run it (its own process,
through the one emulator, :class:`LocalLambdas`); with ``--aws`` the deployed function does the work
(``lambda:Invoke``), so the local-only environment (``REFUND_SORTER_ALLOW_PRIVATE_URLS=true``, which turns the
SSRF guard off for the local demo) never meets real AWS."""

from __future__ import annotations

import http.server
import io
import json
import os
import threading
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from refund_sorter_cli.commands import main
from refund_sorter_cli.net import HOST
from tests.cli import run_cli

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.integration.conftest import LocalAws

EVENTS = Path(__file__).resolve().parents[2] / "events"
DEPLOYED = "refund-sorter-PredictFunction-a1b2c3"
PRIVATE = "REFUND_SORTER_ALLOW_PRIVATE_URLS"


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def private_server() -> Iterator[tuple[str, list[str]]]:
    """A server on this machine (a private address, what the SSRF guard keeps the API from fetching)."""
    requests: list[str] = []
    handler = type("Recorder", (_Recorder,), {"requests": requests})
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{HOST}:{server.server_address[1]}/photo.jpg", requests
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture
def deployed_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """ "Real AWS" (moto in this process; its Lambda answers each invocation with the event it was sent)."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for key in [k for k in os.environ if k.startswith("REFUND_SORTER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws(config={"lambda": {"use_docker": False}}):
        role = boto3.client("iam").create_role(RoleName="predict", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("predict_handler.py", "def handler(event, context):\n    return event\n")
        boto3.client("lambda").create_function(
            FunctionName=DEPLOYED, Runtime="python3.12", Role=role, Handler="predict_handler.handler",
            Code={"ZipFile": code.getvalue()},
        )  # fmt: skip
        yield


def url_event(tmp_path: Path, url: str) -> Path:
    event: dict[str, Any] = json.loads((EVENTS / "api-post-prediction-url.json").read_text(encoding="utf-8"))
    event["body"] = json.dumps({"url": url})
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    return path


@pytest.mark.usefixtures("deployed_stack")
def test_invoke_aws_asks_the_deployed_function_and_never_turns_the_ssrf_guard_off(
    tmp_path: Path,
    private_server: tuple[str, list[str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, fetched = private_server
    event = url_event(tmp_path, url)
    monkeypatch.setenv("REFUND_SORTER_PREDICT_FUNCTION", DEPLOYED)  # from the stack output PredictFunctionName
    # WHEN a person invokes the deployed function with an event naming a private URL
    assert main(["invoke", "PredictFunction", "--event", str(event), "--aws"]) == 0
    # THEN the deployed function got the event (moto's Lambda answers with it) and nothing ran here
    assert json.loads(capsys.readouterr().out) == json.loads(event.read_text(encoding="utf-8"))
    assert fetched == [], "nothing on this machine fetched the private URL"
    assert PRIVATE not in os.environ


@pytest.mark.usefixtures("deployed_stack")
def test_invoke_aws_without_the_deployed_name_says_so_and_runs_nothing_here(
    tmp_path: Path, private_server: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, fetched = private_server
    # (this ran the handler here, against AWS, with the SSRF guard off: the private URL was fetched)
    assert main(["invoke", "PredictFunction", "--event", str(url_event(tmp_path, url)), "--aws"]) == 2
    assert "REFUND_SORTER_PREDICT_FUNCTION" in capsys.readouterr().err
    assert fetched == []
    assert PRIVATE not in os.environ


def test_invoke_on_the_local_stack_runs_the_function_in_an_environment_of_its_own(
    aws: LocalAws, photo_server: str, tmp_path: Path
) -> None:
    event = url_event(tmp_path, f"{photo_server}/coffee.png")
    completed = run_cli("invoke", "PredictFunction", "--event", str(event), env={"AWS_ENDPOINT_URL": aws.endpoint})
    assert completed.returncode == 0, completed.stderr
    reply = json.loads(completed.stdout)
    # the local stack may fetch from this machine (the demo does): the local-only environment, locally
    assert reply["statusCode"] == 201, reply
    assert json.loads(reply["body"])["source"] == f"{photo_server}/coffee.png"
