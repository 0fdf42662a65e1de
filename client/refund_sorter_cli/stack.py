"""Which stack a command acts on, and how it runs one of the stack's functions: the one place every command
(``upload``, ``batch``, ``export``, ``invoke``, ``train``, ``models``) decides it.

``--aws`` has one meaning everywhere: act on the deployed stack in AWS, as the shell's credentials, region and
``REFUND_SORTER_*`` variables say, and never run a function's code on this machine (a function is *invoked*,
``lambda:Invoke``, on AWS). Without it, the command acts on the local stack: the moto server
``AWS_ENDPOINT_URL`` names (``refund-sorter local``'s by default), with the function's template environment
plus what only the local stack sets (:data:`~refund_sorter_cli.local_stack.LOCAL_ONLY_ENVIRONMENT`), and a
function runs as Lambda would run it, in an execution environment of its own:
:class:`refund_sorter_cli.stepfunctions.LocalLambdas`, the one Lambda emulator (the nightly run's tasks use it
too): its own process, only the function's environment, Lambda's init, timeout, memory and response limits.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from refund_sorter.config import Settings
    from refund_sorter_cli.template import Template

DEFAULT_FUNCTION = "PredictFunction"
# With --aws, a function's deployed name comes from a variable (the stack output <LogicalId>Name gives it):
# REFUND_SORTER_<NAME>_FUNCTION, e.g. PlanFunction → REFUND_SORTER_PLAN_FUNCTION. These two keep the shorter
# names README has always given them.
FUNCTION_NAME_VARIABLES = {
    "TrainFunction": "REFUND_SORTER_TRAIN_FUNCTION",
    "EmbedLabelledFunction": "REFUND_SORTER_EMBED_FUNCTION",
}


class StackError(Exception):
    """The command cannot reach the stack it was asked to act on; the message says what to do (exit 2)."""


class FunctionFailedError(Exception):
    """A stack function raised instead of answering (exit 1)."""


def connect(*, aws: bool, function: str = DEFAULT_FUNCTION) -> Template:
    """Point this process at the stack the command acts on, and return the template.

    Locally: boto3 at the moto server, ``function``'s environment in ``os.environ`` (values already set in the
    shell win), after one quick TCP connect, so a stack that is not running is one line now rather than a
    traceback after botocore's retries. With ``aws``: nothing changes, the shell says where.
    """
    from refund_sorter_cli.local_stack import apply_function_environment, use_local_aws
    from refund_sorter_cli.net import is_listening, is_loopback_url
    from refund_sorter_cli.template import Template

    template = Template()
    if function not in function_names(template):
        raise StackError(f"no function {function} in {template.path.name}: {', '.join(function_names(template))}")
    if aws:
        return template
    use_local_aws()
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    if is_loopback_url(endpoint) and not is_listening(endpoint):
        raise StackError(
            f"the local stack is not running at {endpoint}: start it with `refund-sorter local` "
            "in another terminal (or set AWS_ENDPOINT_URL, or add --aws for the deployed stack)"
        )
    apply_function_environment(template, function)
    return template


def settings(*, aws: bool, function: str = DEFAULT_FUNCTION) -> Settings:
    """The settings a command works with: ``function``'s environment on the local stack, the shell's on AWS."""
    from refund_sorter.config import get_settings

    connect(aws=aws, function=function)
    get_settings.cache_clear()
    return get_settings()


# Settings a command cannot do without, and the stack output that gives each (for --aws, where the shell sets them).
STACK_OUTPUTS = {
    "bucket": "ImagesBucketName",
    "table": "ResultsTableName",
    "models_table": "ModelsTableName",
    "jobs_table": "JobsTableName",
}


def settings_with(*names: str, aws: bool, function: str = DEFAULT_FUNCTION) -> Settings:
    """:func:`settings`, checked to have ``names`` set: a missing one is a :class:`StackError` (exit 2) naming its
    variable and the stack output to set it from, before any AWS call."""
    found = settings(aws=aws, function=function)
    missing = [name for name in names if not getattr(found, name)]
    if missing:
        wanted = ", ".join(f"REFUND_SORTER_{name.upper()} (the stack output {STACK_OUTPUTS[name]})" for name in missing)
        raise StackError(f"set {wanted}")
    return found


def function_names(template: Template) -> list[str]:
    """The template's functions (their logical ids), for ``invoke`` and its error messages."""
    return sorted(template.resources_of_type("AWS::Serverless::Function"))


def run_function(function: str, event: dict[str, Any], *, aws: bool, show_logs: bool = False) -> Any:
    """Run a stack function on ``event`` and return its answer: on the local stack as Lambda would run it
    (:class:`~refund_sorter_cli.stepfunctions.LocalLambdas`), ``lambda:Invoke`` of the deployed function with
    ``aws``.

    The function's own output (JSON log lines, metrics) is CloudWatch's business: on stderr with ``show_logs``
    (``invoke``, as ``sam local invoke`` shows it), else in :func:`function_log` (``train``: a person reads the
    summary, and a failure is one line naming that folder).

    Raises
    ------
    StackError
        No such function, or (``aws``) its deployed name is not set.
    FunctionFailedError
        The function raised; the message is its error, on one line.
    """
    if aws:
        connect(aws=True, function=function)  # a function the template has, or one line saying which it has
        return invoke_deployed(function, event)
    from refund_sorter_cli.stepfunctions import LambdaFunctionError, LocalLambdas

    template = connect(aws=False, function=function)
    try:
        with LocalLambdas(template, log_dir="-" if show_logs else function_log()) as lambdas:
            return lambdas.invoke(function, event)
    except LambdaFunctionError as exc:
        where = "" if show_logs else f" (its log: {function_log()})"
        raise FunctionFailedError(f"{function} failed: {exc.error_type}: {_first_line(exc.message)}{where}") from exc


@cache
def function_log() -> Path:
    """This process's folder of the output of the functions it ran (a file per execution environment)."""
    name = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}"
    return Path(tempfile.gettempdir()) / "refund-sorter-functions" / name


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "(no message)"


def deployed_name_variable(function: str) -> str:
    """The variable holding ``function``'s deployed name (``PlanFunction`` → ``REFUND_SORTER_PLAN_FUNCTION``)."""
    if function in FUNCTION_NAME_VARIABLES:
        return FUNCTION_NAME_VARIABLES[function]
    words = re.sub(r"(?<!^)(?=[A-Z])", "_", function.removesuffix("Function")).upper()
    return f"REFUND_SORTER_{words}_FUNCTION"


def invoke_deployed(function: str, event: dict[str, Any]) -> Any:
    """``lambda:Invoke`` of the deployed ``function`` (a logical id of the template) with ``event``."""
    import boto3
    from botocore.config import Config

    variable = deployed_name_variable(function)
    name = os.environ.get(variable)
    if not name:
        raise StackError(
            f"set {variable} to the deployed function's name: aws cloudformation describe-stacks --stack-name "
            f"<stack> --query \"Stacks[0].Outputs[?OutputKey=='{function}Name'].OutputValue\" --output text"
        )
    # One try (an invocation is not something to repeat blindly), and as long as the function may run.
    client = boto3.client("lambda", config=Config(read_timeout=960, retries={"max_attempts": 1, "mode": "standard"}))
    reply = client.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    answer = json.loads(reply["Payload"].read() or b"null")
    if reply.get("FunctionError"):
        message = answer.get("errorMessage", answer) if isinstance(answer, dict) else answer
        kind = answer.get("errorType", "error") if isinstance(answer, dict) else "error"
        raise FunctionFailedError(f"{name} failed: {kind}: {message}")
    return answer
