"""``make fuzz-api``: schemathesis against the local API's own OpenAPI document. Zero 5xx allowed.

The stack runs in this process with URL fetching locked to what cannot leave the machine: private URLs
are refused (the production setting), and name resolution answers only for loopback, so a generated URL
such as ``http://example.org/x.jpg`` fails to resolve instead of sending a DNS query or a connection out.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
_real_getaddrinfo = socket.getaddrinfo


def _loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else str(host)
    if name not in LOOPBACK_NAMES:
        raise socket.gaierror(socket.EAI_NONAME, f"fuzz run: refusing to resolve {name!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


def main() -> int:
    socket.getaddrinfo = _loopback_only
    os.environ["REFUND_SORTER_ALLOW_PRIVATE_URLS"] = "false"  # wins over the local stack's default

    from refund_sorter_cli.local_stack import LocalStack
    from refund_sorter_cli.template import Template

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a log line per fuzzed request buries the report

    stack = LocalStack(Template(), moto_port=0, api_port=0).start()  # 0: ports the OS picks
    report = ROOT / "out" / "fuzz-api"
    report.mkdir(parents=True, exist_ok=True)
    try:
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{stack.api_url}/swagger?format=json",
            "--url",
            stack.api_url,
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
            "--phases",
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
        return subprocess.run(command, check=False, timeout=900).returncode
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
