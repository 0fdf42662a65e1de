"""The real console script against the local stack: ``local``, ``upload``, ``batch`` and ``export``."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from refund_sorter_cli.samples import photo_path
from tests.cli import CLI, clean_environment, run_cli
from tests.integration.conftest import LocalAws, RunningStack
from tests.results import a_result

TODAY = datetime.now(UTC).date()


@pytest.mark.slow
def test_upload_batch_and_export_commands_against_the_moto_server(aws: LocalAws, tmp_path: Path) -> None:
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
    exported = run_cli("export", "--date", TODAY.isoformat(), "--out", str(tmp_path / "day.csv"), env=env)
    assert exported.returncode == 0, exported.stderr
    assert len((tmp_path / "day.csv").read_text(encoding="utf-8").splitlines()) == 4  # header + 3
    again = run_cli("batch", env=env)
    assert "classified 0, needs review 0, failed 0" in again.stdout
    assert len(aws.items()) == 3


def test_upload_skips_what_is_not_a_photo_with_a_note(aws: LocalAws, tmp_path: Path) -> None:
    # GIVEN a photo, a note and an HTML page saved as .jpg
    shutil.copyfile(photo_path("skimage/camera"), tmp_path / "camera.png")
    (tmp_path / "notes.txt").write_text("box 12 was damaged", encoding="utf-8")
    (tmp_path / "page.jpg").write_text("<html>not a photo</html>", encoding="utf-8")
    # WHEN the folder is uploaded THEN only the photo lands in incoming/, and the others are named with why
    completed = run_cli("upload", str(tmp_path), env={"AWS_ENDPOINT_URL": aws.endpoint})
    assert completed.returncode == 0, completed.stderr
    assert aws.keys("incoming/") == ["incoming/camera.png"]
    assert f"skipped {tmp_path / 'notes.txt'}: not a photo (.txt)" in completed.stderr
    assert f"skipped {tmp_path / 'page.jpg'}: named .jpg but its bytes are not a" in completed.stderr
    assert "1 photo uploaded" in completed.stdout
    assert "2 other files skipped" in completed.stdout


def test_a_large_folder_gets_a_progress_bar_instead_of_a_line_per_photo(aws: LocalAws, tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / f"photo-{i:02}.png").write_bytes(photo_path("skimage/camera").read_bytes())
    completed = run_cli("upload", str(tmp_path), env={"AWS_ENDPOINT_URL": aws.endpoint})
    assert completed.returncode == 0, completed.stderr
    assert len(aws.keys("incoming/")) == 30
    assert "uploading" in completed.stderr and "30/30" in completed.stderr
    assert completed.stdout.splitlines() == [f"30 photos uploaded to s3://{aws.settings.bucket}/incoming/"]


def store_results(aws: LocalAws, count: int, day: datetime) -> None:
    for i in range(count):
        source = f"s3://{aws.settings.bucket}/processed/{i}.jpg"
        aws.store.add(a_result(id=f"result-{i:04}", source=source, timestamp=day))


def test_export_takes_today_and_yesterday(aws: LocalAws) -> None:
    store_results(aws, 2, datetime.now(UTC) - timedelta(days=1))
    env = {"AWS_ENDPOINT_URL": aws.endpoint}
    yesterday = run_cli("export", "--date", "yesterday", env=env)
    today = run_cli("export", "--date", "today", env=env)
    assert yesterday.returncode == today.returncode == 0, yesterday.stderr + today.stderr
    assert len(yesterday.stdout.splitlines()) == 3  # header + 2
    assert len(today.stdout.splitlines()) == 1  # header only


def test_export_into_a_pipe_closed_early_is_quiet(aws: LocalAws) -> None:
    # GIVEN a day with more rows than a reader wants, like `refund-sorter export | head -1`
    store_results(aws, 50, datetime.now(UTC))
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first row is written
    try:
        completed = subprocess.run(
            [str(CLI), "export", "--date", TODAY.isoformat()],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "AWS_ENDPOINT_URL": aws.endpoint},
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    # THEN no traceback, no "Exception ignored" complaint, and success: the reader took what it wanted, as `cat | head`
    assert completed.stderr == ""
    assert completed.returncode == 0


def test_local_prints_a_block_another_shell_can_paste(local_stack: RunningStack, tmp_path: Path) -> None:
    # GIVEN nothing but what `refund-sorter local` printed (a fresh shell: no AWS or refund-sorter settings)
    env = clean_environment(**local_stack.environment)
    assert {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"} <= set(env)
    assert f"{local_stack.api_url}/review" in local_stack.banner

    # WHEN the AWS CLI uses it THEN it reaches the stack's bucket and results table
    def aws_cli(*args: str) -> str:
        completed = subprocess.run(
            [str(CLI.with_name("aws")), *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert completed.returncode == 0, completed.stderr
        return completed.stdout

    shutil.copyfile(photo_path("skimage/camera"), tmp_path / "camera.png")
    uri = f"s3://{env['REFUND_SORTER_BUCKET']}/incoming/pasted-block-test.png"
    aws_cli("s3", "cp", str(tmp_path / "camera.png"), uri, "--only-show-errors")
    aws_cli("s3", "rm", uri, "--only-show-errors")
    table = env["REFUND_SORTER_TABLE"]
    assert "ACTIVE" in aws_cli("dynamodb", "describe-table", "--table-name", table, "--query", "Table.TableStatus")


def test_batch_with_aws_starts_the_deployed_state_machine(aws: LocalAws) -> None:
    # GIVEN a deployed nightly state machine (here: registered on the moto server, which only records executions)
    stepfunctions = boto3.client("stepfunctions", endpoint_url=aws.endpoint)
    arn = stepfunctions.create_state_machine(
        name="refund-sorter-nightly",
        definition='{"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}',
        roleArn="arn:aws:iam::123456789012:role/refund-sorter-nightly",
    )["stateMachineArn"]
    env = {"AWS_ENDPOINT_URL": aws.endpoint, "REFUND_SORTER_NIGHTLY_STATE_MACHINE_ARN": arn}
    # WHEN `batch --aws` runs THEN it starts one execution there, from the CLI, and says how to follow it
    started = run_cli("batch", "--aws", env=env)
    assert started.returncode == 0, started.stderr
    (execution,) = stepfunctions.list_executions(stateMachineArn=arn)["executions"]
    assert execution["name"].startswith("cli-")
    assert f"started {execution['executionArn']}" in started.stdout
    assert "aws stepfunctions describe-execution" in started.stdout
    # AND without the state machine's ARN it says, in one line, where to find it
    unset = run_cli(
        "batch", "--aws", env={"AWS_ENDPOINT_URL": aws.endpoint, "REFUND_SORTER_NIGHTLY_STATE_MACHINE_ARN": ""}
    )
    assert unset.returncode == 2
    assert unset.stderr.count("\n") == 1 and "NightlyStateMachineArn" in unset.stderr
