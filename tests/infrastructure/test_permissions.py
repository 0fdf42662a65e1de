"""Least privilege, derived from the code: each function's policies grant exactly what its AWS calls need.

Each function's handler runs through scenarios that take every path that touches AWS (on the moto server, with
the template's environment, as ``sam local invoke`` would). Every AWS call made meanwhile is recorded —
Powertools' own calls included — and turned into the IAM permissions it needs (``permissions.needed``). The
test fails on a permission the template lacks (a new call without a policy) and on one no call needed (a
policy without a call). So that "no call needed it" cannot simply mean "no scenario ran it", every AWS call in
the runtime's source must have been made by some scenario: a new call fails until a scenario exercises it.

What this cannot see: a call that an existing scenario of one function exercises but that another function
reaches too without a scenario of its own. Give each function the scenarios of the paths it runs.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from refund_sorter.config import get_settings
from refund_sorter.jobs.chunks import Chunk
from refund_sorter.jobs.plan import LEASE
from refund_sorter.jobs.stored import classify_stored
from refund_sorter.storage.clients import reset_clients
from refund_sorter.storage.jobs_table import JobsTable
from refund_sorter.vision.sorter import Sorter, get_sorter
from refund_sorter_cli.local_stack import function_environment, make_api_app
from refund_sorter_cli.samples import photo_bytes
from refund_sorter_cli.stepfunctions import LambdaFunctionError, LocalLambdas, LocalStateMachine
from refund_sorter_cli.template import Template
from tests.conftest import CLOTHING
from tests.handlers import call_handler
from tests.infrastructure.permissions import (
    AwsCall,
    CallRecorder,
    Permission,
    aws_call_sites,
    granted,
    iam_string_like,
    listing_conditions,
    listing_prefix,
    needed,
)
from tests.integration.conftest import LocalAws
from tests.integration.nightly import schedule_event
from tests.stack_process import RunningStack

EVENTS = Path(__file__).resolve().parents[2] / "events"
CORRUPT_JPEG = b"\xff\xd8\xff\xe0 truncated"


def _event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ------------------------------------------------------------------------------------------------ scenarios


def _api_client(aws: LocalAws) -> Any:
    from werkzeug.test import Client

    from refund_sorter.api.service import get_service

    get_service.cache_clear()  # the service holds the store and bucket of the stack it was first made for
    return Client(make_api_app(aws.template))


def _answer(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json() if response.is_json else {}


def predict_scenarios(
    aws: LocalAws, recorder: CallRecorder, sorter: Sorter, patch: pytest.MonkeyPatch, head_folder: Path
) -> None:
    """Every route, and every way a photo can be named, as a client would send them."""
    aws.put_photo("incoming/fresh.png", photo_bytes("skimage/coffee"))
    aws.put_photo("incoming/moved.png", photo_bytes("skimage/chelsea"))
    aws.put_photo("incoming/broken.jpg", CORRUPT_JPEG)
    # the nightly job's part (not recorded): moved.png to processed/, broken.jpg to failed/
    done = classify_stored(sorter, aws.store, aws.bucket, [aws.bucket.head(k) for k in aws.keys("incoming/m")])
    done = classify_stored(sorter, aws.store, aws.bucket, [aws.bucket.head(k) for k in aws.keys("incoming/b")])
    assert done.failed == 1
    api = _api_client(aws)
    today = datetime.now(UTC).date().isoformat()
    with recorder.recording("PredictFunction"):
        created = _answer(api.post("/predictions", json={"s3_key": "incoming/fresh.png"}), 201)
        _answer(api.post("/predictions", json={"s3_key": "incoming/moved.png"}), 200)  # found in processed/
        _answer(api.post("/predictions", json={"s3_key": "failed/broken.jpg"}), 200)
        _answer(api.post("/predictions", json={"s3_key": "incoming/never-was.png"}), 404)
        sent = _answer(api.post("/predictions", json={"image_base64": _b64(photo_bytes("skimage/astronaut"))}), 201)
        _answer(api.post("/predictions", json={"s3_key": sent["photo_key"]}), 200)
        _answer(api.get(f"/predictions/{created['id']}"), 200)
        _answer(api.get(f"/predictions?date={today}"), 200)
        _answer(api.patch(f"/predictions/{created['id']}", json={"category": "home_kitchen"}), 200)
        # the review loop: the queue with its counts, a decision taken back, the photo, the night's summary
        _answer(api.get("/predictions?status=needs_review"), 200)
        _answer(api.get("/predictions?status=needs_review&order=informative"), 200)
        _answer(api.delete(f"/predictions/{created['id']}/review"), 200)
        _answer(api.get(f"/predictions/{created['id']}/photo?as=json"), 200)
        _answer(api.get(f"/summaries/{today}"), 200)
        _answer(api.get(f"/exports/{today}"), 200)
        with patch.context() as small:
            small.setattr("refund_sorter.api.service.INLINE_EXPORT_BYTES", 0)
            _answer(api.get(f"/exports/{today}"), 303)  # stored, and handed out as a presigned link
        retried = {"json": {"image_base64": _b64(photo_bytes("sklearn/china"))}, "headers": {"Idempotency-Key": "a"}}
        first = _answer(api.post("/predictions", **retried), 201)
        assert _answer(api.post("/predictions", **retried), 201)["id"] == first["id"]  # the first answer, replayed
        refused = {"json": {"image_base64": _b64(CORRUPT_JPEG)}, "headers": {"Idempotency-Key": "b"}}
        _answer(api.post("/predictions", **refused), 422)  # Powertools deletes its record of a failed request
        for path in ("/health", "/departments", "/swagger?format=json"):
            _answer(api.get(path), 200)
    activate_a_head(aws, head_folder)
    with recorder.recording("PredictFunction"):
        _answer(api.get("/departments"), 200)  # the active head's departments


def activate_a_head(aws: LocalAws, head_folder: Path) -> None:
    """Publish and activate a trained head (the CLI's part, not recorded): the functions then read the pointer
    and the version's files, which their policies must allow."""
    from refund_sorter_training.admin import ModelAdmin

    admin = ModelAdmin(aws.settings, aws.s3, aws.dynamodb)
    admin.activate(admin.publish(head_folder))
    get_sorter().heads.forget()


def _three_kinds_of_photo(aws: LocalAws) -> list[str]:
    """A new photo, a corrupt one, and one the API classified already (so the job only moves it)."""
    aws.put_photo("incoming/fresh.png", photo_bytes("skimage/coffee"))
    aws.put_photo("incoming/broken.jpg", CORRUPT_JPEG)
    aws.put_photo("incoming/by-api.png", photo_bytes("skimage/chelsea"))
    _answer(_api_client(aws).post("/predictions", json={"s3_key": "incoming/by-api.png"}), 201)
    return aws.keys("incoming/")


class InProcessLambdas(LocalLambdas):
    """The state machine's Lambda tasks, run in this process (the recorder sees only this process's calls).

    ``die_once_holding_a_photo``: the first ClassifyChunk invocation marks its chunk's first photo in flight and
    dies, as a worker killed by that photo would; the map's retry then takes the poison-photo path.
    """

    def __init__(self, aws: LocalAws, recorder: CallRecorder, *, die_once_holding_a_photo: bool = False) -> None:
        super().__init__(aws.template)
        self.aws, self.recorder, self.die = aws, recorder, die_once_holding_a_photo

    def invoke(self, function_name: str, payload: Any, **_: Any) -> Any:
        logical_id = self.logical_id(function_name)
        if logical_id == "ClassifyChunkFunction" and self.die:
            self.die = False
            chunk = Chunk.from_json(self.aws.bucket.get_bytes(payload["chunk"]["key"]))
            JobsTable(self.aws.settings.jobs_table).mark_in_flight(chunk.classify[0].result_id, str(chunk.index))
            raise LambdaFunctionError("Runtime.ExitError", "Runtime exited with error: signal: killed")
        with self.recorder.recording(logical_id):
            return call_handler(self.template, logical_id, payload)


def _night(aws: LocalAws, recorder: CallRecorder, *, die_once_holding_a_photo: bool = False) -> dict[str, Any]:
    lambdas = InProcessLambdas(aws, recorder, die_once_holding_a_photo=die_once_holding_a_photo)
    machine = LocalStateMachine(aws.template, lambdas, workers=1, s3=aws.s3, sleep=lambda _: None)
    execution = machine.start(schedule_event())
    assert execution.status == "SUCCEEDED", execution.error
    output: dict[str, Any] = execution.output
    return output


def nightly_scenarios(
    aws: LocalAws, recorder: CallRecorder, sorter: Sorter, patch: pytest.MonkeyPatch, head_folder: Path
) -> None:
    """The state machine's three functions: a night of the three kinds of photo; a night whose worker dies
    holding a photo (the retry fails that photo and goes one at a time); a night that finds another one going;
    a night with a custom head active."""
    _three_kinds_of_photo(aws)
    counts = _night(aws, recorder)["export"]["summary"]["counts"]
    assert (counts["classified"] + counts["needs_review"], counts["failed"], counts["already_done"]) == (1, 1, 1)
    aws.put_photo("incoming/poison.png", photo_bytes("skimage/coffee"))
    aws.put_photo("incoming/after-it.png", photo_bytes("skimage/chelsea"))
    counts = _night(aws, recorder, die_once_holding_a_photo=True)["export"]["summary"]["counts"]
    assert (counts["crashed"], counts["failed"], counts["classified"] + counts["needs_review"]) == (1, 1, 1)
    jobs = JobsTable(aws.settings.jobs_table)
    assert jobs.take_lease(LEASE, "another-run", 600) is not None
    assert _night(aws, recorder)["plan"]["skipped"] is True
    jobs.release_lease(LEASE, "another-run")
    activate_a_head(aws, head_folder)
    aws.put_photo("incoming/with-head.png", photo_bytes("skimage/coffee"))
    assert _night(aws, recorder)["export"]["summary"]["photos"] == 1


def upload_scenarios(
    aws: LocalAws, recorder: CallRecorder, sorter: Sorter, patch: pytest.MonkeyPatch, head_folder: Path
) -> None:
    keys = _three_kinds_of_photo(aws)
    event = _event("s3-object-created.json")
    (record,) = event["Records"]
    event["Records"] = [
        record | {"s3": record["s3"] | {"object": record["s3"]["object"] | {"key": key}}}
        for key in [*keys, "incoming/gone-already.png"]
    ]
    with recorder.recording("OnUploadFunction"):
        report = call_handler(aws.template, "OnUploadFunction", event)
    assert (report["processed"], report["failed"], report["already_done"], report["deferred"]) == (2, 1, 1, 0)
    activate_a_head(aws, head_folder)
    aws.put_photo("incoming/with-head.png", photo_bytes("skimage/coffee"))
    event["Records"] = [
        record | {"s3": record["s3"] | {"object": record["s3"]["object"] | {"key": "incoming/with-head.png"}}}
    ]
    with recorder.recording("OnUploadFunction"):
        assert call_handler(aws.template, "OnUploadFunction", event)["processed"] == 1


def _labelled_event(aws: LocalAws, keys: list[str]) -> dict[str, Any]:
    """The S3 notification of these objects as they are now (key, ETag, size)."""
    (record,) = _event("s3-object-created.json")["Records"]
    records = []
    for key in keys:
        head = aws.s3.head_object(Bucket=aws.settings.bucket, Key=key)
        found = {"key": key, "eTag": head["ETag"].strip('"'), "size": head["ContentLength"]}
        records.append(record | {"s3": record["s3"] | {"object": record["s3"]["object"] | found}})
    return {"Records": records}


def embed_scenarios(
    aws: LocalAws, recorder: CallRecorder, sorter: Sorter, patch: pytest.MonkeyPatch, head_folder: Path
) -> None:
    """Photos landing under labelled/ (one unreadable), and the catch-up on those that came without an event."""
    aws.put_photo("labelled/hat/a.png", photo_bytes("skimage/coffee"))
    aws.put_photo("labelled/hat/broken.jpg", CORRUPT_JPEG)
    with recorder.recording("EmbedLabelledFunction"):
        report = call_handler(aws.template, "EmbedLabelledFunction", _labelled_event(aws, aws.keys("labelled/")))
    assert (report["embedded"], list(report["failed"])) == (1, ["labelled/hat/broken.jpg"])
    aws.put_photo("labelled/shoes/b.png", photo_bytes("skimage/chelsea"))
    with recorder.recording("EmbedLabelledFunction"):
        report = call_handler(aws.template, "EmbedLabelledFunction", {"embed_missing": True})
    assert (report["embedded"], report["remaining"]) == (1, 0)


def train_scenarios(
    aws: LocalAws, recorder: CallRecorder, sorter: Sorter, patch: pytest.MonkeyPatch, head_folder: Path
) -> None:
    """Labelled photos with their features and a reviewed Result with its own (the other functions' part, not
    recorded); then a training that publishes and activates, and one refused for too few photos."""
    from refund_sorter.jobs.embed_labelled import embed_labelled

    for department in ("hat", "shoes"):
        for photo in sorted((CLOTHING / department).iterdir())[:10]:
            aws.put_photo(f"labelled/{department}/{photo.name}", photo.read_bytes())
    embed_labelled(sorter, aws.bucket, [aws.bucket.head(k) for k in aws.keys("labelled/")])
    aws.put_photo("incoming/hat.jpg", sorted((CLOTHING / "hat").iterdir())[-1].read_bytes())
    classify_stored(sorter, aws.store, aws.bucket, [aws.bucket.head("incoming/hat.jpg")])
    (result,) = aws.store.by_day(datetime.now(UTC).date().isoformat())
    aws.store.review(result.id, "hat", by="tester")
    with recorder.recording("TrainFunction"):
        summary = call_handler(aws.template, "TrainFunction", {"activate": True})
    assert summary["ok"] and summary["active"] and (summary["labelled"], summary["reviewed"]) == (20, 1)
    # a training whose champion is rolled back while it trains: it records, in its version, why it did not activate
    from refund_sorter_training import job
    from refund_sorter_training.admin import ModelAdmin

    reads = job.stack_data

    def read_then_someone_rolls_back(*args: Any) -> Any:
        data = reads(*args)
        ModelAdmin(aws.settings, aws.s3, aws.dynamodb).rollback(by="a person")
        return data

    patch.setattr(job, "stack_data", read_then_someone_rolls_back)
    with recorder.recording("TrainFunction"):
        raced = call_handler(aws.template, "TrainFunction", {"seed": 1, "activate": True})
    assert raced["ok"] and not raced["active"] and "changed while training" in raced["promotion"]["reason"]
    patch.setattr(job, "stack_data", reads)
    aws.s3.delete_object(Bucket=aws.settings.bucket, Key=aws.keys("labelled/shoes/")[0])
    with recorder.recording("TrainFunction"):
        assert not call_handler(aws.template, "TrainFunction", {})["ok"]


Scenarios = Callable[[LocalAws, CallRecorder, Sorter, pytest.MonkeyPatch, Path], None]
SCENARIOS: dict[str, Scenarios] = {
    "PredictFunction": predict_scenarios,
    "NightlyStateMachine": nightly_scenarios,
    "OnUploadFunction": upload_scenarios,
    "EmbedLabelledFunction": embed_scenarios,
    "TrainFunction": train_scenarios,
}
# The functions each scenario runs (and is recorded as), where that is not the scenario's own name.
FUNCTIONS_OF = {"NightlyStateMachine": ("PlanFunction", "ClassifyChunkFunction", "ExportFunction")}


def _functions(scenario: str) -> tuple[str, ...]:
    return FUNCTIONS_OF.get(scenario, (scenario,))


def _fresh_stack(stack: RunningStack, template: Template, scenario: str, patch: pytest.MonkeyPatch) -> LocalAws:
    resources = stack.reset(template)
    for function in _functions(scenario):
        for key, value in function_environment(template, function).items():
            patch.setenv(key, value)
    get_settings.cache_clear()
    reset_clients()
    return LocalAws(stack.moto_url, template, resources, get_settings(), boto3.client("s3"), boto3.client("dynamodb"))


@pytest.fixture(scope="module")
def stack_template() -> Template:
    return Template()


@pytest.fixture(scope="module")
def recorded(
    local_stack: RunningStack, moto_endpoint: str, stack_template: Template, sorter: Sorter, clothing_head: Path
) -> Iterator[dict[str, list[AwsCall]]]:
    """Every function's scenarios, run once, with the AWS calls each made."""
    from refund_sorter.api.service import get_service

    recorder = CallRecorder()
    with pytest.MonkeyPatch.context() as patch, recorder.installed():
        for scenario, scenarios in SCENARIOS.items():
            aws = _fresh_stack(local_stack, stack_template, scenario, patch)
            get_sorter.cache_clear()  # the function's own Sorter: it reads the active head from this stack
            scenarios(aws, recorder, sorter, patch, clothing_head)
    get_sorter.cache_clear()
    get_service.cache_clear()
    get_settings.cache_clear()
    reset_clients()
    yield recorder.calls


# ------------------------------------------------------------------------------------------------ the checks


FUNCTIONS = sorted(function for scenario in SCENARIOS for function in _functions(scenario))


def test_every_function_has_scenarios(stack_template: Template) -> None:
    assert set(stack_template.resources_of_type("AWS::Serverless::Function")) == set(FUNCTIONS)


def _needs(calls: list[AwsCall]) -> set[Permission]:
    return set().union(*(needed(call) for call in calls))


@pytest.mark.slow
@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_is_granted_exactly_what_its_calls_need(
    recorded: dict[str, list[AwsCall]], stack_template: Template, function: str
) -> None:
    needs = _needs(recorded[function])
    grants = granted(stack_template, function)
    assert not needs - grants, f"{function} calls AWS without permission for: {sorted(needs - grants)}"
    assert not grants - needs, f"{function} is granted what none of its calls needs: {sorted(grants - needs)}"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_lists_only_the_prefixes_its_calls_list(
    recorded: dict[str, list[AwsCall]], stack_template: Template, function: str
) -> None:
    # GIVEN the s3:prefix of every ListBucket check the function's calls made (a listing, or a read of a key
    # that must answer 404 when missing) and the patterns its ListBucket grants are conditioned on
    prefixes = {prefix for call in recorded[function] if (prefix := listing_prefix(call)) is not None}
    grants = listing_conditions(stack_template, function)
    if not prefixes:
        assert not grants, f"{function} is granted s3:ListBucket, which none of its calls needs"
        return
    # THEN every grant is conditioned (no function may list the whole bucket: exports/, labelled/, models/ …)
    tops = sorted({f"{prefix.partition('/')[0]}/*" if "/" in prefix else prefix for prefix in prefixes})
    assert grants and None not in grants, f"{function}: s3:ListBucket without an s3:prefix condition; needed: {tops}"
    patterns = {pattern for grant in grants if grant for pattern in grant}
    # every prefix a call used is allowed, and every pattern is one some call needed
    refused = sorted(p for p in prefixes if not any(iam_string_like(p, pattern) for pattern in patterns))
    assert not refused, f"{function} lists (or reads, to tell 404 from 403) outside its s3:prefix grant: {refused}"
    unused = sorted(pattern for pattern in patterns if not any(iam_string_like(p, pattern) for p in prefixes))
    assert not unused, f"{function} may list prefixes none of its calls needs: {unused}"


def test_iam_string_like_reads_patterns_as_iam_does() -> None:
    assert iam_string_like("incoming/a/b.jpg", "incoming/*")
    assert iam_string_like("incoming/", "incoming/*")
    assert not iam_string_like("incoming", "incoming/*")
    assert not iam_string_like("Incoming/a.jpg", "incoming/*")
    assert iam_string_like("runs/1/x", "runs/?/x")
    assert not iam_string_like("runs.1", "runs?1x")
    assert not iam_string_like("a+b", "a.b")


@pytest.mark.parametrize("function", ["PlanFunction", "ClassifyChunkFunction", "ExportFunction", "OnUploadFunction"])
def test_the_jobs_have_no_access_to_the_idempotency_table(stack_template: Template, function: str) -> None:
    table = stack_template.physical_name("IdempotencyTable")
    assert not [p for p in granted(stack_template, function) if p[1].endswith(f"table/{table}")]


@pytest.mark.slow
def test_every_aws_call_in_the_code_is_made_by_some_scenario(recorded: dict[str, list[AwsCall]]) -> None:
    calls = [call for function_calls in recorded.values() for call in function_calls]
    sites = aws_call_sites()
    assert len(sites) >= 10, "the scan finds the calls it is meant to find"
    unexercised = [
        f"{site.frame.path}:{site.line} {site.frame.qualname} {sorted(site.service_operations)}"
        for site in sites
        if not any((c.service, c.operation) in site.service_operations and site.frame in c.frames for c in calls)
    ]
    assert not unexercised, "no scenario makes these AWS calls, so no policy is checked against them: " + "; ".join(
        unexercised
    )


# What SAM attaches to every function role besides its Policies: AWSLambdaBasicExecutionRole, and with tracing
# AWSXrayWriteOnlyAccess. Only their actions are listed: that is all a boundary needs to be checked against.
BASIC_EXECUTION_ACTIONS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents")
TRACING_ACTIONS = (
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "xray:GetSamplingStatisticSummaries",
)


def _boundary_allows(template: Template, action: str) -> bool:
    statements = template.resources["FunctionPermissionsBoundary"]["Properties"]["PolicyDocument"]["Statement"]
    assert all(s["Effect"] == "Allow" and s["Resource"] == "*" for s in statements), "an allow-list of actions"
    return any(iam_string_like(action, pattern) for s in statements for pattern in s["Action"])


def test_every_function_is_bounded_so_it_cannot_create_log_groups(stack_template: Template) -> None:
    # GIVEN the boundary every function role gets (Globals)
    assert stack_template.document["Globals"]["Function"]["PermissionsBoundary"] == {
        "Ref": "FunctionPermissionsBoundary"
    }
    assert all(
        "PermissionsBoundary" not in f["Properties"]
        for f in stack_template.resources_of_type("AWS::Serverless::Function").values()
    ), "a function of its own boundary: check it here too"
    # THEN the log groups are the template's: no function may create one (or re-create one deleted by hand)
    assert not _boundary_allows(stack_template, "logs:CreateLogGroup")
    assert all(
        f["Properties"].get("LoggingConfig", {}).get("LogGroup")
        for f in stack_template.resources_of_type("AWS::Serverless::Function").values()
    ), "every function writes to a log group of the template"
    # and what the functions do is left as it is: writing their logs and traces, and every action they are granted
    for action in (*BASIC_EXECUTION_ACTIONS[1:], *TRACING_ACTIONS):
        assert _boundary_allows(stack_template, action), action
    for function in FUNCTIONS:
        refused = sorted(a for a, _ in granted(stack_template, function) if not _boundary_allows(stack_template, a))
        assert not refused, f"{function} is granted what the boundary takes away: {refused}"
