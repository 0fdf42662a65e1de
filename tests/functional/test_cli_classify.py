"""``refund-sorter classify``, the real console script end to end, no AWS: files, folders and URLs in, Results out."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from refund_sorter_cli.samples import photo_image, photo_path
from tests.cli import results_of, run_cli
from tests.contract import CONTRACT_FIELDS
from tests.odd_images import odd_images, with_orientation


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
    completed = run_cli("classify", str(photo_path("skimage/coffee")), str(photo_path("skimage/camera")))
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


# --- A folder, as a new user tries it first ----------------------------------------------------------------------


def photo_folder(root: Path) -> Path:
    """Two photos (one in a subfolder), a note, a text file named like a photo, and a hidden file."""
    (root / "returns" / "week 2").mkdir(parents=True)
    shutil.copyfile(photo_path("skimage/coffee"), root / "returns" / "b-coffee.png")
    shutil.copyfile(photo_path("skimage/camera"), root / "returns" / "week 2" / "a-camera.png")
    (root / "returns" / "notes.txt").write_text("box 12 was damaged", encoding="utf-8")
    (root / "returns" / "page.jpg").write_text("<html>not a photo</html>", encoding="utf-8")
    (root / "returns" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root / "returns"


def test_a_folder_means_the_photos_in_it_recursively_sorted(tmp_path: Path) -> None:
    folder = photo_folder(tmp_path)
    completed = run_cli("classify", "--json", str(folder))
    # THEN the two photos, by their path in the folder, and a note for each file that is not a photo
    assert [Path(str(r["source"])).name for r in results_of(completed)] == ["b-coffee.png", "a-camera.png"]
    assert completed.returncode == 0, completed.stderr
    assert f"skipped {folder / 'notes.txt'}: not a photo (.txt)" in completed.stderr
    assert f"skipped {folder / 'page.jpg'}: named .jpg but its bytes are not a" in completed.stderr
    assert ".DS_Store" not in completed.stderr
    assert "2 classified, 0 needs review, 0 failed" in completed.stderr  # the summary; stdout stays JSON


def test_the_table_says_why_for_every_photo_that_waits_for_a_person_or_failed(tmp_path: Path) -> None:
    # GIVEN a product photo, a cat (no product), and a photo cut off half-way
    cut_off = tmp_path / "cut-off.jpg"
    cut_off.write_bytes(photo_path("skimage/rocket").read_bytes()[:2000])
    completed = run_cli("classify", str(photo_path("skimage/camera")), str(photo_path("skimage/chelsea")), str(cut_off))
    rows = {line.split("│")[1].strip(): line for line in completed.stdout.splitlines() if line.count("│") > 2}
    assert completed.returncode == 1
    assert "not a product (looks like tiger cat)" in rows["chelsea.png"]
    assert "corrupt_image: the image is damaged or truncated" in rows["cut-off.jpg"]  # the message, not only the code
    assert completed.stdout.rstrip().endswith("1 classified, 1 needs review, 1 failed")


def test_low_confidence_is_the_reason_when_under_the_threshold() -> None:
    completed = run_cli(
        "classify", str(photo_path("skimage/camera")), env={"REFUND_SORTER_CONFIDENCE_THRESHOLD": "0.99"}
    )
    assert "low confidence (0.94 < 0.99)" in completed.stdout


def test_long_names_are_not_cut_when_the_table_goes_to_a_pipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a photo with a long name, and standard output a pipe (where rich assumes 80 columns)
    monkeypatch.delenv("COLUMNS", raising=False)
    name = "return-2026-11-25-order-884213-customer-photo-of-the-damaged-box-front-side.png"
    shutil.copyfile(photo_path("skimage/camera"), tmp_path / name)
    completed = run_cli("classify", str(tmp_path / name))
    assert name in completed.stdout
    assert "…" not in completed.stdout


def test_many_inputs_get_a_progress_bar_on_standard_error(tmp_path: Path) -> None:
    for i in range(25):
        shutil.copyfile(photo_path("skimage/camera"), tmp_path / f"camera-{i:02}.png")
    completed = run_cli("classify", "--json", str(tmp_path))
    assert len(results_of(completed)) == 25  # stdout: only the Results
    assert "classifying" in completed.stderr
    assert "25/25" in completed.stderr
