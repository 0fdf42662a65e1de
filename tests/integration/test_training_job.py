"""Training as a job on the stack: labelled photos embedded as they arrive (EmbedLabelledFunction), the training
function (TrainFunction) publishing a version that `models activate` switches on, and `refund-sorter train`
starting it; all on the moto server with the real model and the real handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from refund_sorter.config import Settings
from refund_sorter.heads.active import ActiveHead
from refund_sorter.heads.labelled import features_key, labelled_photos, missing, read_features
from refund_sorter.sources.files import photo_from_path
from refund_sorter.vision.classifier import ModelInfo
from refund_sorter.vision.sorter import Sorter
from refund_sorter_cli.commands import main
from refund_sorter_cli.model_admin import ModelCatalogue
from tests.conftest import CLOTHING
from tests.handlers import call_handler

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.conftest import LocalAws

# The model the functions run: labelled photos' features are kept per backbone.
BACKBONE = ModelInfo.from_model_path(Settings().model_path).version


def s3_event(aws: LocalAws, *keys: str) -> dict[str, Any]:
    """The S3 ObjectCreated notification S3 sends for these objects as they are now."""
    records = []
    for key in keys:
        head = aws.s3.head_object(Bucket=aws.settings.bucket, Key=key)
        records.append(
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": aws.settings.bucket},
                    "object": {"key": key, "eTag": head["ETag"].strip('"'), "size": head["ContentLength"]},
                },
            }
        )
    return {"Records": records}


def messages(stderr: str) -> list[str]:
    """What the CLI says on stderr, without the functions' JSON log lines (run in-process on the local stack)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


def photos_of(department: str, count: int) -> list[Path]:
    return sorted((CLOTHING / department).iterdir())[:count]


def label(aws: LocalAws, department: str, count: int, *, notify: bool = True) -> list[str]:
    """Put labelled photos as a person would; with ``notify``, S3's notification reaches the embed function."""
    keys = []
    for photo in photos_of(department, count):
        keys.append(f"labelled/{department}/{photo.name}")
        aws.put_photo(keys[-1], photo.read_bytes())
    if notify:
        report = call_handler(aws.template, "EmbedLabelledFunction", s3_event(aws, *keys))
        assert report["embedded"] == count, report
    return keys


def test_a_labelled_photo_is_embedded_when_it_arrives_and_again_when_replaced(aws: LocalAws) -> None:
    # WHEN a photo lands under labelled/ and S3 tells the embed function
    hat, other = photos_of("hat", 2)
    aws.put_photo("labelled/hat/one.jpg", hat.read_bytes())
    report = call_handler(aws.template, "EmbedLabelledFunction", s3_event(aws, "labelled/hat/one.jpg"))
    # THEN its features are recorded under the photo version's id, and no Result is made for it
    assert report["embedded"] == 1 and report["failed"] == {}
    (first,) = labelled_photos(aws.bucket)
    assert aws.keys("embeddings/labelled/") == [features_key(aws.bucket, BACKBONE, first.stored)]
    assert read_features(aws.bucket, BACKBONE, [first])[first.stored.result_id].shape == (1280,)
    assert aws.items() == [] and missing(aws.bucket, BACKBONE) == []

    # WHEN the photo is replaced under the same key THEN the new version is embedded; the old features are unused
    aws.put_photo("labelled/hat/one.jpg", other.read_bytes())
    (second,) = labelled_photos(aws.bucket)
    assert missing(aws.bucket, BACKBONE) == [second]
    call_handler(aws.template, "EmbedLabelledFunction", s3_event(aws, "labelled/hat/one.jpg"))
    assert missing(aws.bucket, BACKBONE) == []
    features = read_features(aws.bucket, BACKBONE, [second])
    assert list(features) == [second.stored.result_id] != [first.stored.result_id]

    # WHEN it is deleted THEN it drops out of what training reads
    aws.s3.delete_object(Bucket=aws.settings.bucket, Key="labelled/hat/one.jpg")
    assert labelled_photos(aws.bucket) == [] and read_features(aws.bucket, BACKBONE, []) == {}


def test_an_unreadable_or_stale_labelled_photo_is_reported_not_embedded(aws: LocalAws) -> None:
    aws.put_photo("labelled/hat/broken.jpg", b"\xff\xd8\xff\xe0 truncated")
    aws.put_photo("labelled/hat/replaced.jpg", photos_of("hat", 1)[0].read_bytes())
    aws.put_photo("labelled/not a department/x.jpg", photos_of("hat", 1)[0].read_bytes())  # ignored: no such name
    event = s3_event(aws, "labelled/hat/broken.jpg", "labelled/hat/replaced.jpg", "labelled/not a department/x.jpg")
    aws.put_photo("labelled/hat/replaced.jpg", photos_of("hat", 2)[1].read_bytes())  # after the event was sent
    report = call_handler(aws.template, "EmbedLabelledFunction", event)
    # the corrupt photo is named with why; the one replaced since the event is not embedded as the wrong photo
    assert report["embedded"] == 0
    assert set(report["failed"]) == {"labelled/hat/broken.jpg", "labelled/hat/replaced.jpg"}
    assert aws.keys("embeddings/labelled/") == []


def test_the_training_function_publishes_a_version_that_activate_switches_on(
    aws: LocalAws, sorter: Sorter, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN labelled photos embedded as they arrived, and a running Sorter following the ACTIVE pointer
    for department in ("hat", "shoes", "pants"):
        label(aws, department, 10)
    catalogue = ModelCatalogue(aws.settings, aws.s3, aws.dynamodb)
    now = [0.0]
    running = Sorter(
        aws.settings,
        sorter.classifier,
        sorter.taxonomy,
        heads=ActiveHead(catalogue, sorter.classifier.info.version, ttl=60, clock=lambda: now[0]),
    )
    hat = photo_from_path(photos_of("hat", 12)[-1], aws.settings)  # not one it learned from
    assert running.classify_one(hat).model_version == sorter.classifier.info.version
    # WHEN the training function runs (as `refund-sorter train` or the schedule starts it)
    scheduled = {"source": "refund-sorter.training-schedule", "activate": False}
    summary = call_handler(aws.template, "TrainFunction", scheduled)
    # THEN it published a version with its report, from the 30 recorded features, and activated nothing
    assert summary["ok"] and not summary["active"]
    assert (summary["labelled"], summary["reviewed"], summary["labelled_without_features"]) == (30, 0, 0)
    assert summary["departments"] == ["hat", "pants", "shoes"]
    assert 0 <= summary["coverage_at_threshold"] <= 1 and summary["threshold"] > 0
    version = summary["version"]
    assert catalogue.files(version) == ["confusion.svg", "coverage.svg", "head.npz", "report.md", "version.json"]
    assert catalogue.pointer().version is None
    # WHEN a person activates it THEN the next classification (after the pointer's TTL) uses it
    assert main(["models", "activate", version]) == 0
    assert f"active: {version}" in capsys.readouterr().out
    now[0] += 60
    after = running.classify_one(hat)
    assert after.model_version == f"{sorter.classifier.info.version}+head-{version}"
    assert after.prediction == "hat"


@pytest.mark.slow
def test_train_embeds_what_arrived_without_features_first_unless_told_not_to(
    aws: LocalAws, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # GIVEN 20 labelled photos, 5 of them put before the embed function existed (no notification)
    label(aws, "hat", 10)
    label(aws, "shoes", 5)
    for photo in photos_of("shoes", 10)[5:]:
        aws.put_photo(f"labelled/shoes/{photo.name}", photo.read_bytes())
    # WHEN trained without catching up THEN the job says so, and refuses: shoes have 5 photos with features
    assert main(["train", "--no-embed-missing"]) == 2
    captured = capsys.readouterr()
    assert "left out 5 labelled photos without features" in captured.out
    (refusal,) = messages(captured.err)  # one line
    assert refusal == "refund-sorter train: cannot train: every department needs at least 10 photos: 'shoes' has 5"
    # WHEN trained as a person does THEN the 5 are embedded first and all 20 are learned from; --out downloads it
    assert main(["train", "--out", str(tmp_path / "version")]) == 0
    out = capsys.readouterr().out
    assert "embedded 5 labelled photos that had no features yet" in out
    assert "training on 20 labelled photos and 0 reviewed Results" in out
    assert (tmp_path / "version" / "head.npz").is_file() and (tmp_path / "version" / "confusion.svg").is_file()


def test_a_crashing_training_function_is_one_line_and_a_failure(
    aws: LocalAws, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    label(aws, "hat", 10)
    label(aws, "shoes", 10)
    monkeypatch.setenv("REFUND_SORTER_MODELS_TABLE", "no-such-table")  # the job cannot check its version's name
    assert main(["train", "--activate"]) != 0
    (line,) = messages(capsys.readouterr().err)
    assert line.startswith("refund-sorter train: TrainFunction failed: ")
