"""``make fuzz-api``: schemathesis against the local API's own OpenAPI document.

Every answer must be one the document promises (status, content type, body schema) and none may be a 5xx.
Before schemathesis, the explicit examples no generator would find (:data:`EXPLICIT_EXAMPLES`: bodies Python's
JSON reader cannot hold, …) are sent and must be refused with their documented status and error body.
Then schemathesis runs all four phases: examples, coverage, fuzzing, and stateful, which follows the document's
links from a created Result (get it, its photo, decide it, undo the decision, decide again).
The ports are ``REFUND_SORTER_MOTO_PORT`` / ``REFUND_SORTER_API_PORT`` when set, else free ones.

The stack runs in this process with URL fetching locked to what cannot leave the machine: private URLs
are refused (the production setting), and name resolution answers only for loopback, so a generated URL
such as ``http://example.org/x.jpg`` fails to resolve instead of sending a DNS query or a connection out.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import socket
import subprocess
import sys
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
_NOT_JSON = frozenset({(415, "unsupported_media_type")})
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
    # a browser's cross-origin POST of a Blob carries no Content-Type and is sent without a preflight
    Example("no Content-Type", "POST", "/predictions", b'{"s3_key": "incoming/return-1234.jpg"}', _NOT_JSON, ()),
    Example("text/plain", "POST", "/predictions", b"{}", _NOT_JSON, (("Content-Type", "text/plain"),)),
    # DNS rebinding: another site's name for 127.0.0.1
    Example(
        "rebound Host",
        "POST",
        "/predictions",
        b"{}",
        frozenset({(421, "unknown_host")}),
        (("Content-Type", "application/json"), ("Host", "rebound.example")),
    ),
    # over the 6 MB of a Lambda invocation, under API Gateway's 10 MB: API Gateway's 413
    Example(
        "7 MB inline photo",
        "POST",
        "/predictions",
        b'{"image_base64": "' + b"A" * 7_000_000 + b'"}',
        frozenset({(413, "file_too_large")}),
    ),
)


def send_explicit_examples(stack: LocalStack) -> list[str]:
    """Each of :data:`EXPLICIT_EXAMPLES` against the stack; the failures, one line each."""
    from refund_sorter_cli.net import HOST

    failures = []
    for example in EXPLICIT_EXAMPLES:
        # http.client sends exactly these headers (urllib would add a form Content-Type to a body without one)
        connection = http.client.HTTPConnection(HOST, stack.api_port, timeout=60)
        try:
            connection.request(example.method, example.path, body=example.body, headers=dict(example.headers))
            reply = connection.getresponse()
            status, body = reply.status, reply.read()
        finally:
            connection.close()
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = f"(not an error body: {body[:80]!r})"
        verdict = "ok" if (status, code) in example.expected else "FAILED"
        print(f"explicit example {example.name!r}: {status} {code} {verdict}", flush=True)
        if verdict != "ok":
            failures.append(f"{example.name}: {status} {code}, expected one of {sorted(example.expected)}")
    return failures


# Photos (sample photos that ship in wheels) the stateful phase creates Results from, by s3_key.
STATEFUL_PHOTOS = ("skimage/chelsea", "skimage/astronaut", "sklearn/china", "sklearn/flower")


def seed(stack: LocalStack) -> dict[str, list[str]]:
    """Real data for the run: a stored photo for the documented ``s3_key`` example and one Result.

    Returns the values schemathesis mixes into what it generates (half the time), so the checks also see
    the success answers of GET/PATCH /predictions/{id}, a day that has Results and its CSV, not only 404s, and
    the stateful phase's POSTs name stored photos: it then follows the links from their Results (get, look at
    the photo, decide, undo, decide again).
    """
    from refund_sorter.api.page import ASSETS
    from refund_sorter.config import get_settings
    from refund_sorter.storage.clients import s3_client
    from refund_sorter_cli.samples import PHOTOS, photo_bytes

    example_key = "incoming/return-1234.jpg"  # PredictionRequest's s3_key example
    s3_client().put_object(Bucket=get_settings().bucket, Key=example_key, Body=EXAMPLE_PHOTO.read_bytes())
    photo = base64.b64encode(photo_bytes("skimage/coffee")).decode()
    created = _call(stack, "POST", "/predictions", {"image_base64": photo})
    departments = _call(stack, "GET", "/departments")
    # Photos stored under their own keys: a POST naming one creates a Result (201) the first time and finds it
    # (200) after, and the stateful phase follows those answers' links (get, decide, undo).
    keys = []
    for name in STATEFUL_PHOTOS:
        key = f"incoming/fuzz/{name.replace('/', '-')}{Path(PHOTOS[name][1]).suffix}"
        s3_client().put_object(Bucket=get_settings().bucket, Key=key, Body=photo_bytes(name))
        keys.append(key)
    return {
        "ids": [created["id"]],
        "days": [created["timestamp"][:10]],
        "departments": [department["id"] for department in departments],
        "keys": [example_key, *keys],
        "assets": sorted(ASSETS),
    }


def _call(stack: LocalStack, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{stack.api_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.load(reply)


def config_file(values: dict[str, list[str]], folder: Path) -> Path:
    """A schemathesis.toml that binds path ids, days, departments, stored photos' keys and the page's files to the
    seeded values half the time."""
    bindings = {
        "path.id": "ids",
        "path.date": "days",
        "query.date": "days",
        "body.category": "departments",
        "body.s3_key": "keys",
        "path.asset": "assets",
    }
    lines = [f"[dictionaries.{name}]\nvalues = {json.dumps(entries)}\n" for name, entries in values.items()]
    # Scenarios long enough for the review loop (create, get, decide, undo, decide again) and then some
    lines.append("[phases.stateful]\nmax-steps = 12\n")
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
            os.environ.get("FUZZ_PHASES", "examples,coverage,fuzzing,stateful"),
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
