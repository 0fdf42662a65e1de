"""CSV export: the original columns first, UTF-8 with BOM, formulas defused, streamed."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime

from refund_sorter.errors import ErrorCode, ImageError
from refund_sorter.results import LabelScore, Result, Status
from refund_sorter.storage.export import COLUMNS, csv_file, csv_lines


def result(**changes: object) -> Result:
    base: dict[str, object] = {
        "id": "abc",
        "source": "s3://bucket/incoming/shoe.jpg",
        "status": Status.CLASSIFIED,
        "prediction": "shoes",
        "confidence": 0.93,
        "label": "running shoe",
        "label_confidence": 0.81,
        "top_k": [LabelScore(label="running shoe", confidence=0.81)],
        "model_version": "efficientnet-lite0-c8ef89d74246",
        "timestamp": datetime(2026, 11, 25, 2, 0, 1, 500000, tzinfo=UTC),
    }
    return Result.model_validate(base | changes)


def parse(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))


def test_header_keeps_the_original_meanings_first() -> None:
    assert COLUMNS[:4] == ("timestamp", "source", "prediction", "confidence")


def test_rows_are_utf8_with_bom_crlf_and_iso_utc_times() -> None:
    export = csv_file([result(source="s3://bucket/incoming/Schuh-Größe-42.jpg")])
    raw = export.body.read()
    assert (export.size, export.rows) == (len(raw), 1)
    assert raw.startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in raw
    (row,) = parse(raw.decode("utf-8"))
    assert row["timestamp"] == "2026-11-25T02:00:01.500Z"
    assert row["source"].endswith("Größe-42.jpg")
    assert row["confidence"] == "0.93"


def test_failed_rows_carry_the_error() -> None:
    failed = Result.from_error(
        id="x", source="s3://b/k.jpg", error=ImageError(ErrorCode.CORRUPT_IMAGE, "truncated"), model_version="v"
    )
    (row,) = parse("".join(csv_lines([failed])))
    assert (row["status"], row["error_code"], row["error_message"]) == ("failed", "corrupt_image", "truncated")
    assert row["prediction"] == row["confidence"] == ""


def test_formula_injection_is_defused() -> None:
    (row,) = parse("".join(csv_lines([result(source='=HYPERLINK("http://evil","click")')])))
    assert row["source"].startswith("'=")


def test_export_is_streamed_not_collected() -> None:
    pulled = 0

    def results() -> Iterator[Result]:
        nonlocal pulled
        for n in range(3):
            pulled += 1
            yield result(id=str(n))

    lines = csv_lines(results())
    next(lines)  # the header needs no result
    assert pulled == 0
    next(lines)
    assert pulled == 1
