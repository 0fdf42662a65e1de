"""``refund-sorter batch``: the nightly state machine on the local stack, with a progress bar and a summary.

The run itself is :class:`refund_sorter_cli.stepfunctions.LocalStateMachine` executing the template's
definition; this module only shows it to a person.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from rich.progress import Progress, TaskID

    from refund_sorter.results import Result
    from refund_sorter_cli.stepfunctions import Event
    from refund_sorter_cli.template import Template

# Up to this many photos, the run's Results are listed one per line after the summary (the demo's night).
LIST_RESULTS_UP_TO = 40


def run_night_locally(
    *, workers: int | None = None, show_results: Callable[[Sequence[Result]], None] | None = None
) -> int:
    """Run the nightly state machine now on the local stack (the caller has checked it answers); 0 if the
    execution succeeded, else 1."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from refund_sorter_cli.stepfunctions import LocalLambdas, LocalStateMachine, cpu_share
    from refund_sorter_cli.template import Template

    template = Template()
    name = f"local-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    log_dir = Path(tempfile.gettempdir()) / "refund-sorter-batch" / name
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    started = datetime.now(UTC)
    workers = workers or os.cpu_count() or 1
    with Progress(*columns, console=Console()) as progress:
        display = _ProgressDisplay(progress, progress.add_task("planning", total=None))
        with LocalLambdas(template, log_dir=log_dir, environment=cpu_share(workers)) as lambdas:
            machine = LocalStateMachine(template, lambdas, workers=workers, on_event=display)
            execution = machine.start({"source": "refund-sorter.cli"}, name=name)
    output = execution.output or {}
    if output.get("plan", {}).get("skipped"):
        print(f"another nightly run ({output['plan'].get('lease_holder')}) is still going: nothing done")
        return 0
    summary = output.get("export", {}).get("summary", {})
    if show_results is not None and 0 < summary.get("photos", 0) <= LIST_RESULTS_UP_TO:
        show_results(_results_since(template, summary["day"], started))
    print(f"run {execution.name}: {execution.status}" + (f" ({execution.error})" if execution.error else ""))
    if summary:
        print_summary(summary)
    print(f"function logs: {log_dir}")
    return 0 if execution.status == "SUCCEEDED" else 1


class _ProgressDisplay:
    """Turns the execution's events into the progress bar (called from the map's threads; rich is thread-safe)."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress, self.task, self.photos = progress, task, 0

    def __call__(self, event: Event) -> None:
        if event.kind == "MapRunStarted":
            description = f"chunks ({event.detail['concurrency']} workers)"
            self.progress.update(self.task, total=event.detail["items"], completed=0, description=description)
        elif event.kind in {"ChildSucceeded", "ChildFailed"}:
            self.photos += int(event.detail["input"]["chunk"]["photos"])
            self.progress.update(self.task, advance=1, description=f"chunks, {self.photos} photos")
        if event.kind in {"ChildTaskRetried", "ChildFailed"}:
            chunk = event.detail["input"]["chunk"]["index"]
            self.progress.console.print(f"chunk {chunk}: {event.detail['error']} ({event.kind})")


def print_summary(summary: dict[str, Any]) -> None:
    counts = summary["counts"]
    statuses = ("classified", "needs_review", "failed")
    line = ", ".join(f"{name.replace('_', ' ')} {counts.get(name, 0)}" for name in statuses)
    others = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v and k not in statuses)
    print(f"{summary['photos']} photos in {summary['chunks']} chunks: {line}" + (f"; {others}" if others else ""))
    if summary["departments"]:
        print("departments: " + ", ".join(f"{k} {v}" for k, v in summary["departments"].items()))
    for failure in summary["failed_chunks"]:
        waiting = f"its {failure['photos']} photos wait for the next night"
        print(f"chunk {failure['chunk']} failed, {waiting}: {failure['error']}")
    print(f"export: {summary['export_key']} ({summary['export_rows']} rows); summary: {summary['summary_key']}")


def _results_since(template: Template, day: str, started: datetime) -> list[Result]:
    from refund_sorter.config import get_settings
    from refund_sorter.storage.dynamodb import DynamoResultStore

    table = get_settings().table or template.physical_name("ResultsTable")
    return [r for r in DynamoResultStore(table).by_day(day) if r.timestamp >= started]
