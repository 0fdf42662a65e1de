"""A day's Results as CSV, streamed row by row from the store (no whole-night list in memory).

The first four columns keep the original system's meanings — Timestamp, URL (now ``source``), Prediction,
Confidence — so existing spreadsheets keep working. The file opens cleanly in Excel and LibreOffice: UTF-8
with a byte-order mark (without it Excel guesses a legacy code page), CRLF rows, ISO 8601 UTC times, and
text that a spreadsheet would run as a formula (a URL someone crafted to start with ``=``) is defused.
"""

from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from refund_sorter.results import Result

COLUMNS = (
    "timestamp",
    "source",
    "prediction",
    "confidence",
    "status",
    "label",
    "label_confidence",
    "error_code",
    "error_message",
    "department",
    "review_reason",
    "reviewed_by",
    "reviewed_at",
    "model_version",
    "id",
)
BOM = "\ufeff"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Above this, exports are written to a temporary file instead of memory.
_SPOOL_BYTES = 8 * 1024 * 1024


def csv_row(result: Result) -> dict[str, str]:
    document = result.model_dump(mode="json")
    error = document.get("error") or {}
    row = {column: document.get(column) for column in COLUMNS}
    review = document.get("review") or {}
    row |= {
        "error_code": error.get("code"),
        "error_message": error.get("message"),
        "reviewed_by": review.get("by"),
        "reviewed_at": review.get("at"),
    }
    return {column: _cell(value) for column, value in row.items()}


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    # OWASP's advice for CSV injection: make a leading formula character literal with a quote.
    return "'" + text if text.startswith(_FORMULA_START) and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_lines(results: Iterable[Result]) -> Iterator[str]:
    """The header, then one line per Result; the first line starts with the byte-order mark."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    yield BOM + buffer.getvalue()
    for result in results:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(csv_row(result))
        yield buffer.getvalue()


@dataclass(frozen=True)
class CsvFile:
    """A rewound binary CSV (memory up to 8 MB, then disk), ready to upload or read."""

    body: BinaryIO
    size: int
    rows: int


def csv_file(results: Iterable[Result]) -> CsvFile:
    """Write the CSV of ``results`` into a temporary file; the caller closes ``body``."""
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES, mode="w+b")  # noqa: SIM115 - handed to caller
    lines = 0
    for line in csv_lines(results):
        spool.write(line.encode("utf-8"))
        lines += 1
    size = spool.tell()
    spool.seek(0)
    return CsvFile(body=spool, size=size, rows=lines - 1)  # type: ignore[arg-type]
