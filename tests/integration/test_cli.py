"""The real console script, end to end: files and URLs in, Results out, exit status 1 on any failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from refund_sorter_cli.samples import photo_image, photo_path
from tests.integration.conftest import CONTRACT_FIELDS, LocalAws
from tests.odd_images import odd_images, with_orientation

CLI = Path(sys.executable).with_name("refund-sorter")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}, check=False
    )


def results_of(completed: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]


def test_real_photo_and_broken_file(tmp_path: Path) -> None:
    # GIVEN a real photo and a file that is not an image
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    # WHEN both are classified
    completed = run_cli("classify", "--json", str(photo_path("skimage/coffee")), str(broken))
    # THEN one Result per line, the photo classified, the broken one failed with a code, exit status 1
    first, second = results_of(completed)
    assert completed.returncode == 1
    assert set(first) >= CONTRACT_FIELDS
    assert first["label"] == "espresso"
    assert isinstance(first["label_confidence"], float) and first["label_confidence"] > 0.9
    assert second["status"] == "failed"
    assert second["error"] == {"code": "not_an_image", "message": second["error"]["message"]}  # type: ignore[index]
    assert "Traceback" not in completed.stderr


def test_all_good_photos_exit_zero_and_print_a_table() -> None:
    completed = run_cli("classify", str(photo_path("skimage/coffee")), str(photo_path("skimage/chelsea")))
    assert completed.returncode == 0, completed.stderr
    assert "espresso" in completed.stdout
    assert "coffee.png" in completed.stdout


def test_every_odd_image_gives_a_result_or_a_coded_failure(tmp_path: Path) -> None:
    cases = odd_images()
    for case in cases:
        (tmp_path / case.filename).write_bytes(case.data)
    completed = run_cli("classify", "--json", *(str(tmp_path / c.filename) for c in cases))
    by_file = {Path(str(r["source"])).name: r for r in results_of(completed)}
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    for case in cases:
        result = by_file[case.filename]
        if case.expect == "ok":
            assert result["status"] in {"classified", "needs_review"}, case.name
        else:
            assert result["status"] == "failed", case.name
            assert result["error"]["code"] == case.expect, case.name  # type: ignore[index]


def test_missing_file_and_oversized_file(tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8\xff" + b"\0" * 2048)
    completed = run_cli(
        "classify", "--json", str(tmp_path / "nope.jpg"), str(big), env={"REFUND_SORTER_MAX_IMAGE_BYTES": "1024"}
    )
    missing, oversized = results_of(completed)
    assert missing["error"]["code"] == "not_found"  # type: ignore[index]
    assert oversized["error"]["code"] == "file_too_large"  # type: ignore[index]
    assert completed.returncode == 1


def test_exif_rotated_photo_keeps_its_label(tmp_path: Path) -> None:
    coffee = photo_image("skimage/coffee")
    for orientation in (1, 3, 6, 8):
        (tmp_path / f"o{orientation}.jpg").write_bytes(with_orientation(coffee, orientation))
    completed = run_cli("classify", "--json", *(str(tmp_path / f"o{o}.jpg") for o in (1, 3, 6, 8)))
    assert {r["label"] for r in results_of(completed)} == {"espresso"}


def test_url_is_fetched_when_the_local_setting_allows_loopback(photo_server: str) -> None:
    completed = run_cli(
        "classify", "--json", f"{photo_server}/coffee.png", env={"REFUND_SORTER_ALLOW_PRIVATE_URLS": "true"}
    )
    (result,) = results_of(completed)
    assert completed.returncode == 0, completed.stderr
    assert result["label"] == "espresso"
    assert result["source"] == f"{photo_server}/coffee.png"


def test_loopback_url_is_refused_by_default(photo_server: str) -> None:
    completed = run_cli(
        "classify", "--json", f"{photo_server}/coffee.png", env={"REFUND_SORTER_ALLOW_PRIVATE_URLS": "false"}
    )
    (result,) = results_of(completed)
    assert completed.returncode == 1
    assert result["error"]["code"] == "blocked_address"  # type: ignore[index]


def test_upload_batch_and_export_commands_against_the_moto_server(aws: LocalAws, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("skimage/coffee", "skimage/chelsea", "sklearn/flower"):
        (photos / photo_path(name).name).write_bytes(photo_path(name).read_bytes())
    env = {"AWS_ENDPOINT_URL": aws.endpoint}
    uploaded = run_cli("upload", str(photos), env=env)
    assert uploaded.returncode == 0, uploaded.stderr
    assert len(aws.keys("incoming/")) == 3
    batch = run_cli("batch", env=env)
    assert batch.returncode == 0, batch.stderr
    assert "classified 1, needs review 2, failed 0" in batch.stdout
    assert len(aws.items()) == 3
    today = datetime.now(UTC).date().isoformat()
    exported = run_cli("export", "--date", today, "--out", str(tmp_path / "day.csv"), env=env)
    assert exported.returncode == 0, exported.stderr
    assert len((tmp_path / "day.csv").read_text(encoding="utf-8").splitlines()) == 4  # header + 3
    again = run_cli("batch", env=env)
    assert "classified 0, needs review 0, failed 0" in again.stdout
    assert len(aws.items()) == 3
