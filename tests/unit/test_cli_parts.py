"""The client's small parts: which files are photos, the table's "why", ports on 127.0.0.1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from refund_sorter.results import ResultError, ReviewReason, Status
from refund_sorter.vision.images import ACCEPTED_FORMATS
from refund_sorter_cli.display import by_photo_name, summary, why
from refund_sorter_cli.local_stack import LocalPorts, LocalStackError
from refund_sorter_cli.net import HOST, PortInUseError, is_listening, listen, refused_port, wait_for_port
from refund_sorter_cli.photo_files import FolderError, find_photos
from refund_sorter_cli.samples import photo_path
from tests.results import a_result

# --- photo files ------------------------------------------------------------------------------------------------


def test_a_photo_needs_both_a_photo_name_and_photo_bytes(tmp_path: Path) -> None:
    shutil.copyfile(photo_path("skimage/camera"), tmp_path / "camera.PNG")  # extensions in any case
    shutil.copyfile(photo_path("skimage/camera"), tmp_path / "camera.dat")  # photo bytes, not a photo name
    (tmp_path / "page.jpg").write_text("<html></html>", encoding="utf-8")  # a photo name, not photo bytes
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "cut-off.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut off")  # a JPEG's start: the classifier decides
    found = find_photos(tmp_path)
    assert [p.name for p in found.photos] == ["camera.PNG", "cut-off.jpg"]
    assert {s.path.name: s.reason for s in found.skipped} == {
        "camera.dat": "not a photo (.dat)",
        "empty.jpg": "empty file",
        "page.jpg": f"named .jpg but its bytes are not a {', '.join(ACCEPTED_FORMATS)} image",
    }


def test_hidden_files_and_folders_are_ignored(tmp_path: Path) -> None:
    (tmp_path / ".thumbnails").mkdir()
    shutil.copyfile(photo_path("skimage/camera"), tmp_path / ".thumbnails" / "camera.png")
    shutil.copyfile(photo_path("skimage/camera"), tmp_path / ".camera.png")
    found = find_photos(tmp_path)
    assert found.photos == found.skipped == []


@pytest.mark.parametrize("make", ["missing", "file"])
def test_a_folder_that_is_not_one(tmp_path: Path, make: str) -> None:
    target = tmp_path / "target"
    if make == "file":
        target.write_text("x", encoding="utf-8")
    with pytest.raises(FolderError, match="no such folder" if make == "missing" else "not a folder"):
        find_photos(target)


# --- the table's words ----------------------------------------------------------------------------------------


def test_why_for_each_kind_of_result() -> None:
    assert why(a_result(), 0.6) == ""
    unsure = a_result(status=Status.NEEDS_REVIEW, confidence=0.42, review_reason=ReviewReason.LOW_CONFIDENCE)
    assert why(unsure, 0.6) == "low confidence (0.42 < 0.60)"
    # a head holds its Results to its own threshold, not the taxonomy's: 0.66 is not "< 0.60"
    by_a_head = unsure.model_copy(update={"confidence": 0.66, "model_version": "backbone+head-20261202T0346Z"})
    assert why(by_a_head, 0.6) == "low confidence (0.66, below the head's auto-sort threshold)"
    not_a_product = a_result(
        status=Status.NEEDS_REVIEW,
        prediction="not_a_product",
        label="tiger cat",
        review_reason=ReviewReason.NOT_A_PRODUCT,
    )
    assert why(not_a_product, 0.6) == "not a product (looks like tiger cat)"
    failed = a_result(
        status=Status.FAILED,
        prediction=None,
        confidence=None,
        error=ResultError(code="corrupt_image", message="cut off"),
    )
    assert why(failed, 0.6) == "corrupt_image: cut off"


def test_summary_and_a_stable_order() -> None:
    results = [
        a_result(id="2", source="s3://b/incoming/zebra.jpg", status=Status.FAILED),
        a_result(id="1", source="s3://b/incoming/apple.jpg"),
        a_result(id="3", source="/photos/mango.jpg", status=Status.NEEDS_REVIEW),
    ]
    assert summary(results) == "1 classified, 1 needs review, 1 failed"
    assert [r.id for r in by_photo_name(results)] == ["1", "3", "2"]


# --- ports ----------------------------------------------------------------------------------------------------


def test_a_taken_port_is_an_error_at_once() -> None:
    with listen(0) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError) as caught:
            listen(port)
    assert caught.value.port == port


def test_is_listening_and_wait_for_port() -> None:
    with listen(0) as server:
        url = f"http://{HOST}:{server.getsockname()[1]}"
        assert is_listening(url)
        wait_for_port(url, timeout=5)
    with refused_port() as port:
        assert not is_listening(f"http://{HOST}:{port}")


def test_waiting_stops_as_soon_as_the_server_is_no_longer_starting() -> None:
    # A server process that has exited: waiting out the (long) timeout would help nobody.
    with refused_port() as port, pytest.raises(ConnectionRefusedError):
        wait_for_port(f"http://{HOST}:{port}", timeout=3600, still_starting=lambda: False)


def test_ports_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REFUND_SORTER_MOTO_PORT", raising=False)
    monkeypatch.setenv("REFUND_SORTER_API_PORT", "3111")
    assert LocalPorts.from_environment() == LocalPorts(moto_port=5000, api_port=3111)
    monkeypatch.setenv("REFUND_SORTER_MOTO_PORT", "70000")
    with pytest.raises(LocalStackError, match="REFUND_SORTER_MOTO_PORT='70000' is not a port number"):
        LocalPorts.from_environment()
