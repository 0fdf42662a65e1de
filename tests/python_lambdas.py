"""Lambda tasks as plain Python functions, for tests of the Step Functions interpreter (no processes)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from refund_sorter_cli.stepfunctions import LambdaFunctionError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from refund_sorter_cli.stepfunctions import StatesError


class PythonLambdas:
    """Lambda tasks as Python functions, with :class:`LocalLambdas`' ``invoke`` contract: the call watches
    ``stopped`` while it works (a function that waits is stopped as the process would be killed)."""

    def __init__(self, work: Callable[[Any], Any] | Mapping[str, Callable[[Any], Any]]) -> None:
        """``work``: the one function every task runs, or functions by name (the ARN's last part)."""
        self.work = work
        self.calls: list[Any] = []
        self.stopped: list[Any] = []
        self._lock = threading.Lock()

    def invoke(
        self, function_name: str, payload: Any, *, stopped: Callable[[], StatesError | None] | None = None
    ) -> Any:
        with self._lock:
            self.calls.append(payload)
        try:
            work = self.work if callable(self.work) else self.work[function_name.rsplit(":", 1)[-1]]
            answer = work(payload)
        except (ValueError, RuntimeError, KeyError) as exc:  # the function raised: Lambda reports its type
            raise LambdaFunctionError(type(exc).__name__, str(exc)) from None
        if isinstance(answer, Wait):
            until = time.monotonic() + answer.seconds
            while time.monotonic() < until:
                if stopped is not None and (reason := stopped()) is not None:
                    with self._lock:
                        self.stopped.append(payload)
                    raise reason
                time.sleep(0.01)
            return answer.then
        return answer


class Wait:
    """A function that works ``seconds`` before it answers ``then``."""

    def __init__(self, seconds: float, then: Any = None) -> None:
        self.seconds, self.then = seconds, then
