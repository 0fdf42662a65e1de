"""What the CLI shows people: the results table, the one-line summary, progress bars.

Tables go to standard output, progress bars to standard error (so ``--json`` output and redirected tables
stay clean). When standard output is not a terminal (``make demo``, a pipe, a file) rich would assume 80
columns and cut long names short; the table is then given the room it needs, and every column folds
rather than truncates.
"""

from __future__ import annotations

import os
from collections import Counter
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from refund_sorter.results import ReviewReason, Status

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from refund_sorter.results import Result

# More inputs than this and a progress bar shows how far along a command is (fewer finish in a blink).
PROGRESS_FROM: Final = 20
# Width for a table that is not going to a terminal: wide enough for long photo names and error messages.
UNBOUNDED_WIDTH: Final = 240


def stdout_console() -> Console:
    """A console for tables: the terminal's width, or room enough when writing to a pipe or file.

    ``COLUMNS``, when set, wins (rich reads it), so a caller can still ask for a narrow table.
    """
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=UNBOUNDED_WIDTH)
    return console


def photo_name(result: Result) -> str:
    """The photo's file name, from a path, ``s3://`` key or URL."""
    return PurePosixPath(result.source.rstrip("/")).name or result.source


def why(result: Result, threshold: float) -> str:
    """Why a Result is not simply ``classified``: the error, the review reason, or who reviewed it.

    ``threshold`` is the taxonomy's auto-sort threshold; a Result a custom head made was held to that head's
    own, which is named then."""
    if result.error is not None:
        return f"{result.error.code}: {result.error.message}"
    if result.status is Status.NEEDS_REVIEW:
        if result.review_reason is ReviewReason.NOT_A_PRODUCT:
            return f"not a product (looks like {result.label})" if result.label else "not a product"
        if result.review_reason is ReviewReason.LOW_CONFIDENCE and result.confidence is not None:
            return _low_confidence(result.confidence, result.model_version, threshold)
        return result.review_reason.value.replace("_", " ") if result.review_reason else "needs review"
    if result.status is Status.REVIEWED and result.review is not None:
        return f"reviewed by {result.review.by}: {result.review.department}"
    return ""


def _low_confidence(confidence: float, model_version: str, threshold: float) -> str:
    from refund_sorter.heads.model import made_by_a_head

    if made_by_a_head(model_version):  # a head holds its Results to a threshold of its own
        return f"low confidence ({confidence:.2f}, below the head's auto-sort threshold)"
    shown, limit = _distinct(confidence, threshold)
    return f"low confidence ({shown} < {limit})"


def _distinct(value: float, limit: float, *, most: int = 4) -> tuple[str, str]:
    """``value`` and ``limit`` with as few decimals (2 to ``most``) as it takes for them to read as different:
    0.599 below 0.6 reads ``0.599 < 0.600``, never ``0.60 < 0.60``."""
    for decimals in range(2, most + 1):
        shown, bound = f"{value:.{decimals}f}", f"{limit:.{decimals}f}"
        if shown != bound:
            return shown, bound
    return f"{value:.{most}g}" if value else "0", f"{limit:.{most}f}"


def results_table(
    results: Sequence[Result], threshold: float, name_of: Callable[[Result], str | None] | None = None
) -> Table:
    """One row per Result; ``name_of`` names a photo (``None``: its file name). Status and confidence never wrap
    (``needs_review`` is one word); the other columns fold when the terminal is narrow."""
    table = Table()
    whole = {"status": len("needs_review"), "conf.": len("0.00")}
    for header in ("photo", "status", "department", "conf.", "top ImageNet label", "why"):
        table.add_column(header, overflow="fold", no_wrap=header in whole, min_width=whole.get(header))
    for r in results:
        table.add_row(
            (name_of(r) if name_of is not None else None) or photo_name(r),
            r.status.value,
            r.department or r.prediction or "",
            f"{r.confidence:.2f}" if r.confidence is not None else "",
            f"{r.label} ({r.label_confidence:.2f})" if r.label and r.label_confidence is not None else "",
            why(r, threshold),
        )
    return table


def print_results(
    results: Sequence[Result], threshold: float, name_of: Callable[[Result], str | None] | None = None
) -> None:
    """The results as a table on standard output."""
    stdout_console().print(results_table(results, threshold, name_of))


def plural(number: int, noun: str) -> str:
    """``1 photo``, ``3 photos``: never "1 chunks"."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def summary(results: Iterable[Result]) -> str:
    """``3 classified, 1 needs review, 1 failed`` (plus ``reviewed`` when there are any)."""
    counts = Counter(r.status for r in results)
    parts = [
        f"{counts[Status.CLASSIFIED]} classified",
        f"{counts[Status.NEEDS_REVIEW]} needs review",
        f"{counts[Status.FAILED]} failed",
    ]
    if counts[Status.REVIEWED]:
        parts.append(f"{counts[Status.REVIEWED]} reviewed")
    return ", ".join(parts)


def by_photo_name(results: Iterable[Result]) -> list[Result]:
    """A stable order for runs whose results arrive in completion order."""
    return sorted(results, key=lambda r: (photo_name(r), r.source))


@contextmanager
def progress(what: str, total: int, *, show: bool | None = None) -> Iterator[Callable[[], None]]:
    """A progress bar on standard error; yields the function that advances it by one.

    ``show`` defaults to "more than :data:`PROGRESS_FROM` items": a handful needs no bar.
    """
    if not (total > PROGRESS_FROM if show is None else show):
        yield lambda: None
        return
    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(what, total=total)
        yield lambda: bar.advance(task)
