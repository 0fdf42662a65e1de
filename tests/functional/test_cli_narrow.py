"""The CLI in an 80-column terminal (``COLUMNS=80``), and the small words: what a person reads."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from refund_sorter.results import ReviewReason, Status
from refund_sorter_cli.display import why
from refund_sorter_cli.night import print_summary
from refund_sorter_cli.samples import photo_path
from tests.cli import run_cli
from tests.conftest import CLOTHING
from tests.results import a_result

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

NARROW = {"COLUMNS": "80"}


def test_classify_names_photos_by_their_path_in_the_folder_and_never_wraps_a_status(tmp_path: Path) -> None:
    # GIVEN two photos with the same file name in two departments' folders, one of them a cat (needs review)
    for folder, name in (("a", "skimage/camera"), ("b", "skimage/chelsea")):
        (tmp_path / folder).mkdir()
        shutil.copyfile(photo_path(name), tmp_path / folder / "x.png")
    # WHEN the folder is classified in an 80-column terminal
    completed = run_cli("classify", str(tmp_path), env=NARROW)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    # THEN the table fits, each photo is named by its path in the folder, and needs_review is one word
    assert max(len(line) for line in lines) <= 80
    rows = [line for line in lines if line.count("│") > 2]
    assert any("a/x.png" in row for row in rows) and any("b/x.png" in row for row in rows)
    assert any("needs_review" in row for row in rows)


def test_a_confidence_just_below_the_threshold_never_reads_as_equal_to_it() -> None:
    unsure = a_result(status=Status.NEEDS_REVIEW, confidence=0.599, review_reason=ReviewReason.LOW_CONFIDENCE)
    assert why(unsure, 0.6) == "low confidence (0.599 < 0.600)"
    assert why(unsure.model_copy(update={"confidence": 0.42}), 0.6) == "low confidence (0.42 < 0.60)"


def test_one_of_a_thing_is_singular(capsys: pytest.CaptureFixture[str]) -> None:
    summary = {
        "photos": 1, "chunks": 1, "counts": {"classified": 1}, "departments": {}, "failed_chunks": [],
        "export_key": "exports/d.csv", "export_rows": 1, "summary_key": "runs/d/summary.json",
    }  # fmt: skip
    print_summary(summary)
    out = capsys.readouterr().out
    assert out.startswith("1 photo in 1 chunk: classified 1")
    assert "(1 row)" in out


def test_help_reads_as_help() -> None:
    top = run_cli("--help", env=NARROW).stdout
    assert not top.splitlines()[2].startswith("``") and "``" not in top
    assert "exit status:" in top and "3" in top.split("exit status:")[1]
    invoke = run_cli("invoke", "--help", env=NARROW).stdout
    assert "--event FILE" in invoke and "JSON file" in invoke
    batch = " ".join(run_cli("batch", "--help", env=NARROW).stdout.split())
    assert "REFUND_SORTER_NIGHTLY_STATE_MACHINE_ARN" in batch and "--break-lease" in batch
    assert "REFUND_SORTER_BUCKET" not in batch
    upload = " ".join(run_cli("upload", "--help", env=NARROW).stdout.split())
    assert "--labelled" in upload and "labelled/<department>/" in upload


def test_train_on_a_folder_shows_its_progress(tmp_path: Path) -> None:
    completed = run_cli("train", str(CLOTHING), "--out", str(tmp_path / "version"), env=NARROW, timeout=600)
    assert completed.returncode == 0, completed.stderr
    photos = sum(1 for p in CLOTHING.rglob("*.jpg"))
    assert "reading photos" in completed.stderr and f"{photos}/{photos}" in completed.stderr
    assert (tmp_path / "version" / "head.npz").is_file()
