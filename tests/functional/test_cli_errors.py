"""What a new user meets when something is not right: one line that says what and how to fix it, never a
traceback, and an exit status scripts can act on (2: the command cannot run as asked)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from refund_sorter_cli.net import HOST, free_port, listen
from refund_sorter_cli.samples import photo_path
from tests.cli import clean_environment, run_cli

EVENTS = Path(__file__).parents[2] / "events"


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def nothing_listening() -> dict[str, str]:
    """An environment whose local endpoint is a port nobody listens on."""
    return clean_environment(AWS_ENDPOINT_URL=f"http://{HOST}:{free_port()}")


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["batch"], id="batch"),
        pytest.param(["export", "--date", "today"], id="export"),
        pytest.param(["invoke", "PlanFunction", "--event", str(EVENTS / "schedule.json")], id="invoke"),
    ],
)
def test_no_stack_running_is_one_line_naming_the_endpoint_and_how_to_start_it(
    args: list[str], nothing_listening: dict[str, str]
) -> None:
    completed = run_cli(*args, env=nothing_listening, timeout=60)
    line = one_line(completed.stderr)
    assert completed.returncode == 2
    assert f"not running at {nothing_listening['AWS_ENDPOINT_URL']}" in line
    assert "refund-sorter local" in line


def test_upload_with_no_stack_running(tmp_path: Path, nothing_listening: dict[str, str]) -> None:
    shutil.copyfile(photo_path("skimage/camera"), tmp_path / "camera.png")
    completed = run_cli("upload", str(tmp_path), env=nothing_listening, timeout=60)
    assert completed.returncode == 2
    assert "not running" in one_line(completed.stderr)
    assert completed.stdout == ""


def test_the_default_endpoint_follows_the_moto_port_variable() -> None:
    port = free_port()
    completed = run_cli("batch", env=clean_environment(REFUND_SORTER_MOTO_PORT=str(port)), timeout=60)
    assert completed.returncode == 2
    assert f"not running at http://{HOST}:{port}" in one_line(completed.stderr)


def test_upload_of_a_missing_folder_is_an_error(tmp_path: Path, nothing_listening: dict[str, str]) -> None:
    completed = run_cli("upload", str(tmp_path / "no-such-folder"), env=nothing_listening)
    assert completed.returncode == 2
    assert one_line(completed.stderr) == f"refund-sorter upload: no such folder: {tmp_path / 'no-such-folder'}"
    assert "uploaded" not in completed.stdout


def test_upload_of_a_file_is_an_error(tmp_path: Path, nothing_listening: dict[str, str]) -> None:
    shutil.copyfile(photo_path("skimage/camera"), tmp_path / "camera.png")
    completed = run_cli("upload", str(tmp_path / "camera.png"), env=nothing_listening)
    assert completed.returncode == 2
    assert "not a folder" in one_line(completed.stderr)


@pytest.mark.parametrize("day", ["01/12/2026", "2026-13-01", "tomorrow", "2026-1-5"])
def test_export_refuses_what_is_not_a_day_in_one_line(day: str, nothing_listening: dict[str, str]) -> None:
    completed = run_cli("export", "--date", day, env=nothing_listening)
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert f"argument --date: {day!r} is not a day: use YYYY-MM-DD, today or yesterday" in completed.stderr


@pytest.mark.parametrize("flag", ["--moto-port", "--api-port"])
def test_local_with_its_port_taken_exits_at_once_naming_the_port_and_how_to_change_it(flag: str) -> None:
    # GIVEN another program listening on the port
    with listen(0) as taken:
        port = taken.getsockname()[1]
        other = "--api-port" if flag == "--moto-port" else "--moto-port"
        # WHEN the stack is asked to use it (the timeout only stops a stack that serves nothing from hanging here)
        completed = run_cli("local", flag, str(port), other, "0", env=clean_environment(), timeout=60)
    # THEN it stops with one line naming the port, the flag and the variable
    line = one_line(completed.stderr)
    assert completed.returncode == 2
    assert f"port {port} on {HOST}" in line
    assert flag in line
    assert ("REFUND_SORTER_MOTO_PORT" if flag == "--moto-port" else "REFUND_SORTER_API_PORT") in line
    assert "running" not in completed.stdout


def test_local_with_its_port_taken_through_the_variable() -> None:
    with listen(0) as taken:
        port = taken.getsockname()[1]
        completed = run_cli(
            "local", env=clean_environment(REFUND_SORTER_API_PORT=str(port), REFUND_SORTER_MOTO_PORT="0"), timeout=60
        )
    assert completed.returncode == 2
    assert "REFUND_SORTER_API_PORT" in one_line(completed.stderr)


def test_a_port_variable_that_is_not_a_port() -> None:
    completed = run_cli("local", env=clean_environment(REFUND_SORTER_MOTO_PORT="five thousand"), timeout=60)
    assert completed.returncode == 2
    assert one_line(completed.stderr) == (
        "refund-sorter local: REFUND_SORTER_MOTO_PORT='five thousand' is not a port number (0-65535)"
    )
