"""What the stack commands say in an 80-column terminal: ``upload --labelled``, ``train`` on the stack, ``models list``
(the real console script against the moto server of the local stack)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tests.cli import clean_environment, run_cli
from tests.conftest import CLOTHING

if TYPE_CHECKING:
    from tests.integration.conftest import LocalAws


def stack_env(aws: LocalAws) -> dict[str, str]:
    return clean_environment(AWS_ENDPOINT_URL=aws.endpoint, COLUMNS="80")


def test_upload_labelled_puts_each_department_under_labelled(aws: LocalAws, tmp_path: Path) -> None:
    # GIVEN DIR/<department>/ photos and one photo in no department
    for department in ("hat", "shoes"):
        (tmp_path / department).mkdir()
        for photo in sorted((CLOTHING / department).iterdir())[:2]:
            (tmp_path / department / photo.name).write_bytes(photo.read_bytes())
    loose = next((CLOTHING / "hat").iterdir())
    (tmp_path / "loose.jpg").write_bytes(loose.read_bytes())
    # WHEN uploaded as labelled photos
    completed = run_cli("upload", str(tmp_path), "--labelled", env=stack_env(aws))
    # THEN each lands in labelled/<department>/, the loose one is named as skipped, nothing goes to incoming/
    assert completed.returncode == 0, completed.stderr
    assert [k.split("/")[1] for k in aws.keys("labelled/")] == ["hat", "hat", "shoes", "shoes"]
    assert aws.keys("incoming/") == []
    assert f"skipped {tmp_path / 'loose.jpg'}: not in a department folder" in completed.stderr
    assert completed.stdout.splitlines()[-1].startswith("4 photos uploaded to s3://")


def test_train_on_the_stack_says_why_it_cannot_once_with_no_function_logs(aws: LocalAws) -> None:
    completed = run_cli("train", env=stack_env(aws), timeout=600)
    assert completed.returncode == 2
    assert not [line for line in completed.stdout.splitlines() + completed.stderr.splitlines() if "{" in line]
    (line,) = completed.stderr.strip().splitlines()
    assert line.startswith("refund-sorter train: cannot train: ")
    assert line.endswith("(put labelled photos first: refund-sorter upload DIR --labelled)")


def test_models_list_shows_the_whole_version_id_in_80_columns(aws: LocalAws, clothing_head: Path) -> None:
    import json

    version = json.loads((clothing_head / "version.json").read_text(encoding="utf-8"))["version"]
    for file in clothing_head.iterdir():
        aws.s3.put_object(Bucket=aws.settings.bucket, Key=f"models/{version}/{file.name}", Body=file.read_bytes())
    completed = run_cli("models", "list", env=stack_env(aws))
    assert completed.returncode == 0, completed.stderr
    assert any(version in line for line in completed.stdout.splitlines()), completed.stdout
    assert max(len(line) for line in completed.stdout.splitlines()) <= 80


def test_invoke_with_aws_invokes_the_deployed_function_and_never_runs_it_here(aws: LocalAws) -> None:
    # GIVEN a "deployed" PlanFunction's name that the endpoint (here the moto server) does not know
    env = stack_env(aws) | {"REFUND_SORTER_PLAN_FUNCTION": "refund-sorter-prod-plan"}
    event = str(Path(__file__).parents[2] / "events" / "schedule.json")
    # WHEN invoked with --aws THEN it asked Lambda for that function (one line, exit 1: AWS refused) …
    completed = run_cli("invoke", "PlanFunction", "--aws", "--event", event, env=env)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    (line,) = completed.stderr.strip().splitlines()
    assert line.startswith("refund-sorter invoke: AWS refused:") and "refund-sorter-prod-plan" in line
    # … and ran no handler on this machine: the plan step would have taken the lease and written runs/
    assert aws.keys("runs/") == []
    assert aws.dynamodb.scan(TableName=aws.template.physical_name("JobsTable"))["Items"] == []
