"""Run the template's nightly state machine on the local stack, with its Lambda tasks in worker processes.

Why our own runner: moto executes state machines (with its opt-in ``execute_state_machine`` config), and its
engine reads a Distributed Map's S3 ItemReader, but a ``lambda:invoke`` task goes through moto's Lambda, which
needs Docker to run any code (tried: the task fails with "error running docker"). Docker is not available
here, and the executions would run inside the moto server's process, not where ``refund-sorter batch`` runs.

So this module interprets the definition itself, and only the definition: it is read from
``infra/template.yaml`` (``Definition`` with its ``DefinitionSubstitutions`` resolved, the way CloudFormation
substitutes them in the definition's text), never restated here. It implements exactly the parts of the
Amazon States Language that definition uses, and :func:`check_definition` refuses anything else before a
run starts, so the template cannot grow a state or field that runs differently here than in AWS:

- ``Task`` on ``arn:aws:states:::lambda:invoke`` (Parameters, ResultSelector, ResultPath, OutputPath, Retry
  with IntervalSeconds/MaxAttempts/BackoffRate/MaxDelaySeconds/JitterStrategy, Catch);
- ``Map`` in ``DISTRIBUTED`` mode with an S3 JSON ``ItemReader``, ItemSelector, MaxConcurrency(Path),
  ToleratedFailurePercentage/Count, and an S3 ``ResultWriter`` (files in the format AWS writes them);
- ``Choice`` (BooleanEquals, IsPresent, StringEquals, NumericEquals), ``Succeed``, ``Fail``;
- JSONPath reference paths (``$.a.b``, ``$$.Execution.Name``, ``$$.Map.Item.Value``, ``$$.State.RetryCount``)
  and the one intrinsic function used, ``States.StringToJson``.

Each Lambda task runs the function's real handler, with the function's template environment, in a separate
process standing in for a Lambda execution environment (:class:`LocalLambdas`): kept warm between invocations,
killed when it overruns the function's timeout (``Sandbox.Timedout``), replaced when it dies
(``Runtime.ExitError``). The map runs at most ``workers`` children at once, each on its own process: real
parallelism on this machine's cores.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import os
import random
import re
import sys
import threading
import time
import traceback
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refund_sorter_cli.template import LOCAL_ACCOUNT, LOCAL_REGION, Template

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

logger = logging.getLogger(__name__)

NIGHTLY_STATE_MACHINE = "NightlyStateMachine"
LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
S3_GET_OBJECT = "arn:aws:states:::s3:getObject"
S3_PUT_OBJECT = "arn:aws:states:::s3:putObject"
SERVERLESS_FUNCTION = "AWS::Serverless::Function"
# How long a new execution environment may take to start (imports, model) before the run gives up on it.
INIT_SECONDS = 120.0


class UnsupportedDefinitionError(ValueError):
    """The definition uses something this runner does not implement (and so would run differently)."""


class StatesError(Exception):
    """A Step Functions error: its name (``States.TaskFailed``, ``Sandbox.Timedout``, …) and cause."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


# ------------------------------------------------------------------------------------------------ the definition


def state_machine_definition(template: Template, logical_id: str = NIGHTLY_STATE_MACHINE) -> dict[str, Any]:
    """The state machine's definition as it would be deployed from ``template`` (substitutions resolved)."""
    properties = template.resources[logical_id]["Properties"]
    substitutions = {
        name: _substitution(template, value) for name, value in properties.get("DefinitionSubstitutions", {}).items()
    }
    text = json.dumps(properties["Definition"])
    # CloudFormation substitutes ${name} in the definition's text; an unknown name is a deployment error.
    for name in set(re.findall(r"\$\{([^}]+)\}", text)) - set(substitutions):
        raise UnsupportedDefinitionError(f"the definition uses ${{{name}}}, which DefinitionSubstitutions lacks")
    text = re.sub(r"\$\{([^}]+)\}", lambda m: json.dumps(substitutions[m[1]])[1:-1], text)
    definition: dict[str, Any] = json.loads(text)
    return definition


def _substitution(template: Template, value: Any) -> str:
    if isinstance(value, dict) and list(value) == ["Fn::GetAtt"]:
        logical_id, attribute = value["Fn::GetAtt"]
        if attribute == "Arn" and template.resources[logical_id]["Type"] == SERVERLESS_FUNCTION:
            return function_arn(template.physical_name(logical_id))
    return str(template.resolve(value))


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{name}"


_STATE_FIELDS: dict[str, set[str]] = {
    "Task": {"Type", "Comment", "Resource", "Parameters", "ResultSelector", "ResultPath", "OutputPath", "InputPath",
             "Retry", "Catch", "Next", "End"},
    "Map": {"Type", "Comment", "ItemReader", "ItemSelector", "ItemProcessor", "MaxConcurrency",
            "MaxConcurrencyPath", "ToleratedFailurePercentage", "ToleratedFailureCount", "ResultWriter",
            "ResultPath", "ResultSelector", "OutputPath", "InputPath", "Catch", "Next", "End", "Label"},
    "Choice": {"Type", "Comment", "Choices", "Default"},
    "Succeed": {"Type", "Comment"},
    "Fail": {"Type", "Comment", "Error", "Cause"},
}  # fmt: skip
_CHOICE_TESTS = {"BooleanEquals", "IsPresent", "StringEquals", "NumericEquals"}
_RETRY_FIELDS = {"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate", "MaxDelaySeconds", "JitterStrategy"}
_REFERENCE_PATH = re.compile(r"^\$\$?(\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*$")
_STRING_TO_JSON = re.compile(r"^States\.StringToJson\('((?:[^'\\]|\\.)*)'\)$")


def check_definition(definition: dict[str, Any], where: str = "") -> None:
    """Refuse (``UnsupportedDefinitionError``) anything this runner would not run the way AWS does."""
    unknown = set(definition) - {"Comment", "StartAt", "States", "TimeoutSeconds", "ProcessorConfig"}
    if unknown:
        raise UnsupportedDefinitionError(f"{where or 'definition'}: unsupported top-level fields {sorted(unknown)}")
    states = definition["States"]
    if definition["StartAt"] not in states:
        raise UnsupportedDefinitionError(f"{where}StartAt names no state")
    for name, state in states.items():
        _check_state(f"{where}{name}", state, states)


def _check_state(name: str, state: dict[str, Any], states: dict[str, Any]) -> None:
    kind = state.get("Type", "")
    if kind not in _STATE_FIELDS:
        raise UnsupportedDefinitionError(f"{name}: state type {kind!r} is not implemented")
    if unknown := set(state) - _STATE_FIELDS[kind]:
        raise UnsupportedDefinitionError(f"{name}: unsupported fields {sorted(unknown)}")
    for target in [state.get("Next"), state.get("Default")] + [c.get("Next") for c in state.get("Catch", [])]:
        if target is not None and target not in states:
            raise UnsupportedDefinitionError(f"{name}: goes to {target!r}, which is no state")
    _check_paths_and_retries(name, state)
    if kind == "Task" and state["Resource"] != LAMBDA_INVOKE:
        raise UnsupportedDefinitionError(f"{name}: only {LAMBDA_INVOKE} tasks are implemented")
    if kind == "Choice":
        for rule in state["Choices"]:
            if set(rule) - {"Variable", "Next"} - _CHOICE_TESTS or len(set(rule) & _CHOICE_TESTS) != 1:
                raise UnsupportedDefinitionError(f"{name}: choice rule {rule} is not implemented")
            _check_path(name, rule["Variable"])
    if kind == "Map":
        _check_map(name, state)


def _check_paths_and_retries(name: str, state: dict[str, Any]) -> None:
    for path_field in ("ResultPath", "OutputPath", "InputPath", "MaxConcurrencyPath"):
        if path_field in state and state[path_field] is not None:
            _check_path(name, state[path_field])
    for template_field in ("Parameters", "ResultSelector", "ItemSelector"):
        _check_payload_template(name, state.get(template_field))
    for retrier in state.get("Retry", []):
        if unknown := set(retrier) - _RETRY_FIELDS:
            raise UnsupportedDefinitionError(f"{name}: unsupported Retry fields {sorted(unknown)}")


def _check_map(name: str, state: dict[str, Any]) -> None:
    processor = state["ItemProcessor"]
    if processor.get("ProcessorConfig", {}).get("Mode") != "DISTRIBUTED":
        raise UnsupportedDefinitionError(f"{name}: only DISTRIBUTED maps are implemented")
    reader = state.get("ItemReader", {})
    if reader.get("Resource") != S3_GET_OBJECT or reader.get("ReaderConfig", {}).get("InputType") != "JSON":
        raise UnsupportedDefinitionError(f"{name}: only an S3 getObject ItemReader of a JSON array is implemented")
    _check_payload_template(name, reader.get("Parameters"))
    writer = state.get("ResultWriter")
    if writer is not None and (writer.get("Resource") != S3_PUT_OBJECT or "WriterConfig" in writer):
        raise UnsupportedDefinitionError(f"{name}: only an S3 putObject ResultWriter is implemented")
    if writer is not None:
        _check_payload_template(name, writer.get("Parameters"))
    check_definition({k: v for k, v in processor.items() if k != "ProcessorConfig"}, where=f"{name}/")


def _check_path(name: str, path: str) -> None:
    if not _REFERENCE_PATH.match(path):
        raise UnsupportedDefinitionError(f"{name}: path {path!r} is not a plain reference path")


def _check_payload_template(name: str, template: Any) -> None:
    if isinstance(template, dict):
        for key, value in template.items():
            if key.endswith(".$"):
                if not (_REFERENCE_PATH.match(value) or _STRING_TO_JSON.match(value)):
                    raise UnsupportedDefinitionError(f"{name}: {key} = {value!r} is not implemented")
            else:
                _check_payload_template(name, value)
    elif isinstance(template, list):
        for value in template:
            _check_payload_template(name, value)


# ------------------------------------------------------------------------------------------------ JSON paths


_MISSING = object()


def _path_parts(path: str) -> list[str | int]:
    return [int(p[1:-1]) if p.startswith("[") else p[1:] for p in re.findall(r"\.[A-Za-z0-9_]+|\[\d+\]", path)]


def read_path(document: Any, path: str, context: Mapping[str, Any] | None = None) -> Any:
    """The value at a reference path (``$…`` in ``document``, ``$$…`` in the context object)."""
    value: Any = context if path.startswith("$$") else document
    for part in _path_parts(path.removeprefix("$$").removeprefix("$")):
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            raise StatesError("States.Runtime", f"the path {path!r} matches nothing in the input") from None
    return value


def _has_path(document: Any, path: str) -> bool:
    try:
        read_path(document, path)
    except StatesError:
        return False
    return True


def write_path(document: Any, path: str | None, value: Any) -> Any:
    """``ResultPath``: ``value`` placed in (a copy of) ``document`` at ``path``; ``$`` replaces it, null drops it."""
    if path is None:
        return document
    parts = _path_parts(path.removeprefix("$"))
    if not parts:
        return value
    result = json.loads(json.dumps(document))
    target = result
    for part in parts[:-1]:
        target = target.setdefault(part, {}) if isinstance(part, str) else target[part]
    target[parts[-1]] = value
    return result


def fill_template(template: Any, document: Any, context: Mapping[str, Any]) -> Any:
    """A payload template (Parameters, ItemSelector, …) with its ``"key.$"`` fields resolved."""
    if isinstance(template, dict):
        filled = {}
        for key, value in template.items():
            if key.endswith(".$"):
                if match := _STRING_TO_JSON.match(value):
                    filled[key[:-2]] = json.loads(match[1].replace("\\'", "'"))
                else:
                    filled[key[:-2]] = read_path(document, value, context)
            else:
                filled[key] = fill_template(value, document, context)
        return filled
    if isinstance(template, list):
        return [fill_template(value, document, context) for value in template]
    return template


# ------------------------------------------------------------------------------------------------ Lambda locally


class LambdaFunctionError(Exception):
    """The function failed: ``error_type`` is what Step Functions reports as the error's name."""

    def __init__(self, error_type: str, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type, self.message = error_type, message
        self.payload = payload or {"errorType": error_type, "errorMessage": message}


@dataclass(frozen=True)
class _EnvironmentSpec:
    """What a new execution environment needs to know (sent to the spawned process)."""

    template_path: str
    stack_name: str
    logical_id: str
    initializer: Callable[[], None] | None
    log_path: str | None
    environment: dict[str, str] = field(default_factory=dict)


def _serve(conn: Connection, spec: _EnvironmentSpec) -> None:
    """A Lambda execution environment's life: init once (imports, handler), then one invocation per message."""
    if spec.log_path:  # the function's logs go to a file, as CloudWatch would keep them
        with Path(spec.log_path).open("ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
    os.environ.update(spec.environment)  # before the template's: values already set win, as for the shell's
    if spec.initializer is not None:
        spec.initializer()
    from refund_sorter_cli.local_stack import LambdaContext, apply_function_environment, load_handler

    template = Template(Path(spec.template_path), stack_name=spec.stack_name)
    apply_function_environment(template, spec.logical_id)
    handler = load_handler(template, spec.logical_id)
    function = template.function(spec.logical_id)
    conn.send(("ready", None))
    while (message := _receive(conn)) is not None:
        event, timeout = message
        context = LambdaContext(template.physical_name(spec.logical_id), function.memory, timeout)
        try:
            reply = json.loads(json.dumps(handler(event, context)))
        except Exception as exc:  # noqa: BLE001 - Lambda reports any exception as the function's error
            conn.send(("error", {"errorType": type(exc).__name__, "errorMessage": str(exc),
                                 "stackTrace": traceback.format_exception(exc)}))  # fmt: skip
        else:
            conn.send(("ok", reply))
        sys.stdout.flush()  # the log file is complete for whoever reads it after the invocation
        sys.stderr.flush()


def _receive(conn: Connection) -> Any:
    try:
        return conn.recv()
    except EOFError:
        return None


@dataclass
class _Environment:
    logical_id: str
    process: BaseProcess
    conn: Connection

    def stop(self, kill: bool = False) -> None:
        with contextlib.suppress(OSError):
            if not kill:
                self.conn.send(None)
            self.conn.close()
        if kill:
            self.process.kill()
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class LocalLambdas:
    """The template's functions, each invocation in a warm execution environment (a process) of its own.

    Parameters
    ----------
    template
        Where the functions, their handlers, environments and timeouts come from.
    timeouts
        Seconds, by logical id, instead of the template's ``Timeout`` (tests make a hang cost seconds).
    initializer
        Called first in every new environment (before the handler is imported); must be picklable.
    log_dir
        Where each environment's stdout/stderr go (one file per environment); inherited when ``None``.
    environment
        Variables every environment gets on top of this process's (they win over the template's).
    """

    def __init__(
        self,
        template: Template,
        *,
        timeouts: Mapping[str, float] | None = None,
        initializer: Callable[[], None] | None = None,
        log_dir: Path | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.template = template
        self.environment = dict(environment or {})
        self.timeouts = dict(timeouts or {})
        self.initializer = initializer
        self.log_dir = log_dir
        self.by_arn = {
            function_arn(template.physical_name(logical_id)): logical_id
            for logical_id in template.resources_of_type(SERVERLESS_FUNCTION)
        }
        self._idle: dict[str, list[_Environment]] = {}
        self._all: list[_Environment] = []
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")  # no fork: the caller has threads (moto, pools)
        self.started = 0  # execution environments started (cold starts)

    def __enter__(self) -> LocalLambdas:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def logical_id(self, function_name: str) -> str:
        if function_name in self.by_arn:
            return self.by_arn[function_name]
        for arn, logical_id in self.by_arn.items():
            if function_name in (logical_id, arn.rsplit(":", 1)[-1]):
                return logical_id
        raise StatesError("Lambda.ResourceNotFoundException", f"no function {function_name} in the template")

    def invoke(self, function_name: str, payload: Any) -> Any:
        """Run the function on ``payload`` and return its result, or raise :class:`LambdaFunctionError`."""
        logical_id = self.logical_id(function_name)
        timeout = self.timeouts.get(logical_id, float(self.template.function(logical_id).timeout))
        environment = self._take(logical_id)
        try:
            try:
                environment.conn.send((payload, timeout))
            except OSError:  # it died while idle (killed from outside): Lambda would report the invocation failed
                environment.stop(kill=True)
                raise LambdaFunctionError("Runtime.ExitError", "the execution environment was gone") from None
            if not environment.conn.poll(timeout):
                environment.stop(kill=True)
                raise LambdaFunctionError("Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds")
            try:
                kind, body = environment.conn.recv()
            except (EOFError, OSError):
                environment.process.join(timeout=10)
                code = environment.process.exitcode
                environment.stop(kill=True)
                raise LambdaFunctionError(
                    "Runtime.ExitError", f"Runtime exited with error: exit status {code}"
                ) from None
        except BaseException:
            self._forget(environment)
            raise
        self._give_back(environment)
        if kind == "error":
            raise LambdaFunctionError(body["errorType"], body["errorMessage"], body)
        return body

    def _take(self, logical_id: str) -> _Environment:
        with self._lock:
            idle = self._idle.setdefault(logical_id, [])
            if idle:
                return idle.pop()
        return self._start(logical_id)

    def _start(self, logical_id: str) -> _Environment:
        parent, child = self._context.Pipe()
        log_path = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = str(self.log_dir / f"{logical_id}-{uuid.uuid4().hex[:8]}.log")
        spec = _EnvironmentSpec(
            str(self.template.path), self.template.stack_name, logical_id, self.initializer, log_path, self.environment
        )
        process = self._context.Process(target=_serve, args=(child, spec), name=f"lambda-{logical_id}", daemon=True)
        process.start()
        child.close()
        environment = _Environment(logical_id, process, parent)
        with self._lock:
            self._all.append(environment)
            self.started += 1
        if not parent.poll(INIT_SECONDS) or _receive(parent) != ("ready", None):
            environment.stop(kill=True)
            self._forget(environment)
            raise LambdaFunctionError("Runtime.ExitError", f"{logical_id}: the execution environment did not start")
        return environment

    def _give_back(self, environment: _Environment) -> None:
        with self._lock:
            self._idle.setdefault(environment.logical_id, []).append(environment)

    def _forget(self, environment: _Environment) -> None:
        with self._lock:
            if environment in self._all:
                self._all.remove(environment)

    def close(self) -> None:
        with self._lock:
            environments, self._all, self._idle = list(self._all), [], {}
        for environment in environments:
            environment.stop(kill=not environment.process.is_alive())


# ------------------------------------------------------------------------------------------------ executions


@dataclass
class Event:
    """One step of an execution's history (a trimmed version of Step Functions' history events)."""

    kind: str  # ExecutionStarted, TaskFailed, TaskRetried, MapRunStarted, ChildSucceeded, ChildFailed, …
    state: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Execution:
    """A finished execution: ``status`` is SUCCEEDED or FAILED, with the output or the error and cause."""

    name: str
    status: str = "RUNNING"
    output: Any = None
    error: str | None = None
    cause: str | None = None
    events: list[Event] = field(default_factory=list)

    def events_of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


class LocalStateMachine:
    """Executions of a state machine of the template, with Lambda tasks on :class:`LocalLambdas`.

    Parameters
    ----------
    template, logical_id
        Which state machine.
    lambdas
        Where the Lambda tasks run.
    workers
        Children of a Distributed Map running at once here (the map's own MaxConcurrency still caps it).
    s3
        The S3 client the map's ItemReader and ResultWriter use (the local stack's by default).
    sleep
        How retries wait (tests pass a no-op: the intervals are the template's business, not the test's).
    on_event
        Called with every history :class:`Event` of the execution as it happens (the CLI's progress display).
    """

    def __init__(
        self,
        template: Template,
        lambdas: LocalLambdas,
        *,
        logical_id: str = NIGHTLY_STATE_MACHINE,
        workers: int = 2,
        s3: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.template, self.lambdas, self.logical_id = template, lambdas, logical_id
        self.definition = state_machine_definition(template, logical_id)
        check_definition(self.definition)
        self.name = template.physical_name(logical_id)
        self.arn = f"arn:aws:states:{LOCAL_REGION}:{LOCAL_ACCOUNT}:stateMachine:{self.name}"
        self.workers = max(1, workers)
        self.sleep = sleep
        self.on_event = on_event
        self._s3 = s3
        self._history_lock = threading.Lock()

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            import boto3

            from refund_sorter_cli.local_stack import endpoint_url

            self._s3 = boto3.client("s3", endpoint_url=endpoint_url(), region_name=LOCAL_REGION)
        return self._s3

    def start(self, execution_input: Any = None, name: str | None = None) -> Execution:
        """Run one execution to its end (this call returns when it succeeded or failed)."""
        execution = Execution(name=name or f"local-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}")

        def emit(event: Event) -> None:
            with self._history_lock:
                execution.events.append(event)
            if self.on_event is not None:
                self.on_event(event)

        document = execution_input or {}
        context = {
            "Execution": {
                "Id": f"arn:aws:states:{LOCAL_REGION}:{LOCAL_ACCOUNT}:execution:{self.name}:{execution.name}",
                "Name": execution.name,
                "StartTime": _timestamp(),
                "Input": document,
            },
            "StateMachine": {"Id": self.arn, "Name": self.name},
        }
        emit(Event("ExecutionStarted", detail={"input": document}))
        try:
            execution.output = self._run_states(self.definition, document, context, emit)
        except StatesError as exc:
            execution.status, execution.error, execution.cause = "FAILED", exc.error, exc.cause
            emit(Event("ExecutionFailed", detail={"error": exc.error, "cause": exc.cause}))
        else:
            execution.status = "SUCCEEDED"
            emit(Event("ExecutionSucceeded", detail={"output": execution.output}))
        return execution

    def _run_states(
        self, definition: dict[str, Any], document: Any, context: dict[str, Any], emit: Callable[[Event], None]
    ) -> Any:
        states = definition["States"]
        name = definition["StartAt"]
        deadline = time.monotonic() + definition.get("TimeoutSeconds", math.inf)
        while True:
            if time.monotonic() > deadline:
                raise StatesError("States.Timeout", "the execution ran longer than its TimeoutSeconds")
            state = states[name]
            emit(Event("StateEntered", name))
            kind = state["Type"]
            if kind == "Succeed":
                return document
            if kind == "Fail":
                raise StatesError(state.get("Error", "States.Fail"), state.get("Cause", ""))
            if kind == "Choice":
                name = self._choose(state, document)
                continue
            try:
                document = self._run_with_retries(name, state, document, context, emit)
            except StatesError as exc:
                catcher = _first_matching(state.get("Catch", []), exc.error)
                if catcher is None:
                    raise
                emit(Event("StateCaught", name, {"error": exc.error, "cause": exc.cause}))
                caught = {"Error": exc.error, "Cause": exc.cause}
                document = write_path(document, catcher.get("ResultPath", "$"), caught)
                name = catcher["Next"]
                continue
            if state.get("End"):
                return document
            name = state["Next"]

    @staticmethod
    def _choose(state: dict[str, Any], document: Any) -> str:
        for rule in state["Choices"]:
            variable = rule["Variable"]
            if "IsPresent" in rule:
                matched = _has_path(document, variable) is rule["IsPresent"]
            else:
                test = next(iter(set(rule) & _CHOICE_TESTS))
                matched = _has_path(document, variable) and read_path(document, variable) == rule[test]
            if matched:
                return str(rule["Next"])
        if "Default" not in state:
            raise StatesError("States.NoChoiceMatched", "no choice rule matched and there is no Default")
        return str(state["Default"])

    def _run_with_retries(
        self, name: str, state: dict[str, Any], document: Any, context: dict[str, Any], emit: Callable[[Event], None]
    ) -> Any:
        """A Task or Map state: input → work (retried as its Retry says) → ResultSelector/ResultPath/OutputPath."""
        attempts: dict[int, int] = {}
        retry_count = 0
        effective = read_path(document, state.get("InputPath", "$"))
        while True:
            state_context = context | {"State": {"Name": name, "EnteredTime": _timestamp(), "RetryCount": retry_count}}
            try:
                if state["Type"] == "Task":
                    result = self._task(name, state, effective, state_context, emit)
                else:
                    result = self._map(name, state, effective, state_context, emit)
                break
            except StatesError as exc:
                emit(Event("TaskFailed", name, {"error": exc.error, "cause": exc.cause, "retry_count": retry_count}))
                delay = _retry_delay(state.get("Retry", []), exc.error, attempts)
                if delay is None:
                    raise
                retry_count += 1
                emit(Event("TaskRetried", name, {"error": exc.error, "delay": delay, "retry_count": retry_count}))
                self.sleep(delay)
        if "ResultSelector" in state:
            result = fill_template(state["ResultSelector"], result, state_context)
        combined = write_path(document, state.get("ResultPath", "$"), result)
        return read_path(combined, state.get("OutputPath", "$"))

    def _task(
        self, name: str, state: dict[str, Any], document: Any, context: dict[str, Any], emit: Callable[[Event], None]
    ) -> Any:
        parameters = fill_template(state.get("Parameters", {}), document, context)
        emit(Event("TaskScheduled", name, {"function": parameters["FunctionName"]}))
        try:
            payload = self.lambdas.invoke(parameters["FunctionName"], parameters.get("Payload", {}))
        except LambdaFunctionError as exc:
            raise StatesError(exc.error_type, json.dumps(exc.payload)) from None
        emit(Event("TaskSucceeded", name))
        return {"ExecutedVersion": "$LATEST", "Payload": payload, "StatusCode": 200}

    # -------------------------------------------------------------------------------------- the Distributed Map

    def _map(
        self, name: str, state: dict[str, Any], document: Any, context: dict[str, Any], emit: Callable[[Event], None]
    ) -> Any:
        items = self._read_items(state, document, context)
        limit = state.get("MaxConcurrency", 0)
        if "MaxConcurrencyPath" in state:
            limit = int(read_path(document, state["MaxConcurrencyPath"]))
        concurrency = min(self.workers, limit or self.workers)
        run_id = str(uuid.uuid4())
        map_run_arn = f"arn:aws:states:{LOCAL_REGION}:{LOCAL_ACCOUNT}:mapRun:{self.name}/{name}:{run_id}"
        emit(Event("MapRunStarted", name, {"items": len(items), "concurrency": concurrency}))
        tolerated = _Tolerance(state, len(items))
        records: dict[str, list[dict[str, Any]]] = {"SUCCEEDED": [], "FAILED": []}
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="map-child") as pool:
            pending: set[Future[dict[str, Any]]] = set()
            queue = iter(enumerate(items))
            while True:
                while not tolerated.exceeded and len(pending) < concurrency and (item := next(queue, None)):
                    index, value = item
                    item_context = context | {"Map": {"Item": {"Index": index, "Value": value}}}
                    selector = state.get("ItemSelector")
                    child_input = value if selector is None else fill_template(selector, document, item_context)
                    pending.add(pool.submit(self._child, name, state["ItemProcessor"], child_input, emit))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    record = future.result()
                    records[record["Status"]].append(record)
                    tolerated.count(record["Status"])
        result: Any = [json.loads(r["Output"]) for r in records["SUCCEEDED"]]
        if "ResultWriter" in state:
            details = self._write_results(
                state["ResultWriter"], document, context, run_id=run_id, map_run_arn=map_run_arn, records=records
            )
            result = {"MapRunArn": map_run_arn, "ResultWriterDetails": details}
        emit(Event("MapRunFinished", name, {"succeeded": len(records["SUCCEEDED"]), "failed": tolerated.failed}))
        if tolerated.exceeded:
            raise StatesError(
                "States.ExceedToleratedFailureThreshold",
                f"{tolerated.failed} of {len(items)} child executions failed, more than the map tolerates",
            )
        return result

    def _read_items(self, state: dict[str, Any], document: Any, context: dict[str, Any]) -> list[Any]:
        reader = fill_template(state["ItemReader"].get("Parameters", {}), document, context)
        where = f"s3://{reader['Bucket']}/{reader['Key']}"
        try:
            items = json.loads(self.s3.get_object(Bucket=reader["Bucket"], Key=reader["Key"])["Body"].read())
        except Exception as exc:  # noqa: BLE001 - whatever S3 said, the map cannot read its items
            raise StatesError("States.ItemReaderFailed", f"could not read {where}: {exc}") from None
        if not isinstance(items, list):
            raise StatesError("States.ItemReaderFailed", f"{where} is not a JSON array")
        return items

    def _child(
        self, map_name: str, processor: dict[str, Any], child_input: Any, emit: Callable[[Event], None]
    ) -> dict[str, Any]:
        """One child workflow execution of the map: its own context and history; a record for the ResultWriter."""
        name = str(uuid.uuid4())
        started = _timestamp()
        context = {
            "Execution": {
                "Id": f"arn:aws:states:{LOCAL_REGION}:{LOCAL_ACCOUNT}:execution:{self.name}/{map_name}:{name}",
                "Name": name,
                "StartTime": started,
                "Input": child_input,
            },
            "StateMachine": {"Id": f"{self.arn}/{map_name}", "Name": f"{self.name}/{map_name}"},
        }
        record: dict[str, Any] = {
            "ExecutionArn": context["Execution"]["Id"],
            "Input": json.dumps(child_input),
            "InputDetails": {"Included": True},
            "Name": name,
            "StartDate": started,
            "StateMachineArn": context["StateMachine"]["Id"],
        }

        def relay(event: Event) -> None:  # the parent's history shows its children's failures and retries
            if event.kind in {"TaskFailed", "TaskRetried"}:
                emit(Event(f"Child{event.kind}", map_name, event.detail | {"input": child_input}))

        try:
            output = self._run_states(processor, child_input, context, relay)
        except StatesError as exc:
            record |= {"Status": "FAILED", "Error": exc.error, "Cause": exc.cause, "StopDate": _timestamp()}
            emit(Event("ChildFailed", map_name, {"input": child_input, "error": exc.error, "cause": exc.cause}))
        else:
            record |= {"Status": "SUCCEEDED", "Output": json.dumps(output), "OutputDetails": {"Included": True}}
            record["StopDate"] = _timestamp()
            emit(Event("ChildSucceeded", map_name, {"input": child_input, "output": output}))
        return record

    def _write_results(
        self,
        writer: dict[str, Any],
        document: Any,
        context: dict[str, Any],
        *,
        run_id: str,
        map_run_arn: str,
        records: dict[str, list[dict[str, Any]]],
    ) -> dict[str, str]:
        """The map's ResultWriter: ``<Prefix>/<map run id>/manifest.json`` and one file per status, as AWS does."""
        parameters = fill_template(writer.get("Parameters", {}), document, context)
        bucket, prefix = parameters["Bucket"], parameters.get("Prefix", "")
        base = f"{prefix.rstrip('/')}/{run_id}/" if prefix else f"{run_id}/"
        files: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
        try:
            for status, entries in records.items():
                if entries:
                    key = f"{base}{status}_0.json"
                    body = json.dumps(entries).encode()
                    self.s3.put_object(Bucket=bucket, Key=key, Body=body)
                    files[status].append({"Key": key, "Size": len(body)})
            manifest = {"DestinationBucket": bucket, "MapRunArn": map_run_arn, "ResultFiles": files}
            self.s3.put_object(Bucket=bucket, Key=f"{base}manifest.json", Body=json.dumps(manifest).encode())
        except Exception as exc:  # noqa: BLE001 - any S3 failure is the map's ResultWriter failing
            raise StatesError("States.ResultWriterFailed", str(exc)) from None
        return {"Bucket": bucket, "Key": f"{base}manifest.json"}


class _Tolerance:
    """A Distributed Map's failure threshold: the map fails once more children failed than it tolerates
    (neither ToleratedFailurePercentage nor ToleratedFailureCount: none at all)."""

    def __init__(self, state: dict[str, Any], items: int) -> None:
        either = "ToleratedFailurePercentage" in state or "ToleratedFailureCount" in state
        self.percentage = float(state.get("ToleratedFailurePercentage", 100 if either else 0))
        self.limit = float(state.get("ToleratedFailureCount", math.inf if either else 0))
        self.items = items
        self.failed = 0

    def count(self, status: str) -> None:
        if status == "FAILED":
            self.failed += 1

    @property
    def exceeded(self) -> bool:
        return self.failed > self.limit or (self.items > 0 and 100 * self.failed / self.items > self.percentage)


def _retry_delay(retriers: list[dict[str, Any]], error: str, attempts: dict[int, int]) -> float | None:
    """Seconds to wait before the next try, or ``None`` when no retrier has attempts left for ``error``.

    The first retrier whose ErrorEquals matches decides (as in Step Functions); each keeps its own count.
    """
    for index, retrier in enumerate(retriers):
        if not _matches(retrier["ErrorEquals"], error):
            continue
        done = attempts.get(index, 0)
        if done >= retrier.get("MaxAttempts", 3):
            return None
        attempts[index] = done + 1
        delay = retrier.get("IntervalSeconds", 1) * retrier.get("BackoffRate", 2.0) ** done
        delay = min(delay, retrier.get("MaxDelaySeconds", math.inf))
        if retrier.get("JitterStrategy") == "FULL":
            delay = random.uniform(0, delay)
        return float(delay)
    return None


def _first_matching(handlers: list[dict[str, Any]], error: str) -> dict[str, Any] | None:
    return next((h for h in handlers if _matches(h["ErrorEquals"], error)), None)


def _matches(names: list[str], error: str) -> bool:
    if "States.ALL" in names or error in names:
        return True
    return "States.TaskFailed" in names and error != "States.Timeout"


def _timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cpu_share(workers: int) -> dict[str, str]:
    """Environment for ``workers`` local environments running at once: in Lambda each has vCPUs of its own,
    here they share this machine's, so each gets its share of onnxruntime threads instead of one per core
    (unless the shell sets the thread count itself)."""
    if "REFUND_SORTER_INTRA_OP_THREADS" in os.environ:
        return {}
    return {"REFUND_SORTER_INTRA_OP_THREADS": str(max(1, (os.cpu_count() or 1) // max(1, workers)))}
