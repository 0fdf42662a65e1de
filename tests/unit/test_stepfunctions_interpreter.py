"""The local runner's interpreter where it used to differ from AWS (issue 19, part 6), on small definitions
whose Lambda tasks are plain Python functions (:class:`PythonLambdas`) and whose map reads an in-memory S3.

Each test names the AWS rule it holds the runner to; tests/unit/test_stepfunctions_vs_moto.py compares the
common ground with moto's executing parser as well."""

from __future__ import annotations

import io
import json
import time
from typing import TYPE_CHECKING, Any

import pytest

from refund_sorter_cli.stepfunctions import LocalStateMachine, StatesError
from refund_sorter_cli.template import Template
from tests.python_lambdas import PythonLambdas, Wait

if TYPE_CHECKING:
    from collections.abc import Callable

FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:work"
EVERYTHING = [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 2, "IntervalSeconds": 1}]
CAUGHT = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.caught", "Next": "Caught"}]


class MemoryS3:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> None:  # noqa: N803
        self.objects[(Bucket, Key)] = Body


@pytest.fixture(scope="module")
def template() -> Template:
    return Template()


def run(
    template: Template,
    states: dict[str, Any],
    work: Callable[[Any], Any],
    document: Any,
    *,
    timeout: int | None = None,
    s3: MemoryS3 | None = None,
    workers: int = 2,
) -> tuple[Any, PythonLambdas]:
    definition: dict[str, Any] = {"StartAt": next(iter(states)), "States": states}
    if timeout is not None:
        definition["TimeoutSeconds"] = timeout
    lambdas = PythonLambdas(work)
    machine = LocalStateMachine(
        template, lambdas, definition=definition, sleep=lambda _: None, s3=s3 or MemoryS3(), workers=workers
    )
    return machine.start(document), lambdas


def task(**fields: Any) -> dict[str, Any]:
    state = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": FUNCTION, "Payload.$": "$"},
    }
    state |= fields
    return state if "Next" in fields else state | {"End": True}


CAUGHT_STATE = {"Caught": {"Type": "Succeed"}}


# ------------------------------------------------------------------------------------------------ States.Runtime


@pytest.mark.parametrize(
    "state",
    [
        task(Parameters={"FunctionName": FUNCTION, "Payload": {"x.$": "$.missing"}}),
        task(InputPath="$.missing"),
        task(OutputPath="$.missing"),
        task(ResultSelector={"x.$": "$.Payload.missing"}),
    ],
    ids=["Parameters", "InputPath", "OutputPath", "ResultSelector"],
)
def test_a_path_that_matches_nothing_is_never_retried_nor_caught(template: Template, state: dict[str, Any]) -> None:
    # AWS: "A States.Runtime error isn't retriable ... a retry or catch on States.ALL won't catch it"
    state = state | {"Retry": EVERYTHING, "Catch": CAUGHT}
    execution, lambdas = run(template, {"Work": state} | CAUGHT_STATE, lambda _: {"answer": 1}, {"a": 1})
    assert (execution.status, execution.error) == ("FAILED", "States.Runtime")
    assert len(lambdas.calls) <= 1, "never retried"
    assert not execution.events_of("TaskRetried")


def test_a_choice_variable_that_matches_nothing_is_a_runtime_error(template: Template) -> None:
    choice = {"Type": "Choice", "Choices": [{"Variable": "$.flag", "BooleanEquals": True, "Next": "Yes"}],
              "Default": "No"}  # fmt: skip
    states = {"Decide": choice, "Yes": {"Type": "Succeed"}, "No": {"Type": "Succeed"}}
    execution, _ = run(template, states, lambda _: None, {"other": 1})
    assert (execution.status, execution.error) == ("FAILED", "States.Runtime")


# ------------------------------------------------------------------------------------------------ paths


def test_null_input_and_output_paths_give_an_empty_object(template: Template) -> None:
    states = {
        "In": task(InputPath=None, ResultPath="$.seen", Next="Out"),
        "Out": task(OutputPath=None),
    }
    execution, lambdas = run(template, states, lambda payload: payload, {"secret": 1})
    assert execution.status == "SUCCEEDED", execution.cause
    assert lambdas.calls[0] == {}  # InputPath null: the task saw {}
    assert execution.output == {}  # OutputPath null: {} went on


def test_a_result_path_into_a_non_object_is_a_catchable_result_path_match_failure(template: Template) -> None:
    states = {"Work": task(ResultPath="$.note.result", Catch=CAUGHT)} | CAUGHT_STATE
    execution, _ = run(template, states, lambda _: 7, {"note": "a string, not an object"})
    assert execution.status == "SUCCEEDED"
    assert execution.output["caught"]["Error"] == "States.ResultPathMatchFailure"
    assert execution.output["note"] == "a string, not an object"


# ------------------------------------------------------------------------------------------------ Choice


@pytest.mark.parametrize(
    ("test", "expected", "value", "matched"),
    [
        ("BooleanEquals", True, True, True),
        ("BooleanEquals", True, 1, False),
        ("BooleanEquals", False, 0, False),
        ("NumericEquals", 1, 1.0, True),
        ("NumericEquals", 1, "1", False),
        ("NumericEquals", 1, True, False),
        ("StringEquals", "1", 1, False),
        ("StringEquals", "yes", "yes", True),
    ],
)
def test_choice_rules_compare_with_type_strictness(
    template: Template, test: str, expected: Any, value: Any, matched: bool
) -> None:
    choice = {"Type": "Choice", "Choices": [{"Variable": "$.v", test: expected, "Next": "Yes"}], "Default": "No"}
    states = {"Decide": choice, "Yes": {"Type": "Fail", "Error": "Matched"}, "No": {"Type": "Succeed"}}
    execution, _ = run(template, states, lambda _: None, {"v": value})
    assert (execution.error == "Matched") is matched


# ------------------------------------------------------------------------------------------------ the map


def distributed_map(**fields: Any) -> dict[str, Any]:
    return {
        "Type": "Map",
        "ItemReader": {"Resource": "arn:aws:states:::s3:getObject", "ReaderConfig": {"InputType": "JSON"},
                       "Parameters": {"Bucket": "b", "Key": "items.json"}},
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                          "StartAt": "Work", "States": {"Work": task(OutputPath="$.Payload")}},
        "End": True,
    } | fields  # fmt: skip


def items(values: list[Any]) -> MemoryS3:
    s3 = MemoryS3()
    s3.put_object("b", "items.json", json.dumps(values).encode())
    return s3


def test_a_map_without_a_result_writer_returns_outputs_in_the_items_order(template: Template) -> None:
    # the first items take longest, so they finish last
    work = lambda n: Wait(0.02 * (6 - n), then=n * 10)  # noqa: E731
    execution, _ = run(template, {"Fan": distributed_map()}, work, {}, s3=items(list(range(6))), workers=3)
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.output == [0, 10, 20, 30, 40, 50]


def test_a_failed_child_fails_a_map_that_tolerates_no_failure(template: Template) -> None:
    def work(n: int) -> int:
        if n == 2:
            raise StatesError("Boom", "item 2")
        return n

    execution, _ = run(template, {"Fan": distributed_map()}, work, {}, s3=items([0, 1, 2, 3]), workers=1)
    assert (execution.status, execution.error) == ("FAILED", "States.ExceedToleratedFailureThreshold")


def test_past_the_threshold_running_children_are_stopped_and_no_more_start(template: Template) -> None:
    writer = {"Resource": "arn:aws:states:::s3:putObject", "Parameters": {"Bucket": "b", "Prefix": "results"}}
    fan = distributed_map(ToleratedFailureCount=0, ResultWriter=writer)
    s3 = items([0, 1, 2, 3, 4, 5])

    def work(n: int) -> Any:
        if n == 0:
            time.sleep(0.2)  # the others are running by now
            raise StatesError("Boom", "item 0")
        return Wait(30, then=n)

    execution, lambdas = run(template, {"Fan": fan}, work, {}, s3=s3, workers=3)
    assert (execution.status, execution.error) == ("FAILED", "States.ExceedToleratedFailureThreshold")
    assert sorted(lambdas.stopped) == [1, 2], "the two children running were stopped"
    assert sorted(lambdas.calls) == [0, 1, 2], "no child started after the map run failed"


def test_a_map_checks_tolerated_failures_only_with_a_result_writer(template: Template) -> None:
    from refund_sorter_cli.stepfunctions import UnsupportedDefinitionError

    with pytest.raises(UnsupportedDefinitionError, match="ResultWriter"):
        run(template, {"Fan": distributed_map(ToleratedFailurePercentage=10)}, lambda n: n, {}, s3=items([1]))


# ------------------------------------------------------------------------------------------------ time and size


def test_the_executions_timeout_stops_a_running_task_and_no_catch_sees_it(template: Template) -> None:
    states = {"Work": task(Catch=CAUGHT, Retry=EVERYTHING)} | CAUGHT_STATE
    execution, lambdas = run(template, states, lambda _: Wait(30, then=1), {}, timeout=1)
    assert (execution.status, execution.error) == ("TIMED_OUT", "States.Timeout")
    assert lambdas.stopped == [{}], "the running task was stopped at the deadline"
    assert not execution.events_of("StateCaught")


def test_the_executions_timeout_stops_a_retry_wait(template: Template) -> None:
    definition = {"TimeoutSeconds": 1, "StartAt": "Work", "States": {"Work": task(Retry=[
        {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 60, "MaxAttempts": 1}])}}  # fmt: skip

    def fail(_: Any) -> Any:
        raise StatesError("Boom", "")

    machine = LocalStateMachine(template, PythonLambdas(fail), definition=definition)
    started = time.monotonic()
    execution = machine.start({})
    assert (execution.status, execution.error) == ("TIMED_OUT", "States.Timeout")
    assert time.monotonic() - started < 60, "the 60 s retry interval was not waited out"


@pytest.mark.parametrize("where", ["result", "input"])
def test_over_256_kib_is_data_limit_exceeded_and_terminal(template: Template, where: str) -> None:
    big = "x" * (256 * 1024)
    states = {"Work": task(Catch=CAUGHT, Retry=EVERYTHING)} | CAUGHT_STATE
    document = {"big": big} if where == "input" else {}
    execution, lambdas = run(template, states, lambda _: big if where == "result" else 1, document)
    assert (execution.status, execution.error) == ("FAILED", "States.DataLimitExceeded")
    assert len(lambdas.calls) <= 1
