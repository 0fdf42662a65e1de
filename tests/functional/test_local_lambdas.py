"""The one Lambda emulator (:class:`LocalLambdas`) keeps Lambda's limits: the function's environment and nothing
else, the 10 s init limit, the function's memory, the 6 MB response, JSON answers, import failures.

Each execution environment here is a real process. So that these tests cost little, an initializer (run first in
every new environment, as the fault tests use it) swaps the template's handler for one of the small handlers
below: the environment, its limits and its error reporting are the emulator's own.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import pytest

from refund_sorter_cli.stepfunctions import LambdaFunctionError, LocalLambdas, StatesError
from refund_sorter_cli.stepfunctions import lambdas as lambdas_module
from refund_sorter_cli.template import Template

FUNCTION = "PlanFunction"


# ------------------------------------------------------------------------------------ handlers (in the workers)


def the_environment(event: Any, context: Any) -> dict[str, str]:
    return dict(os.environ)


def remaining_time(event: Any, context: Any) -> int:
    return int(context.get_remaining_time_in_millis())


def too_big_an_answer(event: Any, context: Any) -> str:
    return "x" * lambdas_module.RESPONSE_LIMIT_BYTES


def not_json(event: Any, context: Any) -> Any:
    return object()


def use_memory(event: Any, context: Any) -> int:
    ballast = b"x" * (event["mb"] * 1024 * 1024)  # written, so resident
    time.sleep(0.3)
    return len(ballast)


def work_for_long(event: Any, context: Any) -> None:
    time.sleep(60)


HANDLERS = {f.__name__: f for f in (the_environment, remaining_time, too_big_an_answer, not_json, use_memory,
                                    work_for_long)}  # fmt: skip


def use_handler(name: str, init_seconds: float = 0.0) -> None:
    """Initializer: the function's handler is ``HANDLERS[name]``; init takes ``init_seconds`` more."""
    from refund_sorter_cli import local_stack

    time.sleep(init_seconds)
    local_stack.load_handler = lambda template, logical_id: HANDLERS[name]


def fail_to_import() -> None:
    from refund_sorter_cli import local_stack

    def load_handler(template: Any, logical_id: str) -> Any:
        raise ModuleNotFoundError("No module named 'missing_dependency'")

    local_stack.load_handler = load_handler


def lambdas(handler: str, **options: Any) -> LocalLambdas:
    return LocalLambdas(Template(), initializer=functools.partial(use_handler, handler), **options)


# ------------------------------------------------------------------------------------------------ the tests


def test_a_function_sees_its_own_environment_and_nothing_else_of_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a shell with a secret of its own, an endpoint, and an override of one of the function's variables
    monkeypatch.setenv("SOMEONE_ELSES_SECRET", "do-not-leak")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("REFUND_SORTER_CHUNK_SIZE", "7")
    template = Template()
    with lambdas("the_environment", environment={"REFUND_SORTER_INTRA_OP_THREADS": "1"}) as functions:
        environment = functions.invoke(FUNCTION, {})
    # THEN the function has the template's variables (the shell's value wins for its own), boto3's endpoint,
    # the Lambda runtime's variables and the caller's explicit ones; nothing else of the shell's
    expected = template.function(FUNCTION).environment
    assert set(expected) <= set(environment)
    assert environment["REFUND_SORTER_CHUNK_SIZE"] == "7"
    assert environment["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"
    assert environment["AWS_LAMBDA_FUNCTION_NAME"] == template.physical_name(FUNCTION)
    assert environment["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == str(template.function(FUNCTION).memory)
    assert environment["REFUND_SORTER_INTRA_OP_THREADS"] == "1"
    assert "SOMEONE_ELSES_SECRET" not in environment
    assert "HOME" not in environment and "VIRTUAL_ENV" not in environment


def test_init_past_ten_seconds_is_charged_to_the_first_invocations_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lambdas_module, "INIT_SECONDS", 0.5)  # Lambda's 10 s, scaled down with the init
    slow_init = functools.partial(use_handler, "remaining_time", 1.5)
    # an init longer than the limit and the whole timeout: the invocation times out
    with (
        LocalLambdas(Template(), initializer=slow_init, timeouts={FUNCTION: 0.5}) as functions,
        pytest.raises(LambdaFunctionError) as timed_out,
    ):
        functions.invoke(FUNCTION, {})
    assert timed_out.value.error_type == "Sandbox.Timedout"
    # within the timeout: the invocation runs with what the init left of it
    with LocalLambdas(Template(), initializer=slow_init, timeouts={FUNCTION: 5.0}) as functions:
        assert functions.invoke(FUNCTION, {}) < 5000 - 500
        assert functions.invoke(FUNCTION, {}) > 5000 - 500, "a warm invocation has its whole timeout"


def test_an_environment_over_its_memory_size_is_killed() -> None:
    with lambdas("use_memory", memory_mb={FUNCTION: 300}) as functions:
        assert functions.invoke(FUNCTION, {"mb": 10}) == 10 * 1024 * 1024
        with pytest.raises(LambdaFunctionError) as killed:
            functions.invoke(FUNCTION, {"mb": 400})
        assert killed.value.error_type == "Runtime.OutOfMemory"
        assert functions.invoke(FUNCTION, {"mb": 10}), "the next invocation gets a fresh environment"
        assert functions.started == 2


def test_the_functions_own_memory_size_is_the_limit() -> None:
    memory = Template().function(FUNCTION).memory
    with lambdas("use_memory") as functions, pytest.raises(LambdaFunctionError) as killed:
        functions.invoke(FUNCTION, {"mb": memory + 50})
    assert killed.value.error_type == "Runtime.OutOfMemory"


def test_an_answer_over_6_mb_is_refused() -> None:
    with lambdas("too_big_an_answer") as functions, pytest.raises(LambdaFunctionError) as refused:
        functions.invoke(FUNCTION, {})
    assert refused.value.error_type == "Function.ResponseSizeTooLarge"


def test_an_answer_that_is_not_json_is_a_marshal_error() -> None:
    with lambdas("not_json") as functions, pytest.raises(LambdaFunctionError) as refused:
        functions.invoke(FUNCTION, {})
    assert refused.value.error_type == "Runtime.MarshalError"


def test_a_handler_that_cannot_be_imported_is_an_import_module_error() -> None:
    with (
        LocalLambdas(Template(), initializer=fail_to_import) as functions,
        pytest.raises(LambdaFunctionError) as failed,
    ):
        functions.invoke(FUNCTION, {})
    assert failed.value.error_type == "Runtime.ImportModuleError"
    assert "missing_dependency" in failed.value.message


def test_a_running_invocation_is_stopped_when_asked() -> None:
    asked_at = time.monotonic() + 0.5
    reason = StatesError("States.Timeout", "the execution's deadline")

    def stopped() -> StatesError | None:
        return reason if time.monotonic() > asked_at else None

    with lambdas("work_for_long") as functions:
        with pytest.raises(StatesError) as stopped_error:
            functions.invoke(FUNCTION, {}, stopped=stopped)
        assert stopped_error.value is reason
        assert functions.started == 1
        assert not functions._all, "the stopped environment is gone: the next invocation starts a new one"
