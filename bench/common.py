"""What every benchmark shares: where the repo is, a timestamped log line, medians and percentiles, and how many
CPUs this process really gets right now (the machines are small and shared), and the local stack."""

from __future__ import annotations

import contextlib
import hashlib
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.stack_process import RunningStack

ROOT: Final = Path(__file__).resolve().parents[1]
MEASURED_VCPUS: Final = os.cpu_count() or 1


def log(message: str, name: str = "bench") -> None:
    print(f"[{name} {time.strftime('%H:%M:%S')}] {message}", flush=True)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def parallelism(seconds: float = 0.6) -> float:
    """How many CPUs this process actually gets right now: two threads of GIL-free hashing vs one."""
    block = bytes(1 << 20)

    def spin(deadline: float) -> int:
        rounds = 0
        while time.perf_counter() < deadline:
            hashlib.sha256(block).digest()
            rounds += 1
        return rounds

    one = spin(time.perf_counter() + seconds / 2)
    with ThreadPoolExecutor(max_workers=MEASURED_VCPUS) as pool:
        deadline = time.perf_counter() + seconds / 2
        many = sum(pool.map(spin, [deadline] * MEASURED_VCPUS))
    return round(many / max(one, 1), 2)


@contextlib.contextmanager
def local_stack(name: str, moto_port: int = 0) -> Iterator[RunningStack]:
    """The local stack the tests use (:mod:`tests.stack_process`: ``refund-sorter local`` in a child process, so
    moto's request handling never shares our GIL), with this process's boto3 pointed at its moto server; its
    output in ``out/bench/NAME-local-stack.log``. Stopped on the way out, whatever happens."""
    from tests.stack_process import running_stack, use_stack

    with running_stack(ROOT / "out" / "bench" / f"{name}-local-stack.log", moto_port=moto_port) as stack:
        use_stack(stack)
        log(f"local stack: moto at {stack.moto_url}", name)
        yield stack
