"""``make fuzz-api``: schemathesis against the local API's own OpenAPI document.

Every answer must be one the document promises (status, content type, body schema) and none may be a 5xx.
Before schemathesis, the explicit examples no generator would find (:data:`EXPLICIT_EXAMPLES`: bodies Python's
JSON reader cannot hold, …) are sent and must be refused with their documented status and error body.
The ports are ``REFUND_SORTER_MOTO_PORT`` / ``REFUND_SORTER_API_PORT`` when set, else free ones.

The stack runs in this process with URL fetching locked to what cannot leave the machine: private URLs
are refused (the production setting), and name resolution answers only for loopback, so a generated URL
such as ``http://example.org/x.jpg`` fails to resolve instead of sending a DNS query or a connection out.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from refund_sorter_cli.local_stack import LocalStack

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PHOTO = ROOT / "events" / "return-1234.jpg"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
_real_getaddrinfo = socket.getaddrinfo


def _loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else str(host)
    if name not in LOOPBACK_NAMES:
        raise socket.gaierror(socket.EAI_NONAME, f"fuzz run: refusing to resolve {name!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


# What "conforms" means: the response checks, plus the API refusing what its own document says is invalid.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)


@dataclass(frozen=True)
class Example:
    """One hand-written request and the statuses and error codes that may answer it."""

    name: str
    method: str
    path: str
    body: bytes
    expected: frozenset[tuple[int, str]]
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)


_UNREADABLE = frozenset({(400, "invalid_json"), (422, "invalid_request")})
EXPLICIT_EXAMPLES = (
    # RecursionError while reading: was 500 internal_error (issue 20)
    Example("nested 1,000 deep", "POST", "/predictions", b'{"url": ' + b"[" * 1000 + b"]" * 1000 + b"}", _UNREADABLE),
    # ValueError (int max str digits) while reading: was 500 internal_error (issue 20)
    Example(
        "revision of 5,000 digits",
        "PATCH",
        "/predictions/0123456789abcdef0123456789abcdef",
        b'{"category": "shoes", "revision": ' + b"9" * 5000 + b"}",
        _UNREADABLE,
    ),
)


def send_explicit_examples(stack: LocalStack) -> list[str]:
    """Each of :data:`EXPLICIT_EXAMPLES` against the stack; the failures, one line each."""
    failures = []
    for example in EXPLICIT_EXAMPLES:
        request = urllib.request.Request(
            f"{stack.api_url}{example.path}", data=example.body, method=example.method, headers=dict(example.headers)
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                status, body = reply.status, reply.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = f"(not an error body: {body[:80]!r})"
        verdict = "ok" if (status, code) in example.expected else "FAILED"
        print(f"explicit example {example.name!r}: {status} {code} {verdict}", flush=True)
        if verdict != "ok":
            failures.append(f"{example.name}: {status} {code}, expected one of {sorted(example.expected)}")
    return failures


def seed(stack: LocalStack) -> dict[str, list[str]]:
    """Real data for the run: a stored photo for the documented ``s3_key`` example and one Result.

    Returns the values schemathesis mixes into what it generates (half the time), so the checks also see
    the success answers of GET/PATCH /predictions/{id}, a day that has Results and its CSV, not only 404s.
    """
    from refund_sorter.config import get_settings
    from refund_sorter.storage.clients import s3_client
    from refund_sorter_cli.samples import photo_bytes

    example_key = "incoming/return-1234.jpg"  # PredictionRequest's s3_key example
    s3_client().put_object(Bucket=get_settings().bucket, Key=example_key, Body=EXAMPLE_PHOTO.read_bytes())
    photo = base64.b64encode(photo_bytes("skimage/coffee")).decode()
    created = _call(stack, "POST", "/predictions", {"image_base64": photo})
    departments = _call(stack, "GET", "/departments")
    return {
        "ids": [created["id"]],
        "days": [created["timestamp"][:10]],
        "departments": [department["id"] for department in departments],
    }


def _call(stack: LocalStack, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{stack.api_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.load(reply)


def config_file(values: dict[str, list[str]], folder: Path) -> Path:
    """A schemathesis.toml that binds path ids, days and departments to the seeded values half the time."""
    bindings = {
        "path.id": "ids",
        "path.date": "days",
        "query.date": "days",
        "body.category": "departments",
    }
    lines = [f"[dictionaries.{name}]\nvalues = {json.dumps(entries)}\n" for name, entries in values.items()]
    lines.append("[parameters]")
    lines += [f'"{key}" = {{ dictionary = "{name}", probability = 0.5 }}' for key, name in bindings.items()]
    path = folder / "schemathesis.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main() -> int:
    socket.getaddrinfo = _loopback_only
    os.environ["REFUND_SORTER_ALLOW_PRIVATE_URLS"] = "false"  # wins over the local stack's default
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")  # a log line per prediction buries the report
    warnings.filterwarnings("ignore", "No application metrics to publish")

    from refund_sorter_cli.local_stack import LocalStack
    from refund_sorter_cli.template import Template

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a log line per fuzzed request buries the report

    stack = LocalStack(Template(), moto_port=0, api_port=0).start()  # 0: ports the OS picks
    report = ROOT / "out" / "fuzz-api"
    report.mkdir(parents=True, exist_ok=True)
    try:
        failures = send_explicit_examples(stack)
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            str(config_file(seed(stack), report)),
            "run",
            f"{stack.api_url}/swagger?format=json",
            "--url",
            stack.api_url,
            "--checks",
            ",".join(CHECKS),
            "--phases",
            # stateful is left out: its random POST bodies are almost never a photo, so it reaches no links
            "examples,coverage,fuzzing",
            "--max-examples",
            os.environ.get("FUZZ_MAX_EXAMPLES", "100"),
            "--seed",
            "20261125",
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--suppress-health-check",
            "too_slow,filter_too_much",
            "--report",
            "junit",
            "--report-dir",
            str(report),
        ]
        returncode = subprocess.run(command, check=False, timeout=900).returncode
        for failure in failures:
            print(f"explicit example failed: {failure}", file=sys.stderr)
        return returncode or (1 if failures else 0)
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
