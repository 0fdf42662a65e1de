"""Differential test: small definitions run through both our runner and moto's executing ASL parser (moto 5.2.5,
``execute_state_machine``, derived from LocalStack's), with the same Python functions as the Lambda tasks, must
end the same way: the same status, the same output, the same error name (and cause).

Where moto is the oracle: Task (Parameters, ResultSelector, ResultPath, InputPath, OutputPath, their null
forms), Retry (counts, ``$$.State.RetryCount``, first matching retrier), Catch (first matching catcher, its
ResultPath), Choice (the tests the runner implements, type strictness), Fail, and a path that matches nothing.
Not here, because moto differs from AWS or cannot run it: a Distributed Map (moto ignores
ToleratedFailurePercentage and writes empty ResultWriter files; design.md §11), the 256 KiB quota, the execution's
TimeoutSeconds while a Lambda task runs; tests/unit/test_stepfunctions_interpreter.py holds those to AWS's rules.

moto's Lambda needs Docker to run code; its ``lambda:invoke`` integration is patched here
(``lambda_eval_utils._invoke_lambda_function``) to call the same Python function our runner calls.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from refund_sorter_cli.stepfunctions import LocalStateMachine
from refund_sorter_cli.template import Template
from tests.python_lambdas import PythonLambdas

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ACCOUNT_ARN = "arn:aws:lambda:us-east-1:123456789012:function"
ROLE = "arn:aws:iam::123456789012:role/runner-differential"


# ------------------------------------------------------------------------------------------------ the functions


def echo(event: Any) -> Any:
    return event


def double(event: Any) -> Any:
    return {"doubled": event["n"] * 2, "note": "from double"}


def flaky(event: Any) -> Any:
    """Fails with a ValueError on its first two tries (its ``attempt`` is ``$$.State.RetryCount``)."""
    if event["attempt"] < 2:
        raise ValueError(f"try {event['attempt']} failed")
    return {"succeeded_on": event["attempt"]}


def broken(event: Any) -> Any:
    raise RuntimeError("always broken")


def words(event: Any) -> Any:
    return "just a string"


FUNCTIONS: dict[str, Callable[[Any], Any]] = {f.__name__: f for f in (echo, double, flaky, broken, words)}


def task(function: str, **fields: Any) -> dict[str, Any]:
    state = {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
             "Parameters": {"FunctionName": f"{ACCOUNT_ARN}:{function}", "Payload.$": "$"}}  # fmt: skip
    state |= fields
    return state if "Next" in fields else state | {"End": True}


def machine(**states: dict[str, Any]) -> dict[str, Any]:
    return {"StartAt": next(iter(states)), "States": states}


FLAKY_TRIES = {"FunctionName": f"{ACCOUNT_ARN}:flaky", "Payload": {"attempt.$": "$$.State.RetryCount"}}
RETRY_VALUE_ERRORS = [{"ErrorEquals": ["ValueError"], "IntervalSeconds": 1, "MaxAttempts": 2, "BackoffRate": 1}]
DONE = {"Type": "Succeed"}
CASES: dict[str, tuple[dict[str, Any], Any]] = {
    "parameters-selector-result-path": (
        machine(
            Work=task(
                "double",
                Parameters={"FunctionName": f"{ACCOUNT_ARN}:double", "Payload": {"n.$": "$.value", "fixed": "yes"}},
                ResultSelector={"d.$": "$.Payload.doubled", "code.$": "$.StatusCode"},
                ResultPath="$.result",
            )
        ),
        {"value": 21, "keep": [1, 2]},
    ),
    "input-path-and-output-path": (
        machine(Work=task("echo", InputPath="$.inner", ResultPath="$.inner.echoed", OutputPath="$.inner")),
        {"inner": {"a": 1}, "outer": True},
    ),
    "null-paths": (
        machine(
            First=task("echo", InputPath=None, ResultPath="$.seen", Next="Second"),
            Second=task("echo", ResultPath=None, Next="Third"),
            Third=task("echo", OutputPath=None),
        ),
        {"a": 1},
    ),
    "context-object": (
        machine(
            Work=task(
                "echo",
                Parameters={
                    "FunctionName": f"{ACCOUNT_ARN}:echo",
                    "Payload": {"retry.$": "$$.State.RetryCount", "state.$": "$$.State.Name"},
                },
                OutputPath="$.Payload",
            )
        ),
        {},
    ),
    "retry-until-it-works": (
        machine(
            Work=task(
                "flaky",
                Parameters=FLAKY_TRIES,
                Retry=RETRY_VALUE_ERRORS,
                OutputPath="$.Payload",
            )
        ),
        {},
    ),
    "retries-run-out-then-catch": (
        machine(
            Work=task(
                "flaky",
                Parameters=FLAKY_TRIES,
                Retry=[RETRY_VALUE_ERRORS[0] | {"MaxAttempts": 1}],
                Catch=[{"ErrorEquals": ["ValueError"], "ResultPath": "$.error", "Next": "Caught"}],
                Next="Done",
            ),
            Caught=DONE,
            Done=DONE,
        ),
        {"kept": "input"},
    ),
    "first-matching-catcher": (
        machine(
            Work=task(
                "broken",
                Catch=[
                    {"ErrorEquals": ["ValueError"], "Next": "Wrong"},
                    {"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.failure", "Next": "Right"},
                    {"ErrorEquals": ["States.ALL"], "Next": "Wrong"},
                ],
                Next="Wrong",
            ),
            Wrong={"Type": "Fail", "Error": "WrongCatcher"},
            Right=DONE,
        ),
        {"x": 1},
    ),
    "uncaught-function-error": (machine(Work=task("broken", Retry=RETRY_VALUE_ERRORS)), {}),
    "fail-state": (machine(Stop={"Type": "Fail", "Error": "Custom.Error", "Cause": "on purpose"}), {}),
    "choice-types": (
        machine(
            Decide={
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.flag", "BooleanEquals": True, "Next": "Wrong"},
                    {"Variable": "$.count", "NumericEquals": 1, "Next": "Wrong"},
                    {"Variable": "$.name", "StringEquals": "1", "Next": "Wrong"},
                    {"Variable": "$.absent", "IsPresent": True, "Next": "Wrong"},
                    {"Variable": "$.count", "StringEquals": "1", "Next": "Wrong"},
                    {"Variable": "$.name", "StringEquals": "one", "Next": "Right"},
                ],
                "Default": "Wrong",
            },
            Wrong={"Type": "Fail", "Error": "WrongBranch"},
            Right=DONE,
        ),
        {"flag": 1, "count": "1", "name": "one"},
    ),
    "choice-default": (
        machine(
            Decide={
                "Type": "Choice",
                "Choices": [{"Variable": "$.n", "NumericEquals": 2, "Next": "Two"}],
                "Default": "Other",
            },
            Two=DONE,
            Other={"Type": "Fail", "Error": "NotTwo"},
        ),
        {"n": 2.5},
    ),
    "a-path-that-matches-nothing": (
        machine(
            Work=task("echo", InputPath="$.missing", Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]),
            Caught=DONE,
        ),
        {"present": 1},
    ),
    "a-function-answering-a-string-into-a-result-path": (
        machine(Work=task("words", ResultSelector={"said.$": "$.Payload"}, ResultPath="$.out")),
        {"in": 1},
    ),
}


# ------------------------------------------------------------------------------------------------ the two runs


Outcome = tuple[str, Any, str | None, str | None]  # status, output, error, cause


def run_ours(definition: dict[str, Any], document: Any) -> Outcome:
    runner = LocalStateMachine(Template(), PythonLambdas(FUNCTIONS), definition=definition, sleep=lambda _: None)
    execution = runner.start(document)
    return execution.status, execution.output, execution.error, execution.cause


def _invoke_python_function(parameters: dict[str, Any], region: str, state_credentials: Any) -> dict[str, Any]:
    """moto's lambda:invoke, answered by the same Python function (what Lambda's Invoke API returns)."""
    payload = parameters.get("Payload")
    event = json.loads(payload) if isinstance(payload, (bytes, str)) else payload
    function = FUNCTIONS[parameters["FunctionName"].rsplit(":", 1)[-1]]
    try:
        answer = function(event)
    except (ValueError, RuntimeError) as exc:
        error = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
        return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": error, "ExecutedVersion": "$LATEST"}
    return {"StatusCode": 200, "Payload": answer, "ExecutedVersion": "$LATEST"}


@pytest.fixture(scope="module")
def moto_stepfunctions() -> Iterator[Any]:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    with (
        pytest.MonkeyPatch.context() as patch,
        mock_aws(config={"stepfunctions": {"execute_state_machine": True}}),
    ):
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setattr(lambda_eval_utils, "_invoke_lambda_function", _invoke_python_function)
        yield boto3.client("stepfunctions", region_name="us-east-1")


def run_moto(
    client: Any, name: str, definition: dict[str, Any], document: Any
) -> tuple[str, Any, str | None, str | None]:
    arn = client.create_state_machine(name=name, definition=json.dumps(definition), roleArn=ROLE)["stateMachineArn"]
    execution = client.start_execution(stateMachineArn=arn, input=json.dumps(document))["executionArn"]
    for _ in range(1200):  # moto runs it on a thread of its own; wait for its end (retries wait 1 s each)
        described = client.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            break
        time.sleep(0.05)
    output = json.loads(described["output"]) if "output" in described else None
    return described["status"], output, described.get("error"), described.get("cause")


@pytest.mark.parametrize("case", list(CASES))
def test_our_runner_ends_every_small_definition_as_moto_does(moto_stepfunctions: Any, case: str) -> None:
    definition, document = CASES[case]
    ours = run_ours(definition, document)
    theirs = run_moto(moto_stepfunctions, case, definition, document)
    status, output, error, cause = ours
    assert (status, output, error) == theirs[:3]
    if error is not None and not error.startswith("States."):  # a function's (its payload) or a Fail state's
        assert _parsed(cause) == _parsed(theirs[3])


def _parsed(cause: str | None) -> Any:
    try:
        return json.loads(cause or "")
    except json.JSONDecodeError:
        return cause
