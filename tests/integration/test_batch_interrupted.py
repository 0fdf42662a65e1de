"""``refund-sorter batch`` interrupted, killed, or finding the lease taken: the real console script as a process,
a real SIGINT, the moto server of the local stack. Nothing is lost, nothing is done twice, and no run locks
the next one out."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

from refund_sorter.jobs.plan import LEASE
from refund_sorter.storage.jobs_table import JobsTable
from tests.cli import CLI, clean_environment, run_cli
from tests.integration.nightly import small_jpeg

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.conftest import LocalAws

# Only keeps a broken run from hanging the suite; no test measures time with it.
RUN_LIMIT = 300.0


def jobs(aws: LocalAws) -> JobsTable:
    return JobsTable(aws.template.physical_name("JobsTable"), aws.dynamodb)


def put_photos(aws: LocalAws, count: int) -> list[str]:
    keys = [f"incoming/night/{i:03}.jpg" for i in range(count)]
    for i, key in enumerate(keys):
        aws.put_photo(key, small_jpeg(i))
    return keys


def batch_process(aws: LocalAws, out: Path, *args: str, **extra: str) -> subprocess.Popen[bytes]:
    """``refund-sorter batch`` in a session of its own (so a test can kill it and its workers together)."""
    env = clean_environment(AWS_ENDPOINT_URL=aws.endpoint, REFUND_SORTER_CHUNK_SIZE="4", **extra)
    with out.open("wb") as log:
        return subprocess.Popen(
            [str(CLI), "batch", "--workers", "1", *args], stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip


def wait_until(condition: object, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + RUN_LIMIT
    while not condition():  # type: ignore[operator]
        assert process.poll() is None, f"batch ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {RUN_LIMIT} s"
        time.sleep(0.2)


@pytest.mark.slow
def test_ctrl_c_stops_after_the_photos_in_hand_gives_the_lease_back_and_loses_nothing(
    aws: LocalAws, tmp_path: Path
) -> None:
    # GIVEN a night of 160 photos, and a batch that has classified some of them
    keys = put_photos(aws, 160)
    out = tmp_path / "batch.out"
    process = batch_process(aws, out)
    try:
        wait_until(lambda: len(aws.items()) >= 4, process, "Result")
        # WHEN it gets Ctrl-C (SIGINT, to the CLI's process alone, as `kill -INT` sends it)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=RUN_LIMIT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    text = out.read_text(encoding="utf-8")
    # THEN it said so, stopped, summed up what was done and left, and exited 130
    assert code == 130, text
    assert "stopping after the photos in hand" in text
    assert "stopped (Ctrl-C):" in text and "left in incoming/ for the next run" in text
    assert "Traceback" not in text
    # AND the lease is free, and each photo is either classified and moved or still waiting in incoming/
    assert jobs(aws).lease(LEASE) is None
    done, waiting = len(aws.items()), len(aws.keys("incoming/"))
    assert done + waiting == len(keys) and waiting > 0, (done, waiting)
    # AND the next batch takes the rest at once
    again = run_cli("batch", env=clean_environment(AWS_ENDPOINT_URL=aws.endpoint), timeout=RUN_LIMIT)
    assert again.returncode == 0, again.stdout + again.stderr
    assert aws.keys("incoming/") == [] and len(aws.items()) == len(keys)


def test_a_killed_local_run_does_not_lock_the_next_one_out(aws: LocalAws, tmp_path: Path) -> None:
    # GIVEN a batch killed outright (SIGKILL to it and its workers) while it holds the lease
    put_photos(aws, 40)
    process = batch_process(aws, tmp_path / "killed.out")
    try:
        wait_until(lambda: jobs(aws).lease(LEASE) is not None, process, "lease")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    held = jobs(aws).lease(LEASE)
    assert held is not None and held.holder.startswith("local-")
    # WHEN the next batch runs THEN it sees the holder's process is gone, takes the lease over and does the night
    again = run_cli("batch", env=clean_environment(AWS_ENDPOINT_URL=aws.endpoint), timeout=RUN_LIMIT)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"took over the nightly lease from {held.holder}: its process (pid " in again.stdout
    assert aws.keys("incoming/") == [] and len(aws.items()) == 40
    assert jobs(aws).lease(LEASE) is None


def test_a_lease_held_by_another_run_is_exit_3_and_break_lease_takes_it(aws: LocalAws) -> None:
    put_photos(aws, 2)
    assert jobs(aws).take_lease(LEASE, "a-deployed-run", 3600) is not None
    env = clean_environment(AWS_ENDPOINT_URL=aws.endpoint)
    # WHEN a run finds another holding the lease THEN nothing is done, one line says why and how, exit 3
    held = run_cli("batch", env=env, timeout=RUN_LIMIT)
    assert held.returncode == 3, held.stdout + held.stderr
    (line,) = held.stderr.strip().splitlines()
    assert "nothing done: another nightly run (a-deployed-run) holds the lease until " in line
    assert "--break-lease" in line
    assert len(aws.keys("incoming/")) == 2 and aws.items() == []
    # WHEN told to break it THEN it does, and runs
    broken = run_cli("batch", "--break-lease", env=env, timeout=RUN_LIMIT)
    assert broken.returncode == 0, broken.stdout + broken.stderr
    assert "took over the nightly lease from a-deployed-run: --break-lease" in broken.stdout
    assert aws.keys("incoming/") == []


def test_a_shorter_run_lease_setting_is_honoured(aws: LocalAws) -> None:
    # GIVEN a lease taken two seconds ago for an hour by a run that may still be going
    put_photos(aws, 2)
    assert jobs(aws).take_lease(LEASE, "a-long-run", 3600) is not None
    time.sleep(2)
    # WHEN a run is configured to last at most one second THEN that lease is stale to it: it takes it and runs
    env = clean_environment(AWS_ENDPOINT_URL=aws.endpoint, REFUND_SORTER_RUN_LEASE_SECONDS="1")
    completed = run_cli("batch", env=env, timeout=RUN_LIMIT)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert aws.keys("incoming/") == [] and len(aws.items()) == 2


def test_uploading_the_same_folder_twice_leaves_one_version_and_batch_empties_incoming(
    aws: LocalAws, tmp_path: Path
) -> None:
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(small_jpeg(i))
    env = clean_environment(AWS_ENDPOINT_URL=aws.endpoint)
    first, second = run_cli("upload", str(tmp_path), env=env), run_cli("upload", str(tmp_path), env=env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert second.stdout.splitlines()[-1].startswith("0 photos uploaded to ")
    assert second.stdout.splitlines()[-1].endswith(", 3 already there with the same bytes")
    versions = aws.s3.list_object_versions(Bucket=aws.settings.bucket, Prefix="incoming/")["Versions"]
    assert len(versions) == 3
    completed = run_cli("batch", env=env, timeout=RUN_LIMIT)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert aws.keys("incoming/") == [] and len(aws.items()) == 3
