"""What a new user meets when something is not right: one line that says what and how to fix it, never a
traceback, and an exit status scripts can act on (2: the command cannot run as asked)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from refund_sorter_cli.net import HOST, listen, refused_port
from refund_sorter_cli.samples import photo_path
from tests.cli import clean_environment, run_cli

EVENTS = Path(__file__).parents[2] / "events"


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def nothing_listening() -> Iterator[dict[str, str]]:
    """An environment whose local endpoint is a port nobody listens on."""
    with refused_port() as port:
        yield clean_environment(AWS_ENDPOINT_URL=f"http://{HOST}:{port}")


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
    with refused_port() as port:
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


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], int, str]]:
    """Every subcommand with a bad path, a bad file or a bad flag: (arguments, exit status, words of the line)."""
    existing = tmp / "existing-folder"
    existing.mkdir()
    empty = tmp / "empty-folder"
    empty.mkdir()
    flat = tmp / "flat"
    flat.mkdir()
    shutil.copyfile(photo_path("skimage/camera"), flat / "camera.png")
    photo = str(flat / "camera.png")
    schedule = str(EVENTS / "schedule.json")
    readme = str(EVENTS.parent / "README.md")
    return {
        "no-command": (["no-such-command"], 2, "invalid choice"),
        "classify-bad-flag": (["classify", "--nope", photo], 2, "unrecognized arguments: --nope"),
        "classify-no-head": (["classify", "--head", "no/such/head", photo], 2, "--head no/such/head: no such folder"),
        "classify-not-a-head": (["classify", "--head", str(existing), photo], 2, "is not a model version"),
        "classify-empty-folder": (["classify", str(empty)], 2, f"no photos in {empty}"),
        "local-bad-port": (["local", "--moto-port", "five"], 2, "argument --moto-port: invalid int value"),
        "upload-no-folder": (["upload", str(tmp / "nope")], 2, "no such folder"),
        "upload-a-file": (["upload", photo], 2, "not a folder"),
        "upload-labelled-flat": (["upload", str(flat), "--labelled"], 2, f"lay labelled photos out as {flat}/"),
        "batch-no-workers": (["batch", "--workers", "0"], 2, "'0' is not a number of workers"),
        "batch-workers-not-a-number": (["batch", "--workers", "many"], 2, "'many' is not a number of workers"),
        "batch-aws-no-arn": (["batch", "--aws"], 2, "REFUND_SORTER_NIGHTLY_STATE_MACHINE_ARN"),
        "export-bad-day": (["export", "--date", "tomorrow"], 2, "is not a day"),
        "export-out-is-a-folder": (["export", "--out", str(existing)], 2, f"--out {existing} is a folder"),
        "export-aws-no-table": (["export", "--aws"], 2, "set REFUND_SORTER_TABLE (the stack output ResultsTableName)"),
        "upload-aws-no-bucket": (["upload", str(flat), "--aws"], 2, "set REFUND_SORTER_BUCKET (the stack output"),
        "models-aws-no-table": (["models", "list", "--aws"], 2, "REFUND_SORTER_MODELS_TABLE (the stack output"),
        "train-aws-no-function": (["train", "--aws"], 2, "set REFUND_SORTER_EMBED_FUNCTION"),
        "invoke-no-such-function": (["invoke", "NoSuchFunction", "--event", schedule], 2, "no function NoSuchFunction"),
        "invoke-no-event-file": (
            ["invoke", "PlanFunction", "--event", "nothere.json"],
            2,
            "nothere.json: no such file",
        ),
        "invoke-event-not-json": (["invoke", "OnUploadFunction", "--event", readme], 2, "is not JSON"),
        "invoke-event-a-folder": (["invoke", "PlanFunction", "--event", str(existing)], 2, "cannot be read"),
        "invoke-no-event": (["invoke", "PlanFunction"], 2, "the following arguments are required: --event"),
        "invoke-aws-no-name": (
            ["invoke", "PlanFunction", "--aws", "--event", schedule],
            2,
            "REFUND_SORTER_PLAN_FUNCTION",
        ),
        "train-flat-folder": (
            ["train", str(flat), "--out", str(tmp / "m")],
            2,
            f"lay them out as {flat}/<department>/",
        ),
        "train-folder-no-out": (["train", str(flat)], 2, "train DIR needs --out MODEL_DIR"),
        "train-no-stack": (["train"], 2, "the local stack is not running"),
        "models-no-version": (["models", "show"], 2, "the following arguments are required: version"),
        "models-no-stack": (["models", "list"], 2, "the local stack is not running"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "no-command", "classify-bad-flag", "classify-no-head", "classify-not-a-head", "classify-empty-folder",
        "local-bad-port", "upload-no-folder", "upload-a-file", "upload-labelled-flat", "batch-no-workers",
        "batch-workers-not-a-number", "batch-aws-no-arn", "export-bad-day", "export-out-is-a-folder",
        "export-aws-no-table", "upload-aws-no-bucket", "models-aws-no-table", "train-aws-no-function",
        "invoke-no-such-function", "invoke-no-event-file", "invoke-event-not-json",
        "invoke-event-a-folder", "invoke-no-event", "invoke-aws-no-name", "train-flat-folder", "train-folder-no-out",
        "train-no-stack", "models-no-version", "models-no-stack",
    ],
)  # fmt: skip
def test_every_command_with_bad_input_says_so_in_one_line_with_the_documented_status(
    case: str, tmp_path: Path, nothing_listening: dict[str, str]
) -> None:
    args, status, words = _bad_inputs(tmp_path)[case]
    completed = run_cli(*args, env=nothing_listening, timeout=60)
    line = one_line(completed.stderr)  # exactly one line, no traceback
    assert completed.returncode == status, completed.stderr
    assert line.startswith("refund-sorter"), line
    assert words in line, line
