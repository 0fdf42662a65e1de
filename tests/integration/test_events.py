"""The sample events in events/ (the ones `sam local invoke` users get) drive the real handlers."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from refund_sorter_cli.stepfunctions import LocalLambdas
from tests.handlers import call_handler
from tests.integration.conftest import LocalAws
from tests.integration.nightly import run_night, summary_of

EVENTS = Path(__file__).parents[2] / "events"


def event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def api(aws: LocalAws, name: str) -> dict[str, Any]:
    reply: dict[str, Any] = call_handler(aws.template, "PredictFunction", event(name))
    return reply


def test_api_events_in_the_order_a_user_would_send_them(aws: LocalAws, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the photo the s3-key event names, in the bucket the env file names
    aws.put_photo("incoming/return-1234.jpg", (EVENTS / "return-1234.jpg").read_bytes())
    assert json.loads((EVENTS / "env.json").read_text())["Parameters"]["REFUND_SORTER_BUCKET"] == aws.settings.bucket
    # THEN each event gets the answer its name promises
    assert api(aws, "api-health.json")["statusCode"] == 200
    created = api(aws, "api-post-prediction-s3-key.json")
    assert created["statusCode"] == 201, created["body"]
    prediction_id = json.loads(created["body"])["id"]
    assert event("api-get-prediction.json")["pathParameters"]["id"] == prediction_id  # the samples fit together
    assert api(aws, "api-get-prediction.json")["statusCode"] == 200
    patched = api(aws, "api-patch-prediction.json")
    assert json.loads(patched["body"])["status"] == "reviewed"
    assert api(aws, "api-post-prediction-base64.json")["statusCode"] == 201
    for name in ("api-list-predictions.json", "api-get-export.json", "api-list-departments.json", "api-swagger.json"):
        assert api(aws, name)["statusCode"] == 200, name
    assert api(aws, "api-bad-json.json")["statusCode"] == 400  # not JSON: invalid_json
    # the URL sample names example.com: offline, its name does not resolve, and the client is told so
    monkeypatch.setattr(socket, "getaddrinfo", _no_dns)
    refused = api(aws, "api-post-prediction-url.json")
    assert refused["statusCode"] == 422
    assert json.loads(refused["body"])["error"]["code"] in {"fetch_failed", "invalid_url"}


def _no_dns(*args: object, **kwargs: object) -> Any:
    raise socket.gaierror(socket.EAI_NONAME, "tests do not resolve public names")


def test_upload_event_classifies_the_new_photo(aws: LocalAws) -> None:
    aws.put_photo("incoming/return-1234.jpg", (EVENTS / "return-1234.jpg").read_bytes())
    report = call_handler(aws.template, "OnUploadFunction", event("s3-object-created.json"))
    assert report["processed"] == 1
    assert aws.keys("incoming/") == []
    assert len(aws.items()) == 1
    # the nightly run afterwards (the state machine, started with the schedule's sample input) finds nothing to do
    with LocalLambdas(aws.template) as lambdas:
        nightly = run_night(aws, lambdas)
    assert nightly.status == "SUCCEEDED"
    assert summary_of(nightly)["photos"] == 0
