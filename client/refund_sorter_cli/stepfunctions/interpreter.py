"""Executions of the template's state machine: states, retries, catches, choices and the Distributed Map.

AWS behaviour followed (Amazon States Language spec; Step Functions developer guide: "Error handling",
"Choice", "Distributed Map", "Quotas"):

- **Retry and Catch.** A Task or Map state's work (Parameters, the call, ResultSelector, ResultPath) is retried
  by the first retrier whose ErrorEquals matches, each retrier counting its own attempts, with
  ``IntervalSeconds × BackoffRate^n`` capped by MaxDelaySeconds and FULL jitter; then the first matching
  catcher takes it. ``States.Runtime`` and ``States.DataLimitExceeded`` are never retried nor caught
  (:mod:`.errors`).
- **Choice** rules compare with type strictness: ``BooleanEquals: true`` matches only the JSON value ``true``
  (not ``1``), ``NumericEquals`` only numbers, ``StringEquals`` only strings; a Variable that matches nothing
  is ``States.Runtime`` (except for ``IsPresent``).
- **The Distributed Map** reads its items from S3, runs each as a child execution (at most MaxConcurrency, and
  at most ``workers`` here, at once), and fails with ``States.ExceedToleratedFailureThreshold`` once more
  children failed than it tolerates (none, without ToleratedFailure*): the children still running are then
  stopped (``ABORTED``) and no more are started. Without a ResultWriter its result is the children's outputs
  in the items' order; with one, the files AWS writes (``manifest.json``, ``SUCCEEDED_0.json``,
  ``FAILED_0.json``: failed and aborted children) and ``{MapRunArn, ResultWriterDetails}``.
- **TimeoutSeconds.** The execution's clock runs while a state runs: at the deadline the running Lambda tasks,
  retry waits and map children are stopped and the execution ends ``TIMED_OUT`` (``States.Timeout``), which no
  Catch sees.
- **Quotas.** The execution's input, each state's input after Parameters, each task's result and each state's
  output are at most 256 KiB (``States.DataLimitExceeded``).
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from refund_sorter_cli.stepfunctions.data import fill_template, has_path, read_path, select, within_limit, write_path
from refund_sorter_cli.stepfunctions.definition import (
    CHOICE_TESTS,
    NIGHTLY_STATE_MACHINE,
    check_definition,
    state_machine_definition,
)
from refund_sorter_cli.stepfunctions.errors import TIMEOUT, StatesError, matches
from refund_sorter_cli.stepfunctions.lambdas import LambdaFunctionError
from refund_sorter_cli.template import LOCAL_ACCOUNT, LOCAL_REGION

if TYPE_CHECKING:
    from collections.abc import Callable

    from refund_sorter_cli.template import Template

ABORTED = "States.Aborted"


class Lambdas(Protocol):
    """Where Lambda tasks run: :class:`refund_sorter_cli.stepfunctions.LocalLambdas` (tests: plain functions)."""

    def invoke(
        self, function_name: str, payload: Any, *, stopped: Callable[[], StatesError | None] | None = None
    ) -> Any: ...


class StoppedError(StatesError):
    """Work stopped from outside the state (the execution's deadline, the map run's failure): no Retry or Catch
    of the state sees it."""


class Stop:
    """Whether running work must stop, and why: an execution's deadline, or a map run that has failed.

    Calling it gives the :class:`StoppedError` error to raise, or ``None`` to go on; a child's stop also stops when its
    parent's does.
    """

    def __init__(self, seconds: float = math.inf, parent: Stop | None = None) -> None:
        self.deadline = time.monotonic() + seconds
        self.parent = parent
        self._reason: StoppedError | None = None

    def __call__(self) -> StoppedError | None:
        if self._reason is not None:
            return self._reason
        if self.parent is not None and (reason := self.parent()) is not None:
            return reason
        if time.monotonic() > self.deadline:
            return StoppedError(TIMEOUT, "the execution ran longer than its TimeoutSeconds")
        return None

    def stop(self, error: str, cause: str) -> None:
        self._reason = self._reason or StoppedError(error, cause)

    def check(self) -> None:
        if (reason := self()) is not None:
            raise reason

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` (a retry's interval), or until stopped."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            self.check()
            time.sleep(min(left, 0.05))
        self.check()


@dataclass(frozen=True)
class _Step:
    """A Task or Map state being run: its name and definition, the context object, where its history goes, and
    what stops it."""

    name: str
    state: dict[str, Any]
    context: dict[str, Any]
    emit: Callable[[Event], None]
    stop: Stop


@dataclass
class Event:
    """One step of an execution's history (a trimmed version of Step Functions' history events)."""

    kind: str  # ExecutionStarted, TaskFailed, TaskRetried, MapRunStarted, ChildSucceeded, ChildFailed, …
    state: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Execution:
    """A finished execution: ``status`` is SUCCEEDED, FAILED or TIMED_OUT, with the output or the error and cause."""

    name: str
    status: str = "RUNNING"
    output: Any = None
    error: str | None = None
    cause: str | None = None
    events: list[Event] = field(default_factory=list)

    def events_of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


class LocalStateMachine:
    """Executions of a state machine of the template, with Lambda tasks on :class:`.LocalLambdas`.

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
    definition
        A definition to run instead of the template's (tests of the interpreter itself).
    """

    def __init__(
        self,
        template: Template,
        lambdas: Lambdas,
        *,
        logical_id: str = NIGHTLY_STATE_MACHINE,
        workers: int = 2,
        s3: Any = None,
        sleep: Callable[[float], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
        definition: dict[str, Any] | None = None,
    ) -> None:
        self.template, self.lambdas, self.logical_id = template, lambdas, logical_id
        self.definition = definition if definition is not None else state_machine_definition(template, logical_id)
        check_definition(self.definition)
        self.name = template.physical_name(logical_id) if definition is None else "local"
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
        """Run one execution to its end (this call returns when it succeeded, failed or timed out)."""
        execution = Execution(name=name or f"local-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}")

        def emit(event: Event) -> None:
            with self._history_lock:
                execution.events.append(event)
            if self.on_event is not None:
                self.on_event(event)

        document = {} if execution_input is None else execution_input
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
        stop = Stop(self.definition.get("TimeoutSeconds", math.inf))
        try:
            within_limit(document, "the execution's input")
            execution.output = self._run_states(self.definition, document, context, emit, stop)
        except StatesError as exc:
            timed_out = isinstance(exc, StoppedError) and exc.error == TIMEOUT
            execution.status = "TIMED_OUT" if timed_out else "FAILED"
            execution.error, execution.cause = exc.error, exc.cause or None  # a Fail without Cause has none
            ended = "ExecutionTimedOut" if timed_out else "ExecutionFailed"
            emit(Event(ended, detail={"error": exc.error, "cause": exc.cause}))
        else:
            execution.status = "SUCCEEDED"
            emit(Event("ExecutionSucceeded", detail={"output": execution.output}))
        return execution

    def _run_states(
        self,
        definition: dict[str, Any],
        document: Any,
        context: dict[str, Any],
        emit: Callable[[Event], None],
        stop: Stop,
    ) -> Any:
        states = definition["States"]
        name = definition["StartAt"]
        while True:
            stop.check()
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
                document = self._run_with_retries(_Step(name, state, context, emit, stop), document)
            except StoppedError:
                raise
            except StatesError as exc:
                catcher = next((c for c in state.get("Catch", []) if matches(c["ErrorEquals"], exc.error)), None)
                if catcher is None:
                    raise
                emit(Event("StateCaught", name, {"error": exc.error, "cause": exc.cause}))
                caught = {"Error": exc.error, "Cause": exc.cause}
                document = within_limit(write_path(document, catcher.get("ResultPath", "$"), caught), name)
                name = catcher["Next"]
                continue
            if state.get("End"):
                return document
            name = state["Next"]

    @staticmethod
    def _choose(state: dict[str, Any], document: Any) -> str:
        for rule in state["Choices"]:
            if _rule_matches(rule, document):
                return str(rule["Next"])
        if "Default" not in state:
            raise StatesError("States.NoChoiceMatched", "no choice rule matched and there is no Default")
        return str(state["Default"])

    def _run_with_retries(self, step: _Step, document: Any) -> Any:
        """A Task or Map state: input → work, retried as its Retry says (Parameters, the call, ResultSelector and
        ResultPath are the work) → OutputPath."""
        name, state, stop = step.name, step.state, step.stop
        attempts: dict[int, int] = {}
        retry_count = 0
        effective = select(document, state.get("InputPath", "$"))
        while True:
            entered = {"Name": name, "EnteredTime": _timestamp(), "RetryCount": retry_count}
            attempt = replace(step, context=step.context | {"State": entered})
            state_context = attempt.context
            try:
                work = self._task if state["Type"] == "Task" else self._map
                result = work(attempt, effective)
                if "ResultSelector" in state:
                    result = fill_template(state["ResultSelector"], result, state_context)
                combined = write_path(document, state.get("ResultPath", "$"), result)
                break
            except StoppedError:
                raise
            except StatesError as exc:
                step.emit(
                    Event("TaskFailed", name, {"error": exc.error, "cause": exc.cause, "retry_count": retry_count})
                )
                delay = retry_delay(state.get("Retry", []), exc.error, attempts)
                if delay is None:
                    raise
                retry_count += 1
                step.emit(Event("TaskRetried", name, {"error": exc.error, "delay": delay, "retry_count": retry_count}))
                if self.sleep is None:
                    stop.pause(delay)
                else:
                    self.sleep(delay)
                    stop.check()
        return within_limit(select(combined, state.get("OutputPath", "$")), f"{name}'s output")

    def _task(self, step: _Step, document: Any) -> Any:
        name, state, context, emit = step.name, step.state, step.context, step.emit
        parameters = within_limit(fill_template(state.get("Parameters", {}), document, context), f"{name}'s input")
        emit(Event("TaskScheduled", name, {"function": parameters["FunctionName"]}))
        try:
            payload = self.lambdas.invoke(parameters["FunctionName"], parameters.get("Payload", {}), stopped=step.stop)
        except LambdaFunctionError as exc:
            # the cause is the function's error payload as Lambda returns it: compact JSON
            raise StatesError(exc.error_type, json.dumps(exc.payload, separators=(",", ":"))) from None
        emit(Event("TaskSucceeded", name))
        return within_limit({"ExecutedVersion": "$LATEST", "Payload": payload, "StatusCode": 200}, f"{name}'s result")

    # -------------------------------------------------------------------------------------- the Distributed Map

    def _map(self, step: _Step, document: Any) -> Any:
        name, state, context, emit, stop = step.name, step.state, step.context, step.emit, step.stop
        items = self._read_items(state, document, context)
        limit = state.get("MaxConcurrency", 0)
        if "MaxConcurrencyPath" in state:
            limit = int(read_path(document, state["MaxConcurrencyPath"]))
        concurrency = min(self.workers, limit or self.workers)
        run_id = str(uuid.uuid4())
        map_run_arn = f"arn:aws:states:{LOCAL_REGION}:{LOCAL_ACCOUNT}:mapRun:{self.name}/{name}:{run_id}"
        emit(Event("MapRunStarted", name, {"items": len(items), "concurrency": concurrency}))
        tolerated = Tolerance(state, len(items))
        map_stop = Stop(parent=stop)
        records: dict[int, dict[str, Any]] = {}
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="map-child") as pool:
            pending: dict[Future[dict[str, Any]], int] = {}
            queue = iter(enumerate(items))
            while True:
                while map_stop() is None and len(pending) < concurrency and (item := next(queue, None)):
                    index, value = item
                    item_context = context | {"Map": {"Item": {"Index": index, "Value": value}}}
                    selector = state.get("ItemSelector")
                    child_input = value if selector is None else fill_template(selector, document, item_context)
                    child = pool.submit(self._child, name, state["ItemProcessor"], child_input, emit, map_stop)
                    pending[child] = index
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    record = records[pending.pop(future)] = future.result()
                    tolerated.count(record["Status"])
                    if tolerated.exceeded:  # the map run has failed: its running children are stopped
                        map_stop.stop(ABORTED, "the map run failed: more children failed than it tolerates")
        stop.check()  # the execution's own deadline passed while the children ran
        ordered = [records[index] for index in sorted(records)]
        emit(Event("MapRunFinished", name, {"succeeded": sum(r["Status"] == "SUCCEEDED" for r in ordered),
                                             "failed": tolerated.failed}))  # fmt: skip
        result: Any = None
        if "ResultWriter" in state:  # written when the map run fails too: the failed children are in it
            parameters = fill_template(state["ResultWriter"].get("Parameters", {}), document, context)
            details = self._write_results(parameters, run_id=run_id, map_run_arn=map_run_arn, records=ordered)
            result = {"MapRunArn": map_run_arn, "ResultWriterDetails": details}
        if tolerated.exceeded:
            raise StatesError(
                "States.ExceedToleratedFailureThreshold",
                f"{tolerated.failed} of {len(items)} child executions failed, more than the map tolerates",
            )
        return result if result is not None else [json.loads(record["Output"]) for record in ordered]

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
        self,
        map_name: str,
        processor: dict[str, Any],
        child_input: Any,
        emit: Callable[[Event], None],
        stop: Stop,
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
            within_limit(child_input, "the child execution's input")
            output = self._run_states(processor, child_input, context, relay, Stop(parent=stop))
        except StatesError as exc:
            status = "ABORTED" if isinstance(exc, StoppedError) else "FAILED"
            record |= {"Status": status, "Error": exc.error, "Cause": exc.cause, "StopDate": _timestamp()}
            emit(Event(f"Child{status.title()}", map_name, {"input": child_input, "error": exc.error,
                                                             "cause": exc.cause}))  # fmt: skip
        else:
            record |= {"Status": "SUCCEEDED", "Output": json.dumps(output), "OutputDetails": {"Included": True}}
            record["StopDate"] = _timestamp()
            emit(Event("ChildSucceeded", map_name, {"input": child_input, "output": output}))
        return record

    def _write_results(
        self, parameters: dict[str, Any], *, run_id: str, map_run_arn: str, records: list[dict[str, Any]]
    ) -> dict[str, str]:
        """The map's ResultWriter (its ``parameters`` filled): ``<Prefix>/<map run id>/manifest.json`` and one file
        per status, as AWS does."""
        bucket, prefix = parameters["Bucket"], parameters.get("Prefix", "")
        base = f"{prefix.rstrip('/')}/{run_id}/" if prefix else f"{run_id}/"
        by_file: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
        for record in records:
            by_file["SUCCEEDED" if record["Status"] == "SUCCEEDED" else "FAILED"].append(record)
        files: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
        try:
            for status, entries in by_file.items():
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


def _rule_matches(rule: dict[str, Any], document: Any) -> bool:
    """A Choice rule, with AWS's type strictness: a value of another JSON type never matches."""
    variable = rule["Variable"]
    if "IsPresent" in rule:
        return has_path(document, variable) is rule["IsPresent"]
    value = read_path(document, variable)  # nothing there: States.Runtime, as in AWS
    (test,) = set(rule) & set(CHOICE_TESTS)
    if not isinstance(value, CHOICE_TESTS[test]) or (test.startswith("Numeric") and isinstance(value, bool)):
        return False
    return bool(value == rule[test])


class Tolerance:
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


def retry_delay(retriers: list[dict[str, Any]], error: str, attempts: dict[int, int]) -> float | None:
    """Seconds to wait before the next try, or ``None`` when no retrier has attempts left for ``error``.

    The first retrier whose ErrorEquals matches decides (as in Step Functions); each keeps its own count.
    """
    for index, retrier in enumerate(retriers):
        if not matches(retrier["ErrorEquals"], error):
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


def _timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
