"""Step Functions' errors as the runner raises them, and which Retry/Catch rule matches which.

AWS behaviour followed (Step Functions developer guide, "Error handling"): an error is matched by its own name,
by ``States.ALL`` (any error), and by ``States.TaskFailed`` (any error but ``States.Timeout``). Two errors are
*terminal* and no rule matches them, ``States.ALL`` included: ``States.Runtime`` (an execution fault such as a
path that matches nothing: "a retry or catch on States.ALL won't catch States.Runtime errors") and
``States.DataLimitExceeded`` (a state's data over the 256 KiB quota).
"""

from __future__ import annotations

RUNTIME = "States.Runtime"
DATA_LIMIT_EXCEEDED = "States.DataLimitExceeded"
TIMEOUT = "States.Timeout"
RESULT_PATH_MATCH_FAILURE = "States.ResultPathMatchFailure"
TERMINAL_ERRORS = frozenset({RUNTIME, DATA_LIMIT_EXCEEDED})


class UnsupportedDefinitionError(ValueError):
    """The definition uses something this runner does not implement (and so would run differently)."""


class StatesError(Exception):
    """A Step Functions error: its name (``States.TaskFailed``, ``Sandbox.Timedout``, …) and cause."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


def matches(names: list[str], error: str) -> bool:
    """Whether a Retry or Catch rule's ``ErrorEquals`` matches ``error``."""
    if error in TERMINAL_ERRORS:
        return False
    if "States.ALL" in names or error in names:
        return True
    return "States.TaskFailed" in names and error != TIMEOUT
