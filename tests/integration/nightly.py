"""Running the nightly state machine in tests: the template's definition on the local runner, workers in their
own processes (:mod:`refund_sorter_cli.stepfunctions`), retries without waiting (their intervals are the
template's business; what a test checks is that they happen)."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from refund_sorter_cli.stepfunctions import Event, Execution, LocalLambdas, LocalStateMachine

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.integration.conftest import LocalAws

EVENTS = Path(__file__).parents[2] / "events"


def schedule_event() -> dict[str, Any]:
    """What the EventBridge schedule passes as the execution's input (events/schedule.json)."""
    document: dict[str, Any] = json.loads((EVENTS / "schedule.json").read_text(encoding="utf-8"))
    return document


def run_night(
    aws: LocalAws, lambdas: LocalLambdas, *, workers: int = 2, on_event: Callable[[Event], None] | None = None
) -> Execution:
    machine = LocalStateMachine(
        aws.template, lambdas, workers=workers, s3=aws.s3, sleep=lambda _: None, on_event=on_event
    )
    return machine.start(schedule_event())


def summary_of(execution: Execution) -> dict[str, Any]:
    summary: dict[str, Any] = execution.output["export"]["summary"]
    return summary


def small_jpeg(seed: int, marker: bytes = b"") -> bytes:
    """A small, distinct JPEG (a colour field); ``marker`` rides after the image's end, where decoders ignore it."""
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256)).save(buffer, "JPEG")
    return buffer.getvalue() + marker


def results_per_photo(aws: LocalAws) -> Counter[str]:
    """Results per photo, a photo named by its path under the prefix it sits in (``incoming/a.jpg`` and
    ``processed/a.jpg`` are one photo): each Result names where its photo is kept now (``photo_key``)."""
    return Counter(item["photo_key"]["S"].split("/", 1)[1] for item in aws.items())


def assert_each_photo_once(aws: LocalAws, keys: list[str]) -> None:
    """Exactly one Result per photo, and every photo in processed/ or failed/ (none left in incoming/)."""
    per_photo = results_per_photo(aws)
    assert sorted(per_photo) == sorted(key.split("/", 1)[1] for key in keys)
    assert set(per_photo.values()) == {1}
    assert aws.keys("incoming/") == []
    filed = {k.split("/", 1)[1] for k in aws.keys("processed/") + aws.keys("failed/")}
    assert filed == {key.split("/", 1)[1] for key in keys}
