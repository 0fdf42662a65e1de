"""A state's data flow: InputPath → Parameters → (work) → ResultSelector → ResultPath → OutputPath.

AWS behaviour followed (Amazon States Language spec and the developer guide's "Processing input and output"):

- a reference path (``$.a.b[0]``, ``$$.Execution.Name``) that matches nothing is ``States.Runtime``;
- ``"InputPath": null`` gives the state ``{}``; ``"OutputPath": null`` sends ``{}`` on;
- ``"ResultPath": null`` keeps the input; ``$`` replaces it; a deeper path writes into a copy of the input,
  creating the objects it names, and fails with ``States.ResultPathMatchFailure`` when the input holds something
  other than an object (a string, a number, a list) where the path must go;
- a state's input (after Parameters), a task's result and a state's output are at most 256 KiB as UTF-8 JSON
  (``States.DataLimitExceeded``).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from refund_sorter_cli.stepfunctions.errors import (
    DATA_LIMIT_EXCEEDED,
    RESULT_PATH_MATCH_FAILURE,
    RUNTIME,
    StatesError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

# Step Functions' quota on the data a state passes on: 256 KiB, as a UTF-8 string.
PAYLOAD_LIMIT_BYTES = 256 * 1024
REFERENCE_PATH = re.compile(r"^\$\$?(\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*$")
STRING_TO_JSON = re.compile(r"^States\.StringToJson\('((?:[^'\\]|\\.)*)'\)$")


def _path_parts(path: str) -> list[str | int]:
    return [int(p[1:-1]) if p.startswith("[") else p[1:] for p in re.findall(r"\.[A-Za-z0-9_]+|\[\d+\]", path)]


def _selects(value: Any, part: str | int) -> bool:
    if isinstance(part, str):
        return isinstance(value, dict) and part in value
    return isinstance(value, list) and part < len(value)


def read_path(document: Any, path: str, context: Mapping[str, Any] | None = None) -> Any:
    """The value at a reference path (``$…`` in ``document``, ``$$…`` in the context object)."""
    value: Any = context if path.startswith("$$") else document
    for part in _path_parts(path.removeprefix("$$").removeprefix("$")):
        # type strictness: a name selects only in an object, an index only in a list (never a string's letter)
        if not _selects(value, part):
            raise StatesError(RUNTIME, f"Invalid path '{path}': no results for it in the input")
        value = value[part]
    return value


def has_path(document: Any, path: str) -> bool:
    try:
        read_path(document, path)
    except StatesError:
        return False
    return True


def select(document: Any, path: str | None) -> Any:
    """``InputPath`` / ``OutputPath``: the part of ``document`` at ``path``; ``null`` selects ``{}``."""
    return {} if path is None else read_path(document, path)


def write_path(document: Any, path: str | None, value: Any) -> Any:
    """``ResultPath``: ``value`` placed in (a copy of) ``document`` at ``path``; ``$`` replaces it, null drops it."""
    if path is None:
        return document
    parts = _path_parts(path.removeprefix("$"))
    if not parts:
        return value
    result = json.loads(json.dumps(document))
    target = result
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(part, str) and isinstance(target, dict):
            if last:
                target[part] = value
            else:
                target = target.setdefault(part, {})
        elif isinstance(part, int) and isinstance(target, list) and part < len(target):
            if last:
                target[part] = value
            else:
                target = target[part]
        else:
            raise StatesError(
                RESULT_PATH_MATCH_FAILURE,
                f"Unable to apply ResultPath '{path}' to the input: it holds {type(target).__name__} where the "
                "path needs an object",
            )
    return result


def fill_template(template: Any, document: Any, context: Mapping[str, Any]) -> Any:
    """A payload template (Parameters, ItemSelector, …) with its ``"key.$"`` fields resolved."""
    if isinstance(template, dict):
        filled = {}
        for key, value in template.items():
            if key.endswith(".$"):
                if match := STRING_TO_JSON.match(value):
                    filled[key[:-2]] = json.loads(match[1].replace("\\'", "'"))
                else:
                    filled[key[:-2]] = read_path(document, value, context)
            else:
                filled[key] = fill_template(value, document, context)
        return filled
    if isinstance(template, list):
        return [fill_template(value, document, context) for value in template]
    return template


def within_limit(value: Any, what: str) -> Any:
    """``value`` itself, or ``States.DataLimitExceeded`` when it is over the 256 KiB quota."""
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > PAYLOAD_LIMIT_BYTES:
        raise StatesError(
            DATA_LIMIT_EXCEEDED, f"{what} is {size} bytes, over the {PAYLOAD_LIMIT_BYTES}-byte (256 KiB) quota"
        )
    return value
