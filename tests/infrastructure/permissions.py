"""What IAM permissions AWS calls need, what the template grants, and where the code makes AWS calls.

Three pieces for ``test_permissions.py``:

* :class:`CallRecorder` records every AWS call made in this process (service, operation, parameters, and the
  frames of our own code it came from), by wrapping the one botocore method every call and every presigned
  URL goes through (``BaseClient._emit_api_params``). It sees Powertools' calls too, which no scan of our
  source could.
* :func:`needed` is the declared map from a call to the IAM actions and resources it needs. A call it does
  not know fails the test: someone must declare what a new kind of call needs.
* :func:`granted` reads a function's ``Policies`` from the template into the same (action, resource) form;
  :func:`aws_call_sites` finds every AWS call in our source, so a call no scenario exercises is reported.

Resources are local ARNs (the names the local stack gives the template's resources). An object is named by
its top-level prefix (``arn:aws:s3:::bucket/incoming/*``): that is the unit the bucket is laid out in and the
unit policies grant.

``s3:ListBucket`` is granted to the prefix, not the bucket: :func:`listing_prefix` is the ``s3:prefix`` S3
authorises a call's ListBucket with, and :func:`listing_conditions` reads the ``s3:prefix`` patterns each
grant is conditioned on, so the test checks the condition as IAM would (:func:`iam_string_like`).
"""

from __future__ import annotations

import ast
import re
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import botocore.client
import pytest
from botocore import xform_name

if TYPE_CHECKING:
    from collections.abc import Iterator

    from refund_sorter_cli.template import Template

ROOT = Path(__file__).resolve().parents[2]
# The code that runs in Lambda: the runtime package and the handlers.
RUNTIME = (
    ROOT / "layers" / "model" / "refund_sorter",
    ROOT / "layers" / "train" / "refund_sorter_training",
    ROOT / "functions",
)
REGION, ACCOUNT = "us-east-1", "123456789012"
SERVICES = ("s3", "dynamodb")
Permission = tuple[str, str]  # (IAM action, resource ARN)


@dataclass(frozen=True)
class Frame:
    """A place in our source: file (relative to the repository) and qualified function name."""

    path: str
    qualname: str


@dataclass(frozen=True)
class AwsCall:
    service: str
    operation: str
    params: dict[str, Any] = field(hash=False, compare=False)
    frames: frozenset[Frame] = frozenset()
    presigned: bool = False


class CallRecorder:
    """Records the AWS calls made while :meth:`recording` is active, under the label given."""

    def __init__(self) -> None:
        self.calls: dict[str, list[AwsCall]] = {}
        self._label: str | None = None
        self._lock = threading.Lock()

    @contextmanager
    def installed(self) -> Iterator[CallRecorder]:
        """Wrap ``BaseClient._emit_api_params`` (botocore's, private: so looked up by name) while active."""
        original = vars(botocore.client.BaseClient)["_emit_api_params"]
        recorder = self

        def emit_api_params(client: Any, api_params: Any, operation_model: Any, context: Any) -> Any:
            recorder._record(client.meta.service_model.service_name, operation_model.name, api_params, context)
            return original(client, api_params, operation_model, context)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(botocore.client.BaseClient, "_emit_api_params", emit_api_params)
            yield self

    @contextmanager
    def recording(self, label: str) -> Iterator[None]:
        self._label = label
        self.calls.setdefault(label, [])
        try:
            yield
        finally:
            self._label = None

    def _record(self, service: str, operation: str, params: dict[str, Any], context: dict[str, Any]) -> None:
        label = self._label
        if label is None:
            return
        call = AwsCall(service, operation, dict(params), _our_frames(), bool(context.get("is_presign_request")))
        with self._lock:
            self.calls[label].append(call)


def _our_frames() -> frozenset[Frame]:
    frames = set()
    frame = sys._getframe(2)
    roots = [str(root) for root in RUNTIME]
    while frame is not None:
        filename = frame.f_code.co_filename
        if any(filename.startswith(root) for root in roots):
            frames.add(Frame(str(Path(filename).relative_to(ROOT)), frame.f_code.co_qualname))
        frame = frame.f_back  # type: ignore[assignment]
    return frozenset(frames)


# ------------------------------------------------------------------------------------------------ calls → IAM


def _object(bucket: str, key: str) -> str:
    top, slash, _ = key.partition("/")
    return f"arn:aws:s3:::{bucket}/{top}/*" if slash else f"arn:aws:s3:::{bucket}/{key}"


def _table(name: str, index: str | None = None) -> str:
    arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
    return f"{arn}/index/{index}" if index else arn


class UndeclaredCallError(LookupError):
    """A kind of AWS call :func:`needed` does not know: declare what it needs."""


def needed(call: AwsCall) -> set[Permission]:
    """The permissions one call needs (the Service Authorization Reference's rules for these operations)."""
    p = call.params
    # Scan: training finds the reviewed Results (rarely run; the table has no status index)
    if call.service == "dynamodb" and call.operation in {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
    }:
        return {(f"dynamodb:{call.operation}", _table(p["TableName"], p.get("IndexName")))}
    if call.service == "dynamodb" and call.operation == "BatchGetItem":
        return {("dynamodb:BatchGetItem", _table(name)) for name in p["RequestItems"]}
    if call.service != "s3":
        raise UndeclaredCallError(f"{call.service}:{call.operation}")
    bucket = f"arn:aws:s3:::{p['Bucket']}"
    if call.operation == "ListObjectsV2":
        return {("s3:ListBucket", bucket)}
    if call.operation in {"GetObject", "HeadObject"}:
        read = {("s3:GetObjectVersion" if p.get("VersionId") else "s3:GetObject", _object(p["Bucket"], p["Key"]))}
        # Whoever follows a presigned link is not told 404 or 403 by us; a call we make must see 404 for a
        # missing key, which S3 only answers to a caller allowed to list the bucket.
        return read if call.presigned else read | {("s3:ListBucket", bucket)}
    if call.operation == "PutObject":
        target = _object(p["Bucket"], p["Key"])
        return {("s3:PutObject", target)} | ({("s3:PutObjectTagging", target)} if p.get("Tagging") else set())
    if call.operation == "CopyObject":
        source = p["CopySource"]
        source_arn = _object(source["Bucket"], source["Key"])
        target = _object(p["Bucket"], p["Key"])
        permissions = {("s3:GetObject", source_arn), ("s3:PutObject", target)}
        if p.get("TaggingDirective", "COPY") == "COPY":  # the source's tags come along
            permissions |= {("s3:GetObjectTagging", source_arn), ("s3:PutObjectTagging", target)}
        elif p.get("Tagging"):
            permissions.add(("s3:PutObjectTagging", target))
        return permissions
    if call.operation == "DeleteObject":
        action = "s3:DeleteObjectVersion" if p.get("VersionId") else "s3:DeleteObject"
        return {(action, _object(p["Bucket"], p["Key"]))}
    if call.operation == "DeleteObjects":  # authorised object by object, as DeleteObject would be
        return {
            (
                "s3:DeleteObjectVersion" if entry.get("VersionId") else "s3:DeleteObject",
                _object(p["Bucket"], entry["Key"]),
            )
            for entry in p["Delete"]["Objects"]
        }
    raise UndeclaredCallError(f"s3:{call.operation}")


def listing_prefix(call: AwsCall) -> str | None:
    """The ``s3:prefix`` S3 authorises this call's ``s3:ListBucket`` with, if the call needs one.

    A listing's is its ``Prefix`` (none given: the empty string, the whole bucket). A GetObject or HeadObject we
    make needs ListBucket only so that a missing key answers 404 rather than 403; for that check S3 takes the
    key itself as the prefix (the Ceph RGW took the same rule to match AWS: ceph/ceph#68577), so a grant
    conditioned on ``incoming/*`` still tells a missing ``incoming/x.jpg`` from a forbidden one.
    """
    if call.service != "s3":
        return None
    if call.operation == "ListObjectsV2":
        return str(call.params.get("Prefix", ""))
    if call.operation in {"GetObject", "HeadObject"} and not call.presigned:
        return str(call.params["Key"])
    return None


def iam_string_like(value: str, pattern: str) -> bool:
    """IAM's ``StringLike``: case-sensitive, ``*`` any run of characters (``/`` included), ``?`` any one."""
    translated = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern)
    return re.fullmatch(translated, value, flags=re.DOTALL) is not None


# ------------------------------------------------------------------------------------------------ the template


def _arn(template: Template, value: Any) -> str:
    """A policy Resource as the local ARN it names (``!GetAtt Table.Arn``, ``!Sub "${Table.Arn}/…"``, ARNs)."""

    def table_arn(logical_id: str) -> str:
        resource = template.resources[logical_id]
        assert resource["Type"] == "AWS::DynamoDB::Table", f"{logical_id}.Arn: only table ARNs are understood"
        return _table(template.physical_name(logical_id))

    if isinstance(value, dict) and "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        assert attribute == "Arn", value
        return table_arn(logical_id)
    if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
        text = re.sub(r"\$\{(\w+)\.Arn\}", lambda match: table_arn(match[1]), value["Fn::Sub"])
        return str(template.resolve({"Fn::Sub": text}))
    return str(template.resolve(value))


def granted(template: Template, logical_id: str) -> set[Permission]:
    """A function's policies as (action, resource) pairs. Only inline statements are read: a SAM policy
    template (``DynamoDBCrudPolicy`` …) grants a fixed bundle, more than any one function calls."""
    permissions: set[Permission] = set()
    for policy in template.resources[logical_id]["Properties"].get("Policies", []):
        assert isinstance(policy, dict) and set(policy) <= {"Statement", "Version"}, (
            f"{logical_id}: {policy!r} - write an inline statement of exactly the actions the code needs"
        )
        for statement in policy["Statement"]:
            # A Condition (a key prefix of the jobs table, a listing prefix) only narrows a grant further; the
            # conditions themselves are asserted in test_nightly_template.py.
            assert statement["Effect"] == "Allow", statement
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            permissions |= {(action, _arn(template, resource)) for action in actions for resource in resources}
    return permissions


# ------------------------------------------------------------------------------------------------ the source


@dataclass(frozen=True)
class CallSite:
    frame: Frame
    line: int
    service_operations: frozenset[tuple[str, str]]  # what the call may be: (service, Operation)


@cache
def _operations_by_method() -> dict[str, frozenset[tuple[str, str]]]:
    """``get_object`` → {("s3", "GetObject")}, from botocore's own service models."""
    import botocore.session

    session = botocore.session.get_session()
    by_method: dict[str, set[tuple[str, str]]] = {}
    for service in SERVICES:
        for operation in session.get_service_model(service).operation_names:
            by_method.setdefault(xform_name(operation), set()).add((service, operation))
    return {method: frozenset(operations) for method, operations in by_method.items()}


# boto3's S3 transfer manager: its calls run on its own threads, where no frame of ours is on the stack.
_TRANSFER_METHODS = {"upload_file", "upload_fileobj", "download_file", "download_fileobj", "copy"}


class _Sites(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.scope: list[str] = []
        self.sites: list[CallSite] = []

    def _nested(self, node: ast.AST, name: str, is_function: bool) -> None:
        self.scope.append(name)
        if is_function:
            self.scope.append("<locals>")
        self.generic_visit(node)
        del self.scope[-2 if is_function else -1 :]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._nested(node, node.name, is_function=False)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._nested(node, node.name, is_function=True)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._nested(node, node.name, is_function=True)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._nested(node, "<lambda>", is_function=True)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Attribute):
            method = node.func.attr
            operations = _operations_by_method().get(method, frozenset())
            if method in {"get_paginator", "generate_presigned_url"} and node.args:
                first = node.args[0]
                named = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""
                operations = _operations_by_method().get(named, frozenset({("?", f"{method}({named or '…'})")}))
            if method in _TRANSFER_METHODS and not operations:
                operations = frozenset({("s3", f"transfer manager {method}: use the client's own operations")})
            if operations:
                qualname = ".".join(part for part in self.scope if part) or "<module>"
                if qualname.endswith(".<locals>"):
                    qualname = qualname.removesuffix(".<locals>")
                self.sites.append(CallSite(Frame(self.path, qualname), node.lineno, operations))
        self.generic_visit(node)


def aws_call_sites() -> list[CallSite]:
    """Every call in the runtime whose method is an S3 or DynamoDB client operation."""
    sites: list[CallSite] = []
    for root in RUNTIME:
        for path in sorted(root.rglob("*.py")):
            visitor = _Sites(str(path.relative_to(ROOT)))
            visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
            sites += visitor.sites
    return sites


def listing_conditions(template: Template, logical_id: str) -> list[tuple[str, ...] | None]:
    """The ``s3:prefix`` patterns each of a function's ``s3:ListBucket`` grants is conditioned on (``None``: a
    grant without a condition, any prefix). A condition other than ``StringLike`` on ``s3:prefix`` fails: say
    here how to read it before using it."""
    grants: list[tuple[str, ...] | None] = []
    for policy in template.resources[logical_id]["Properties"].get("Policies", []):
        for statement in policy["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if "s3:ListBucket" not in actions:
                continue
            condition = statement.get("Condition")
            if condition is None:
                grants.append(None)
                continue
            assert set(condition) == {"StringLike"} and set(condition["StringLike"]) == {"s3:prefix"}, (
                f"{logical_id}: {condition!r} - only a StringLike s3:prefix condition is understood here"
            )
            patterns = condition["StringLike"]["s3:prefix"]
            grants.append(tuple(patterns) if isinstance(patterns, list) else (patterns,))
    return grants
