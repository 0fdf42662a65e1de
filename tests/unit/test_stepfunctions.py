"""The local Step Functions runner's pieces that need no AWS and no processes: paths, payload templates,
retry timing, the map's failure threshold, and the refusal of anything the runner does not implement."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from refund_sorter_cli.stepfunctions import (
    StatesError,
    UnsupportedDefinitionError,
    check_definition,
    fill_template,
    read_path,
    state_machine_definition,
    write_path,
)
from refund_sorter_cli.stepfunctions.interpreter import Tolerance, retry_delay
from refund_sorter_cli.template import Template


@pytest.fixture(scope="module")
def definition() -> dict[str, Any]:
    return state_machine_definition(Template())


def test_paths_read_the_input_and_the_context() -> None:
    document = {"plan": {"chunks": [{"key": "a"}, {"key": "b"}]}}
    context = {"State": {"RetryCount": 2}}
    assert read_path(document, "$.plan.chunks[1].key") == "b"
    assert read_path(document, "$") == document
    assert read_path(document, "$$.State.RetryCount", context) == 2
    with pytest.raises(StatesError) as missing:
        read_path(document, "$.plan.nothing")
    assert missing.value.error == "States.Runtime"


def test_result_path_merges_into_a_copy_replaces_or_discards() -> None:
    document = {"plan": {"run": "r"}}
    merged = write_path(document, "$.map", {"MapRunArn": "arn"})
    assert merged == {"plan": {"run": "r"}, "map": {"MapRunArn": "arn"}}
    assert document == {"plan": {"run": "r"}}  # the input is left alone
    assert write_path(document, "$", 7) == 7
    assert write_path(document, None, 7) == document


def test_payload_templates_resolve_paths_and_the_one_intrinsic() -> None:
    template = {"FunctionName": "f", "Payload": {"chunk.$": "$$.Map.Item.Value", "n.$": "States.StringToJson('10')"}}
    filled = fill_template(template, {}, {"Map": {"Item": {"Value": {"index": 3}}}})
    assert filled == {"FunctionName": "f", "Payload": {"chunk": {"index": 3}, "n": 10}}


def test_retries_back_off_and_stop_at_max_attempts() -> None:
    retriers = [
        {"ErrorEquals": ["Lambda.TooManyRequestsException"], "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 2,
         "MaxDelaySeconds": 5},
        {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 1},
    ]  # fmt: skip
    attempts: dict[int, int] = {}
    throttled = [retry_delay(retriers, "Lambda.TooManyRequestsException", attempts) for _ in range(4)]
    assert throttled == [2.0, 4.0, 5.0, None]  # capped at MaxDelaySeconds, then exhausted
    assert retry_delay(retriers, "Runtime.ExitError", attempts) == 1.0
    assert retry_delay(retriers, "Runtime.ExitError", attempts) is None


def test_full_jitter_stays_under_the_backoff() -> None:
    retriers = [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 8, "MaxAttempts": 50, "JitterStrategy": "FULL"}]
    attempts: dict[int, int] = {}
    first = retry_delay(retriers, "x", attempts)
    assert first is not None and 0 <= first <= 8


def test_task_failed_matches_everything_but_a_timeout() -> None:
    retriers = [{"ErrorEquals": ["States.TaskFailed"], "MaxAttempts": 5}]
    assert retry_delay(retriers, "Sandbox.Timedout", {}) is not None
    assert retry_delay(retriers, "States.Timeout", {}) is None


@pytest.mark.parametrize(
    ("state", "items", "failures", "exceeded"),
    [
        ({"ToleratedFailurePercentage": 10}, 11, 1, False),
        ({"ToleratedFailurePercentage": 10}, 2, 1, True),
        ({"ToleratedFailureCount": 2}, 100, 2, False),
        ({"ToleratedFailureCount": 2}, 100, 3, True),
        ({}, 100, 1, True),  # neither: no failure is tolerated
    ],
)
def test_the_maps_failure_threshold(state: dict[str, Any], items: int, failures: int, exceeded: bool) -> None:
    tolerance = Tolerance(state, items)
    for _ in range(failures):
        tolerance.count("FAILED")
    tolerance.count("SUCCEEDED")
    assert tolerance.exceeded is exceeded


def test_the_templates_definition_is_accepted_with_its_substitutions_resolved(definition: dict[str, Any]) -> None:
    check_definition(definition)
    text = json.dumps(definition)
    assert "${" not in text
    plan = definition["States"]["Plan"]["Parameters"]["FunctionName"]
    assert plan == "arn:aws:lambda:us-east-1:123456789012:function:refund-sorter-local-plan-function"


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["States"]["ClassifyChunks"].__setitem__("ItemBatcher", {"MaxItemsPerBatch": 10}),
        lambda d: d["States"]["Plan"].__setitem__("Resource", "arn:aws:states:::dynamodb:putItem"),
        lambda d: d["States"]["Plan"].__setitem__("TimeoutSeconds", 60),
        lambda d: d["States"].__setitem__("Wait", {"Type": "Wait", "Seconds": 1, "Next": "Plan"}),
        lambda d: d["States"]["Plan"]["ResultSelector"].__setitem__("x.$", "$.items[*].key"),
        lambda d: d["States"]["Plan"]["ResultSelector"].__setitem__("x.$", "States.Format('{}', $.a)"),
        lambda d: d["States"]["IsAnotherRunGoing"]["Choices"][0].__setitem__("StringMatches", "x*"),
        lambda d: d["States"]["ClassifyChunks"]["ItemProcessor"]["ProcessorConfig"].__setitem__("Mode", "INLINE"),
        lambda d: d["States"]["ClassifyChunks"]["ItemReader"]["ReaderConfig"].__setitem__("InputType", "CSV"),
    ],
    ids=["ItemBatcher", "other-task", "task-timeout", "Wait", "wildcard-path", "other-intrinsic", "StringMatches",
         "inline-map", "csv-reader"],
)  # fmt: skip
def test_anything_the_runner_does_not_implement_is_refused(definition: dict[str, Any], change: Any) -> None:
    changed = copy.deepcopy(definition)
    change(changed)
    with pytest.raises(UnsupportedDefinitionError):
        check_definition(changed)
