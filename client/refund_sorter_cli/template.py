"""Read infra/template.yaml, so the local stack is built from the template's own definitions.

The SAM template is the one place the bucket, tables, functions, routes and environment are described;
the local stack and the tests read them from here rather than restating them (style.md practice 11).
Only what the local stack needs is resolved: ``Ref``/``!Sub`` of parameters, pseudo parameters and
resources, and ``!If`` on conditions that are plain parameter comparisons.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

LOCAL_STACK = "refund-sorter-local"
LOCAL_ACCOUNT = "123456789012"
LOCAL_REGION = "us-east-1"


class CloudFormationLoader(yaml.SafeLoader):
    """YAML loader that turns short-form intrinsics (``!Ref X``) into their long form (``{"Ref": "X"}``)."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in {"Ref", "Condition"} else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


CloudFormationLoader.add_multi_constructor("!", _intrinsic)


def find_template(start: Path | None = None) -> Path:
    """``infra/template.yaml`` of the checkout we run in (the CLI is a developer tool run from the repo)."""
    for folder in [start or Path.cwd(), *(start or Path.cwd()).parents, *Path(__file__).resolve().parents]:
        candidate = folder / "infra" / "template.yaml"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("infra/template.yaml not found: run refund-sorter from the project checkout")


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    code_dir: Path
    handler: str
    timeout: int
    memory: int
    environment: dict[str, str]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # API Gateway form: /predictions/{id}

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path)) + "$")


class Template:
    """The parsed template, with values resolved the way a local deployment named ``refund-sorter-local`` would."""

    def __init__(self, path: Path | None = None, stack_name: str = LOCAL_STACK) -> None:
        self.path = path or find_template()
        self.document: dict[str, Any] = yaml.load(self.path.read_text(encoding="utf-8"), CloudFormationLoader)  # noqa: S506 - SafeLoader subclass
        self.stack_name = stack_name
        self.resources: dict[str, dict[str, Any]] = self.document.get("Resources", {})

    def resources_of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: r for name, r in self.resources.items() if r.get("Type") == kind}

    @cached_property
    def parameters(self) -> dict[str, str]:
        return {name: str(p.get("Default", "")) for name, p in self.document.get("Parameters", {}).items()}

    def physical_name(self, logical_id: str) -> str:
        """The name a resource gets locally: its explicit name property resolved, else ``<stack>-<kebab id>``."""
        properties = self.resources[logical_id].get("Properties", {})
        for key in ("BucketName", "TableName", "QueueName", "FunctionName"):
            if key in properties:
                return str(self.resolve(properties[key]))
        kebab = re.sub(r"(?<!^)(?=[A-Z])", "-", logical_id).lower()
        return f"{self.stack_name}-{kebab}"

    def resolve(self, value: Any) -> Any:  # noqa: PLR0911 - one return per intrinsic reads best
        """Resolve the intrinsics the local stack needs; anything else is returned as it is."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
                return re.sub(r"\$\{([^}!]+)\}", lambda m: str(extra.get(m[1], self._ref(m[1]))), text)
            if key == "Fn::If":
                condition, when_true, when_false = arg
                return self.resolve(when_true if self.condition(condition) else when_false)
            if key == "Fn::GetAtt":
                return self.physical_name(arg[0])
        return {k: self.resolve(v) for k, v in value.items()}

    def condition(self, name: str) -> bool:
        return bool(self._evaluate(self.document.get("Conditions", {})[name]))

    def _evaluate(self, expression: Any) -> Any:
        if isinstance(expression, dict) and len(expression) == 1:
            ((key, arg),) = expression.items()
            if key == "Fn::Equals":
                left, right = (self._evaluate(a) for a in arg)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self._evaluate(arg[0])
            if key == "Fn::And":
                return all(self._evaluate(a) for a in arg)
            if key == "Fn::Or":
                return any(self._evaluate(a) for a in arg)
            if key == "Condition":
                return self.condition(arg)
        return self.resolve(expression)

    def _ref(self, name: str) -> str:
        pseudo = {
            "AWS::StackName": self.stack_name,
            "AWS::AccountId": LOCAL_ACCOUNT,
            "AWS::Region": LOCAL_REGION,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": "",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources:
            return self.physical_name(name)
        raise KeyError(f"template has no parameter or resource {name}")

    def function(self, logical_id: str) -> FunctionSpec:
        """A function's code folder, handler and environment, merged with Globals as SAM does."""
        globals_ = self.document.get("Globals", {}).get("Function", {})
        properties = self.resources[logical_id]["Properties"]
        environment = {
            **globals_.get("Environment", {}).get("Variables", {}),
            **properties.get("Environment", {}).get("Variables", {}),
        }
        return FunctionSpec(
            logical_id=logical_id,
            code_dir=(self.path.parent / properties["CodeUri"]).resolve(),
            handler=properties["Handler"],
            timeout=int(self.resolve(properties.get("Timeout", globals_.get("Timeout", 3)))),
            memory=int(self.resolve(properties.get("MemorySize", globals_.get("MemorySize", 128)))),
            environment={k: str(self.resolve(v)) for k, v in environment.items()},
        )

    def api_routes(self, logical_id: str) -> list[Route]:
        events = self.resources[logical_id]["Properties"].get("Events", {})
        return [
            Route(e["Properties"]["Method"].upper(), e["Properties"]["Path"])
            for e in events.values()
            if e.get("Type") == "Api"
        ]
