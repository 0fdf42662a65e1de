"""The state machine's definition, read the way CloudFormation deploys it, and checked against what the runner runs.

Reading (AWS behaviour followed: ``AWS::StepFunctions::StateMachine`` with ``DefinitionS3Location`` or
``Definition``, and ``DefinitionSubstitutions``): the template's state machine names its definition file with
``DefinitionUri`` (``infra/statemachine/nightly.asl.yaml``); CloudFormation replaces each ``${name}`` in the
file's text with its substitution (a function's ARN, a bucket name, a parameter) and refuses a name it has no
value for. :func:`state_machine_definition` does the same to the same file, so the local run and the deployed
one read one definition.

Checking: :func:`check_definition` refuses (``UnsupportedDefinitionError``) every state, field, path or Choice
rule the interpreter does not implement the way AWS runs it, before a run starts:

- ``Task`` on ``arn:aws:states:::lambda:invoke`` (InputPath, Parameters, ResultSelector, ResultPath, OutputPath,
  Retry with IntervalSeconds/MaxAttempts/BackoffRate/MaxDelaySeconds/JitterStrategy, Catch);
- ``Map`` in ``DISTRIBUTED`` mode with an S3 JSON ``ItemReader``, ItemSelector, MaxConcurrency(Path),
  ToleratedFailurePercentage/Count (only with a ``ResultWriter``: what AWS returns for tolerated failed children
  without one is not something this runner claims to know), and an S3 ``ResultWriter``;
- ``Choice`` (BooleanEquals, IsPresent, StringEquals, NumericEquals, each with a value of its type), ``Succeed``,
  ``Fail``;
- reference paths (``$.a.b``, ``$$.Execution.Name``, ``$$.Map.Item.Value``, ``$$.State.RetryCount``) and the
  one intrinsic function used, ``States.StringToJson``.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import yaml

from refund_sorter_cli.stepfunctions.data import REFERENCE_PATH, STRING_TO_JSON
from refund_sorter_cli.stepfunctions.errors import UnsupportedDefinitionError
from refund_sorter_cli.template import LOCAL_ACCOUNT, LOCAL_REGION

if TYPE_CHECKING:
    from refund_sorter_cli.template import Template

NIGHTLY_STATE_MACHINE = "NightlyStateMachine"
LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
S3_GET_OBJECT = "arn:aws:states:::s3:getObject"
S3_PUT_OBJECT = "arn:aws:states:::s3:putObject"
SERVERLESS_FUNCTION = "AWS::Serverless::Function"
_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


def state_machine_definition(template: Template, logical_id: str = NIGHTLY_STATE_MACHINE) -> dict[str, Any]:
    """The state machine's definition as it would be deployed from ``template`` (substitutions resolved)."""
    properties = template.resources[logical_id]["Properties"]
    substitutions = {
        name: _substitution(template, value) for name, value in properties.get("DefinitionSubstitutions", {}).items()
    }
    if "DefinitionUri" in properties:
        # the file's own text, as CloudFormation substitutes it (YAML or JSON: JSON is YAML)
        text = (template.path.parent / properties["DefinitionUri"]).read_text(encoding="utf-8")
        inside_json = False
    else:
        text = json.dumps(properties["Definition"])
        inside_json = True  # a value goes inside a JSON string: escaped
    # an unknown name is a deployment error
    for name in set(_PLACEHOLDER.findall(text)) - set(substitutions):
        raise UnsupportedDefinitionError(f"the definition uses ${{{name}}}, which DefinitionSubstitutions lacks")
    text = _PLACEHOLDER.sub(
        lambda m: json.dumps(substitutions[m[1]])[1:-1] if inside_json else substitutions[m[1]], text
    )
    definition: dict[str, Any] = yaml.safe_load(text)
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
# Each Choice test and the JSON type of the value it compares with (and must find at its Variable to match).
CHOICE_TESTS: dict[str, tuple[type, ...]] = {
    "BooleanEquals": (bool,),
    "IsPresent": (bool,),
    "StringEquals": (str,),
    "NumericEquals": (int, float),
}
_RETRY_FIELDS = {"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate", "MaxDelaySeconds", "JitterStrategy"}
_NULLABLE_PATHS = ("ResultPath", "OutputPath", "InputPath")


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
            _check_choice_rule(name, rule)
    if kind == "Map":
        _check_map(name, state)


def _check_choice_rule(name: str, rule: dict[str, Any]) -> None:
    tests = set(rule) & set(CHOICE_TESTS)
    if set(rule) - {"Variable", "Next"} - tests or len(tests) != 1:
        raise UnsupportedDefinitionError(f"{name}: choice rule {rule} is not implemented")
    (test,) = tests
    value = rule[test]
    if not isinstance(value, CHOICE_TESTS[test]) or (test.startswith("Numeric") and isinstance(value, bool)):
        raise UnsupportedDefinitionError(f"{name}: {test} needs a {CHOICE_TESTS[test][0].__name__}, not {value!r}")
    _check_path(name, rule["Variable"])


def _check_paths_and_retries(name: str, state: dict[str, Any]) -> None:
    for path_field in (*_NULLABLE_PATHS, "MaxConcurrencyPath"):
        if path_field in state and (state[path_field] is not None or path_field not in _NULLABLE_PATHS):
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
    tolerates = {"ToleratedFailurePercentage", "ToleratedFailureCount"} & set(state)
    if tolerates and writer is None:
        raise UnsupportedDefinitionError(f"{name}: {sorted(tolerates)} is implemented only with a ResultWriter")
    check_definition({k: v for k, v in processor.items() if k != "ProcessorConfig"}, where=f"{name}/")


def _check_path(name: str, path: Any) -> None:
    if not isinstance(path, str) or not REFERENCE_PATH.match(path):
        raise UnsupportedDefinitionError(f"{name}: path {path!r} is not a plain reference path")


def _check_payload_template(name: str, template: Any) -> None:
    if isinstance(template, dict):
        for key, value in template.items():
            if key.endswith(".$"):
                if not isinstance(value, str) or not (REFERENCE_PATH.match(value) or STRING_TO_JSON.match(value)):
                    raise UnsupportedDefinitionError(f"{name}: {key} = {value!r} is not implemented")
            else:
                _check_payload_template(name, value)
    elif isinstance(template, list):
        for value in template:
            _check_payload_template(name, value)
