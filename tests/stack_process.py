"""``refund-sorter local`` in a child process, started as a user starts it: the one way the tests and the
benchmarks get a moto server (and the local API in front of it).

The child listens on ports the OS picks (``--moto-port 0 --api-port 0``, unless told others) and prints its
banner once both servers listen; :class:`RunningStack` reads the ``export NAME=value`` lines of it. Being a
process of its own, the stack's request handling never shares the caller's GIL (what the benchmarks need) and
its environment is the clean one a user's shell would give it (what the tests need).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.cli import CLI, clean_environment

if TYPE_CHECKING:
    from collections.abc import Iterator, MutableMapping
    from pathlib import Path

    from refund_sorter_cli.template import Template

# Long enough for a cold start on a busy 2-CPU machine; only ever reached when the stack is broken.
STACK_START_LIMIT = 180.0
STACK_STOP_LIMIT = 60.0


class StackError(RuntimeError):
    """The stack died or printed no banner; the message carries what it printed."""


@dataclass(frozen=True)
class RunningStack:
    """``refund-sorter local`` in a child process, and what it printed for other shells to use."""

    process: subprocess.Popen[bytes]
    banner: str
    log: Path

    @property
    def environment(self) -> dict[str, str]:
        """The ``export NAME=value`` lines of the banner."""
        exports = (line.removeprefix("export ") for line in self.banner.splitlines() if line.startswith("export "))
        return dict(line.split("=", 1) for line in exports)

    @property
    def aws_environment(self) -> dict[str, str]:
        """What points boto3 at the stack's moto server (endpoint, throwaway credentials, region)."""
        return {key: value for key, value in self.environment.items() if key.startswith("AWS_")}

    @property
    def moto_url(self) -> str:
        return self.environment["AWS_ENDPOINT_URL"]

    @property
    def api_url(self) -> str:
        return self.environment["REFUND_SORTER_API_URL"]

    def reset(self, template: Template) -> dict[str, str]:
        """Empty moto, then the template's bucket and tables anew (as the stack made them when it started);
        returns logical id → physical name."""
        from refund_sorter_cli.local_stack import create_resources

        reset = urllib.request.Request(f"{self.moto_url}/moto-api/reset", method="POST")
        urllib.request.urlopen(reset, timeout=60).close()
        return create_resources(template)


def wait_for_banner(log: Path, process: subprocess.Popen[bytes], limit: float = STACK_START_LIMIT) -> str:
    """Wait for the stack to print its banner (it does once both servers listen); :class:`StackError` if it dies
    first or prints none within ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        text = log.read_text(encoding="utf-8", errors="replace")
        if "export REFUND_SORTER_API_URL=" in text:
            return text
        if process.poll() is not None:
            raise StackError(f"refund-sorter local exited with {process.returncode}:\n{text}")
        if time.monotonic() > deadline:
            raise StackError(f"refund-sorter local printed no banner within {limit:g} s:\n{text}")
        time.sleep(0.1)


@contextlib.contextmanager
def running_stack(log: Path, *, moto_port: int = 0, api_port: int = 0) -> Iterator[RunningStack]:
    """The stack for the ``with`` block, its output in ``log``; stopped (SIGTERM, then killed) and reaped on the
    way out, whatever happens."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(CLI), "local", "--moto-port", str(moto_port), "--api-port", str(api_port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_environment(),
        )
    try:
        yield RunningStack(process, wait_for_banner(log, process), log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=STACK_STOP_LIMIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def use_stack(stack: RunningStack, environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Point this process's boto3 at the stack's moto server (never at real AWS); returns the variables set.

    Set before any client is made: with ``AWS_ENDPOINT_URL`` set, boto3 never reaches for real AWS.
    """
    from refund_sorter.storage.clients import reset_clients

    variables = stack.aws_environment
    environ.update(variables)
    environ.pop("AWS_PROFILE", None)
    reset_clients()
    return variables
