"""``refund-sorter batch``: the nightly state machine on the local stack, with a progress bar and a summary.

The run itself is :class:`refund_sorter_cli.stepfunctions.LocalStateMachine` executing the template's
definition; this module only shows it to a person.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import sys
import tempfile
import threading
import uuid
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refund_sorter.jobs.plan import LEASE
from refund_sorter_cli.display import plural

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from rich.progress import Progress, TaskID

    from refund_sorter.results import Result
    from refund_sorter.storage.jobs_table import JobsTable
    from refund_sorter_cli.stepfunctions import Event
    from refund_sorter_cli.template import Template

# Up to this many photos, the run's Results are listed one per line after the summary (the demo's night).
LIST_RESULTS_UP_TO = 40
# Set in the environment of execution environments started after Ctrl-C: they start out stopping.
STOPPING_VARIABLE = "REFUND_SORTER_CLI_STOPPING"
# A local run's execution name, which is the lease's holder: the process that runs it can be looked for.
_LOCAL_RUN = re.compile(r"^local-\d{8}T\d{6}-p(?P<pid>\d+)-[0-9a-f]{6}$")


class NightOutcome(Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LEASE_HELD = "lease held"  # another run holds the lease: nothing done
    INTERRUPTED = "interrupted"  # Ctrl-C: stopped after the photos in hand, the lease given back


def run_night_locally(
    *,
    workers: int | None = None,
    show_results: Callable[[Sequence[Result]], None] | None = None,
    break_lease: bool = False,
) -> NightOutcome:
    """Run the nightly state machine now on the local stack (the caller has checked it answers, and set the plan
    function's environment in this process).

    Ctrl-C (SIGINT) is answered at once: every worker finishes the photos it has in hand and takes no more, as
    when a Lambda invocation's time runs out (the chunks report the rest as left for the next run); the export
    step still runs, so the day's CSV and the summary are written and the lease is given back.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from refund_sorter.config import get_settings
    from refund_sorter.storage.jobs_table import JobsTable
    from refund_sorter_cli.stepfunctions import LocalLambdas, LocalStateMachine, cpu_share
    from refund_sorter_cli.template import Template

    template = Template()
    jobs = JobsTable(get_settings().jobs_table)
    _free_the_lease(jobs, break_lease=break_lease)
    name = f"local-{datetime.now(UTC):%Y%m%dT%H%M%S}-p{os.getpid()}-{uuid.uuid4().hex[:6]}"
    log_dir = Path(tempfile.gettempdir()) / "refund-sorter-batch" / name
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    started = datetime.now(UTC)
    workers = workers or os.cpu_count() or 1
    # What the shell says about the lease reaches the plan step however the environments get theirs.
    passed_on = {k: os.environ[k] for k in ("REFUND_SORTER_RUN_LEASE_SECONDS",) if k in os.environ}
    try:
        with Progress(*columns, console=Console()) as progress:
            display = _ProgressDisplay(progress, progress.add_task("planning", total=None))
            environment = cpu_share(workers) | passed_on
            with LocalLambdas(
                template, log_dir=log_dir, environment=environment, initializer=stop_when_interrupted
            ) as lambdas:
                interrupt = _Interrupt(lambdas.environment, progress.console.print, display)
                machine = LocalStateMachine(template, lambdas, workers=workers, on_event=display, sleep=interrupt.sleep)
                with interrupt.installed():
                    execution = machine.start({"source": "refund-sorter.cli"}, name=name)
    finally:
        jobs.release_lease(LEASE, name)  # a no-op when the export step gave it back, as it does
    output = execution.output or {}
    if output.get("plan", {}).get("skipped"):
        _say_lease_held(jobs, output["plan"].get("lease_holder", "?"))
        return NightOutcome.LEASE_HELD
    summary = output.get("export", {}).get("summary", {})
    if show_results is not None and 0 < summary.get("photos", 0) <= LIST_RESULTS_UP_TO:
        show_results(_results_since(template, summary["day"], started))
    print(f"run {execution.name}: {execution.status}" + (f" ({execution.error})" if execution.error else ""))
    if summary:
        print_summary(summary)
    print(f"function logs: {log_dir}")
    if interrupt.requested.is_set():
        waiting = summary.get("waiting", "?") if summary else "the unfinished"
        print(f"stopped (Ctrl-C): {waiting} photos left in incoming/ for the next run; the run's lease is given back")
        return NightOutcome.INTERRUPTED
    return NightOutcome.SUCCEEDED if execution.status == "SUCCEEDED" else NightOutcome.FAILED


def _free_the_lease(jobs: JobsTable, *, break_lease: bool) -> None:
    """Before a run: take the lease back from a local run whose process has gone, or (``--break-lease``) from
    whoever holds it. A holder that may still be running keeps it: the plan step then ends the run at once."""
    lease = jobs.lease(LEASE)
    if lease is None:
        return
    gone = _holder_process_gone(lease.holder)
    if (break_lease or gone) and jobs.release_lease(LEASE, lease.holder):
        why = f"its process ({gone}) has gone" if gone else "--break-lease"
        print(f"took over the nightly lease from {lease.holder}: {why}")


def _holder_process_gone(holder: str) -> str:
    """``pid N`` when ``holder`` is a local run (``batch`` on this machine) whose process no longer exists."""
    from refund_sorter_cli.local_stack import endpoint_url
    from refund_sorter_cli.net import is_loopback_url

    match = _LOCAL_RUN.match(holder)
    if match is None or not is_loopback_url(endpoint_url()):  # another machine's run: only its expiry tells
        return ""
    pid = int(match["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"pid {pid}"
    except PermissionError:  # it exists, as another user's
        return ""
    return ""


def _say_lease_held(jobs: JobsTable, holder: str) -> None:
    lease = jobs.lease(LEASE)
    until = ""
    if lease is not None and lease.holder == holder:
        until = f" until {datetime.fromtimestamp(lease.expires_at, UTC):%Y-%m-%d %H:%M} UTC"
    print(
        f"nothing done: another nightly run ({holder}) holds the lease{until}. If that run is gone, "
        "`refund-sorter batch --break-lease` takes the lease from it",
        file=sys.stderr,
    )


class _Interrupt:
    """Ctrl-C during a run: say so at once, and have every execution environment stop after the photos in hand
    (:func:`stop_when_interrupted`); a second Ctrl-C stops at once (KeyboardInterrupt)."""

    def __init__(self, environment: dict[str, str], say: Callable[[str], None], display: _ProgressDisplay) -> None:
        self.environment, self.say, self.display = environment, say, display
        self.requested = threading.Event()
        self.abandoned = threading.Event()

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _handle(self, _signum: int, _frame: object) -> None:
        if self.requested.is_set():  # the second: the workers go now, their photos stay for the next run
            self.abandoned.set()
            for child in multiprocessing.active_children():
                child.kill()
            raise KeyboardInterrupt
        self.requested.set()
        self.display.stopping = True
        self.say("stopping after the photos in hand… (Ctrl-C again stops at once, leaving them for the next run)")
        self.environment[STOPPING_VARIABLE] = "1"  # environments started from now on start out stopping
        for child in multiprocessing.active_children():  # a terminal sends them SIGINT too; a `kill -INT` does not
            with suppress(ProcessLookupError):
                os.kill(child.pid or 0, signal.SIGINT)

    def sleep(self, seconds: float) -> None:
        """Retries wait as the definition says, unless the run is stopping; once abandoned, nothing is retried
        (a retry would start a new execution environment while the run is being torn down)."""
        self.requested.wait(seconds)
        if self.abandoned.is_set():
            raise KeyboardInterrupt


def stop_when_interrupted() -> None:
    """The initializer of every local execution environment of ``batch``: SIGINT makes the function's remaining
    time zero, so a worker finishes the photos in hand and takes no more, exactly as when an invocation's time
    runs out in Lambda (its chunk reports the rest as ``left``: the next run takes them)."""
    from refund_sorter_cli.local_stack import LambdaContext

    stopping = threading.Event()
    if os.environ.get(STOPPING_VARIABLE):
        stopping.set()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    remaining = LambdaContext.get_remaining_time_in_millis

    def remaining_unless_stopping(context: LambdaContext) -> int:
        return 0 if stopping.is_set() else remaining(context)

    LambdaContext.get_remaining_time_in_millis = remaining_unless_stopping  # type: ignore[method-assign,assignment]


class _ProgressDisplay:
    """Turns the execution's events into the progress bar (called from the map's threads; rich is thread-safe)."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress, self.task, self.photos = progress, task, 0
        self.stopping = False  # after Ctrl-C: no more lines per retried chunk, the summary says what is left

    def __call__(self, event: Event) -> None:
        if event.kind == "MapRunStarted":
            description = f"chunks ({event.detail['concurrency']} workers)"
            self.progress.update(self.task, total=event.detail["items"], completed=0, description=description)
        elif event.kind in {"ChildSucceeded", "ChildFailed"}:
            self.photos += int(event.detail["input"]["chunk"]["photos"])
            description = f"chunks, {plural(self.photos, 'photo')}" + (", stopping" if self.stopping else "")
            self.progress.update(self.task, advance=1, description=description)
        if event.kind in {"ChildTaskRetried", "ChildFailed"} and not self.stopping:
            chunk = event.detail["input"]["chunk"]["index"]
            self.progress.console.print(f"chunk {chunk}: {event.detail['error']} ({event.kind})")


def print_summary(summary: dict[str, Any]) -> None:
    counts = summary["counts"]
    statuses = ("classified", "needs_review", "failed")
    line = ", ".join(f"{name.replace('_', ' ')} {counts.get(name, 0)}" for name in statuses)
    others = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v and k not in statuses)
    print(
        f"{plural(summary['photos'], 'photo')} in {plural(summary['chunks'], 'chunk')}: {line}"
        + (f"; {others}" if others else "")
    )
    if summary["departments"]:
        print("departments: " + ", ".join(f"{k} {v}" for k, v in summary["departments"].items()))
    for failure in summary["failed_chunks"]:
        waiting = f"its {plural(failure['photos'], 'photo')} wait for the next night"
        print(f"chunk {failure['chunk']} failed, {waiting}: {failure['error']}")
    print(
        f"export: {summary['export_key']} ({plural(summary['export_rows'], 'row')}); summary: {summary['summary_key']}"
    )


def _results_since(template: Template, day: str, started: datetime) -> list[Result]:
    from refund_sorter.config import get_settings
    from refund_sorter.storage.dynamodb import DynamoResultStore

    table = get_settings().table or template.physical_name("ResultsTable")
    return [r for r in DynamoResultStore(table).by_day(day) if r.timestamp >= started]
