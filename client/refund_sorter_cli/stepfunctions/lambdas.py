"""The template's Lambda functions on this machine: one process per execution environment, kept warm.

This is the project's one Lambda emulator: ``refund-sorter invoke``, ``refund-sorter train`` (on the local
stack) and the state machine's Lambda tasks all run functions through :class:`LocalLambdas`.

AWS behaviour followed (Lambda developer guide: "Lambda execution environment lifecycle", "Lambda quotas"):

- **Environment.** The handler runs in its own process, with the function's environment as the template gives
  it (Globals + its own, as SAM merges them; a variable the shell also sets keeps the shell's value, the local
  override the README documents) and the variables the Lambda runtime sets (``AWS_LAMBDA_FUNCTION_NAME``,
  ``AWS_REGION``, …), plus only what boto3 needs to reach the endpoint (``AWS_ENDPOINT_URL``, credentials,
  region) and what the caller names (``environment=``). Nothing else of this process's environment gets in.
- **Init.** The Init phase (imports, module-level clients, the model) may take 10 s. Past that, Lambda
  initialises again as part of the first invocation, within the function's timeout; here the same init goes on,
  and the time it takes past 10 s is charged to the first invocation's timeout in the same way. An exception
  while importing the handler is ``Runtime.ImportModuleError``.
- **Timeout.** An invocation that overruns the function's ``Timeout`` is ``Sandbox.Timedout``; the environment
  is killed and the next invocation gets a fresh one (a cold start).
- **Memory.** An environment whose resident memory (its peak RSS, ``VmHWM``, checked every 50 ms while it
  works, so a short spike is seen too) goes over the function's ``MemorySize`` is killed:
  ``Runtime.OutOfMemory``. Lambda limits the sandbox's memory (a cgroup), not its address space:
  ``RLIMIT_AS`` is unusable here, because onnxruntime and glibc reserve address space per thread (measured:
  1.1 GB of address space for 160 MB resident with 8 threads, and the model fails to load under a 1,024 MB
  ``RLIMIT_AS``); ``RLIMIT_DATA`` counts untouched writable memory too (about twice the resident size), so
  it would be stricter than Lambda. See bench/lambda-memory.md (``python -m bench.lambda_memory``).
- **Answer.** The handler's return value must be JSON (``Runtime.MarshalError``) and at most 6 MB
  (``Function.ResponseSizeTooLarge``: Lambda's quota on a synchronous invocation's response). An exception is
  reported as its type's name and message, as the Python runtime does; a process that dies is
  ``Runtime.ExitError``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refund_sorter_cli.stepfunctions.definition import SERVERLESS_FUNCTION, function_arn
from refund_sorter_cli.stepfunctions.errors import StatesError
from refund_sorter_cli.template import LOCAL_REGION, Template

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

logger = logging.getLogger(__name__)

# Lambda's Init phase limit for on-demand functions.
INIT_SECONDS = 10.0
# Lambda's quota on a synchronous invocation's response, and the number its error message names.
RESPONSE_LIMIT_BYTES = 6_291_556
# How often a working environment's memory (and whether to stop) is looked at.
WATCH_SECONDS = 0.05
# What boto3 needs from this process to reach the same endpoint as it (moto locally) with the same identity.
BOTO3_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


class LambdaFunctionError(Exception):
    """The function failed: ``error_type`` is what Step Functions reports as the error's name."""

    def __init__(self, error_type: str, message: str, payload: dict[str, Any] | None = None) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type, self.message = error_type, message
        self.payload = payload or {"errorType": error_type, "errorMessage": message}


def sandbox_environment(template: Template, logical_id: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment a function's execution environment gets (see the module's docstring)."""
    from refund_sorter_cli.local_stack import function_environment

    function = template.function(logical_id)
    name = template.physical_name(logical_id)
    environment = {
        "PATH": os.defpath,
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "AWS_REGION": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or LOCAL_REGION,
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "_HANDLER": function.handler,
        "LAMBDA_TASK_ROOT": str(function.code_dir),
    }
    environment |= {
        key: os.environ.get(key, value) for key, value in function_environment(template, logical_id).items()
    }
    environment |= {key: os.environ[key] for key in BOTO3_VARIABLES if key in os.environ}
    environment.setdefault("AWS_DEFAULT_REGION", environment["AWS_REGION"])
    return environment | dict(extra or {})


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
    if spec.log_path == "-":  # the function's logs beside the caller's own messages, never mixed into its answer
        os.dup2(2, 1)
    elif spec.log_path:  # the function's logs go to a file, as CloudWatch would keep them
        with Path(spec.log_path).open("ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
    os.environ.clear()
    os.environ.update(spec.environment)
    if spec.initializer is not None:
        spec.initializer()
    from refund_sorter_cli.local_stack import LambdaContext, load_handler

    template = Template(Path(spec.template_path), stack_name=spec.stack_name)
    function = template.function(spec.logical_id)
    try:
        handler = load_handler(template, spec.logical_id)
    except Exception as exc:  # noqa: BLE001 - the runtime reports any import failure this way
        module = function.handler.rpartition(".")[0]
        conn.send(("error", _error("Runtime.ImportModuleError", f"Unable to import module '{module}': {exc}", exc)))
        return
    conn.send(("ready", None))
    while (message := _receive(conn)) is not None:
        event, timeout = message
        context = LambdaContext(template.physical_name(spec.logical_id), function.memory, timeout)
        try:
            result = handler(event, context)
        except Exception as exc:  # noqa: BLE001 - Lambda reports any exception as the function's error
            conn.send(("error", _error(type(exc).__name__, str(exc), exc)))
        else:
            try:
                conn.send(("ok", json.dumps(result)))
            except (TypeError, ValueError) as exc:
                conn.send(("error", _error("Runtime.MarshalError", f"Unable to marshal response: {exc}", exc)))
        sys.stdout.flush()  # the log file is complete for whoever reads it after the invocation
        sys.stderr.flush()


def _error(error_type: str, message: str, exc: BaseException) -> dict[str, Any]:
    return {"errorType": error_type, "errorMessage": message, "stackTrace": traceback.format_exception(exc)}


def _receive(conn: Connection) -> Any:
    try:
        return conn.recv()
    except EOFError:
        return None


def peak_resident_mb(pid: int) -> float:
    """The process's peak resident set size (``VmHWM``) in MiB; 0 once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class _Environment:
    logical_id: str
    process: BaseProcess
    conn: Connection
    started: float = field(default_factory=time.monotonic)

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
        Where the functions, their handlers, environments, timeouts and memory sizes come from.
    timeouts, memory_mb
        Seconds and MiB, by logical id, instead of the template's ``Timeout`` and ``MemorySize`` (tests make a
        hang cost seconds, and memory run out without using a gigabyte).
    initializer
        Called first in every new environment (before the handler is imported); must be picklable.
    log_dir
        Where each environment's stdout/stderr go (one file per environment); ``"-"``: this process's stderr;
        inherited when ``None``.
    environment
        Variables every environment gets on top of the function's own (they win over the template's).
    """

    def __init__(
        self,
        template: Template,
        *,
        timeouts: Mapping[str, float] | None = None,
        memory_mb: Mapping[str, int] | None = None,
        initializer: Callable[[], None] | None = None,
        log_dir: Path | str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.template = template
        self.environment = dict(environment or {})
        self.timeouts = dict(timeouts or {})
        self.memory_mb = dict(memory_mb or {})
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

    def invoke(
        self, function_name: str, payload: Any, *, stopped: Callable[[], StatesError | None] | None = None
    ) -> Any:
        """Run the function on ``payload`` and return its result, or raise :class:`LambdaFunctionError`.

        ``stopped`` is asked while the function runs: when it returns an error (the execution timed out, the
        map run failed), the environment is killed and that error raised. (In AWS the invocation would run on
        unobserved; here nothing would read its answer.)
        """
        logical_id = self.logical_id(function_name)
        timeout = self.timeouts.get(logical_id, float(self.template.function(logical_id).timeout))
        environment, charged = self._take(logical_id, timeout, stopped)
        left = timeout - charged
        try:
            try:
                environment.conn.send((payload, left))
            except OSError:  # it died while idle (killed from outside): Lambda would report the invocation failed
                environment.stop(kill=True)
                raise LambdaFunctionError("Runtime.ExitError", "the execution environment was gone") from None
            if not self._wait(environment, left, stopped):
                environment.stop(kill=True)
                raise LambdaFunctionError("Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds")
            kind, body = self._reply(environment)
        except BaseException:
            self._forget(environment)
            raise
        self._give_back(environment)
        if kind == "error":
            raise LambdaFunctionError(body["errorType"], body["errorMessage"], body)
        size = len(body.encode("utf-8"))
        if size > RESPONSE_LIMIT_BYTES:
            raise LambdaFunctionError(
                "Function.ResponseSizeTooLarge",
                f"Response payload size ({size} bytes) exceeded maximum allowed payload size "
                f"({RESPONSE_LIMIT_BYTES} bytes).",
            )
        return json.loads(body)

    def _reply(self, environment: _Environment) -> tuple[str, Any]:
        try:
            kind, body = environment.conn.recv()
        except (EOFError, OSError):
            environment.process.join(timeout=10)
            code = environment.process.exitcode
            environment.stop(kill=True)
            raise LambdaFunctionError("Runtime.ExitError", f"Runtime exited with error: exit status {code}") from None
        return kind, body

    def _wait(
        self, environment: _Environment, seconds: float, stopped: Callable[[], StatesError | None] | None
    ) -> bool:
        """Wait up to ``seconds`` for the environment to answer, watching its memory and whether to stop."""
        limit = self.memory_mb.get(environment.logical_id, self.template.function(environment.logical_id).memory)
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            if environment.conn.poll(max(0.0, min(WATCH_SECONDS, deadline - time.monotonic()))):
                return True
            if (peak := peak_resident_mb(environment.process.pid or 0)) > limit:
                environment.stop(kill=True)
                raise LambdaFunctionError(
                    "Runtime.OutOfMemory",
                    f"Runtime exited with error: signal: killed (used {peak:.0f} MB of its {limit} MB)",
                )
            if stopped is not None and (reason := stopped()) is not None:
                environment.stop(kill=True)
                raise reason
            if time.monotonic() >= deadline:
                return False

    def _take(
        self, logical_id: str, timeout: float, stopped: Callable[[], StatesError | None] | None
    ) -> tuple[_Environment, float]:
        """A warm environment, or a new one and the seconds its init took past Lambda's 10 s."""
        with self._lock:
            idle = self._idle.setdefault(logical_id, [])
            if idle:
                return idle.pop(), 0.0
        return self._start(logical_id, timeout, stopped)

    def _start(
        self, logical_id: str, timeout: float, stopped: Callable[[], StatesError | None] | None
    ) -> tuple[_Environment, float]:
        parent, child = self._context.Pipe()
        log_path = None
        if self.log_dir == "-":
            log_path = "-"
        elif self.log_dir is not None:
            Path(self.log_dir).mkdir(parents=True, exist_ok=True)
            log_path = str(Path(self.log_dir) / f"{logical_id}-{uuid.uuid4().hex[:8]}.log")
        environment_variables = sandbox_environment(self.template, logical_id, self.environment)
        spec = _EnvironmentSpec(
            str(self.template.path), self.template.stack_name, logical_id, self.initializer, log_path,
            environment_variables,
        )  # fmt: skip
        process = self._context.Process(target=_serve, args=(child, spec), name=f"lambda-{logical_id}", daemon=True)
        process.start()
        child.close()
        environment = _Environment(logical_id, process, parent)
        with self._lock:
            self._all.append(environment)
            self.started += 1
        try:
            charged = 0.0
            if not self._wait(environment, INIT_SECONDS, stopped):
                # As Lambda does: init goes on within the first invocation, against its timeout.
                logger.warning(
                    "%s: init took over %.0f s; the rest counts against its timeout", logical_id, INIT_SECONDS
                )
                began = time.monotonic()
                if not self._wait(environment, timeout, stopped):
                    environment.stop(kill=True)
                    raise LambdaFunctionError("Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds")
                charged = time.monotonic() - began
            kind, body = self._reply(environment)
        except BaseException:
            environment.stop(kill=True)
            self._forget(environment)
            raise
        if kind == "error":
            environment.stop(kill=True)
            self._forget(environment)
            raise LambdaFunctionError(body["errorType"], body["errorMessage"], body)
        return environment, charged

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


def cpu_share(workers: int) -> dict[str, str]:
    """Environment for ``workers`` local environments running at once: in Lambda each has vCPUs of its own,
    here they share this machine's, so each gets its share of onnxruntime threads instead of one per core
    (unless the shell sets the thread count itself)."""
    if "REFUND_SORTER_INTRA_OP_THREADS" in os.environ:
        return {"REFUND_SORTER_INTRA_OP_THREADS": os.environ["REFUND_SORTER_INTRA_OP_THREADS"]}
    return {"REFUND_SORTER_INTRA_OP_THREADS": str(max(1, (os.cpu_count() or 1) // max(1, workers)))}
