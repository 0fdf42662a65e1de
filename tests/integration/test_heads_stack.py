"""Custom heads on the local stack (moto): train from labelled/ + reviews, publish, activate, roll back, and
running functions (a Sorter, the API, the nightly batch) switching versions without a restart."""

from __future__ import annotations

import base64
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from refund_sorter.heads.active import ActiveHead
from refund_sorter.heads.model import HeadError
from refund_sorter.jobs.nightly import run_nightly
from refund_sorter.sources.files import photo_from_path
from refund_sorter.vision.sorter import Sorter, get_sorter
from refund_sorter_cli.commands import main
from refund_sorter_cli.local_stack import make_api_app
from refund_sorter_cli.model_admin import ModelCatalogue
from refund_sorter_training.admin import load_embeddings
from tests.conftest import CLOTHING
from tests.integration.conftest import LocalAws

DEPARTMENTS = ["hat", "pants", "shoes", "t-shirt"]


def registry_of(aws: LocalAws) -> ModelCatalogue:
    return ModelCatalogue(aws.settings, aws.s3, aws.dynamodb)


def hat_photo() -> Path:
    return sorted((CLOTHING / "hat").iterdir())[-1]


@pytest.mark.slow
def test_train_on_the_stack_from_labelled_photos_and_reviews(
    aws: LocalAws, sorter: Sorter, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN labelled photos in the bucket, and photos the nightly job classified that a person then reviewed:
    # two hats as "hat", and a shoe as the ImageNet taxonomy's "clothing" (a decision from before the head)
    for department in DEPARTMENTS:
        for photo in sorted((CLOTHING / department).iterdir())[:10]:
            aws.put_photo(f"labelled/{department}/{photo.name}", photo.read_bytes())
    for photo in [*sorted((CLOTHING / "hat").iterdir())[10:], sorted((CLOTHING / "shoes").iterdir())[-1]]:
        aws.put_photo(f"incoming/{photo.parent.name}-{photo.name}", photo.read_bytes())
    plain = Sorter(aws.settings, sorter.classifier, sorter.taxonomy)  # no head is active yet
    report = run_nightly(plain, aws.store, aws.bucket)
    assert report.classified + report.needs_review == 3
    reviewed = [
        aws.store.review(r.id, "hat" if "/hat-" in r.source else "clothing", by="tester")
        for r in aws.store.by_day(report_day(aws))
    ]
    # WHEN `refund-sorter train --no-activate` runs against the stack
    assert main(["train", "--no-activate"]) == 0
    out = capsys.readouterr().out
    # THEN it first embedded the 40 labelled photos (put without an S3 notification, as on the local stack), then
    # the training job used them and the two hat reviews (from the features kept when they were classified); the
    # review naming a department nobody labelled is left out
    assert "left out reviews naming departments without labelled photos: clothing (1)" in out
    assert "training on 40 labelled photos and 2 reviewed Results" in out
    assert "embedded 40 labelled photos that had no features yet" in out
    versions = list(registry_of(aws).versions())
    assert len(versions) == 1 and versions[0]["departments"] == DEPARTMENTS
    # 10 labelled + the 2 reviewed, less the decisions held out to compare versions on (never trained on)
    held = versions[0]["training"]["sources"]["held_out_decisions"]
    assert versions[0]["training"]["photos_per_department"]["hat"] == 12 - held
    assert versions[0]["training"]["sources"] == {
        "labelled": 40,
        "reviewed": 2 - held,
        "held_out_decisions": held,
        "bucket": aws.settings.bucket,
    }
    assert {r.id for r in reviewed} <= set(
        load_embeddings(aws.s3, aws.settings.bucket, ["embeddings/results/"], sorter.classifier.info.version)
    )
    # AND its threshold was set on the 40 labelled photos alone, not the reviews (Settings.threshold_from_labelled_only)
    assert versions[0]["training"]["holdout_photos"] == 40
    # AND nothing is active until a person says so
    assert registry_of(aws).pointer().version is None

    # WHEN it trains again THEN no labelled photo is decoded a second time
    assert main(["train", "--activate"]) == 0
    out = capsys.readouterr().out
    assert "had no features yet" not in out and "active: " in out
    assert len(aws.keys("embeddings/labelled/")) == 40  # one per photo version
    assert len(aws.keys("models/")) == 2 * 5  # version.json, head.npz, report.md and two pictures each

    # AND `models list/show/activate/rollback` act on the pointer
    first, second = (v["version"] for v in registry_of(aws).versions())
    assert registry_of(aws).pointer().version == second
    assert main(["models", "list"]) == 0
    assert f"active: {second}" in capsys.readouterr().out
    assert main(["models", "show", first]) == 0
    assert f"# Model version {first}" in capsys.readouterr().out
    assert main(["models", "activate", first]) == 0
    assert registry_of(aws).pointer().history == (second,)
    assert main(["models", "rollback"]) == 0
    assert registry_of(aws).pointer().version == second
    assert main(["models", "rollback"]) == 0
    assert registry_of(aws).pointer().version is None
    assert main(["models", "rollback"]) == 1  # nothing left to roll back
    assert main(["models", "activate", "no-such-version"]) == 1


def report_day(aws: LocalAws) -> str:
    from refund_sorter.results import utc_now

    return utc_now().date().isoformat()


def test_too_few_photos_on_the_stack_names_the_department(aws: LocalAws, capsys: pytest.CaptureFixture[str]) -> None:
    for department, count in (("hat", 10), ("shoes", 4)):
        for photo in sorted((CLOTHING / department).iterdir())[:count]:
            aws.put_photo(f"labelled/{department}/{photo.name}", photo.read_bytes())
    assert main(["train"]) == 2
    assert "'shoes' has 4" in capsys.readouterr().err
    assert aws.keys("models/") == []


def test_a_running_sorter_sees_a_version_switch_after_the_ttl(
    aws: LocalAws, sorter: Sorter, clothing_head: Path
) -> None:
    # GIVEN a published version and a Sorter whose pointer cache runs on our clock
    registry = registry_of(aws)
    version = registry.publish(clothing_head)
    now = [1000.0]
    running = Sorter(
        aws.settings,
        sorter.classifier,
        sorter.taxonomy,
        heads=ActiveHead(registry, sorter.classifier.info.version, ttl=60, clock=lambda: now[0]),
    )
    photo = photo_from_path(hat_photo(), aws.settings)
    before = running.classify_one(photo)
    assert before.model_version == sorter.classifier.info.version  # the ImageNet taxonomy
    assert before.prediction in sorter.taxonomy.department_ids
    # WHEN the version is activated
    registry.activate(version)
    # THEN the running Sorter keeps its cached answer until the TTL is over, then sorts with the head
    now[0] += 59
    assert running.classify_one(photo).model_version == before.model_version
    now[0] += 1
    after = running.classify_one(photo)
    assert after.model_version == f"{before.model_version}+head-{version}"
    assert after.prediction == "hat"
    assert [d.id for d in running.departments()] == DEPARTMENTS
    # AND a rollback reaches it the same way
    registry.rollback()
    now[0] += 60
    assert running.classify_one(photo).model_version == before.model_version


@pytest.fixture
def live_api(aws: LocalAws, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The local API with the process-wide Sorter rebuilt for this stack; the pointer is re-read every request."""
    from werkzeug.serving import make_server

    from refund_sorter.api.service import get_service

    monkeypatch.setenv("REFUND_SORTER_HEAD_POINTER_TTL_SECONDS", "0")
    get_sorter.cache_clear()
    get_service.cache_clear()
    server = make_server("127.0.0.1", 0, make_api_app(aws.template), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    get_sorter.cache_clear()
    get_service.cache_clear()


def test_the_api_and_the_batch_follow_the_active_version_without_a_restart(
    aws: LocalAws, live_api: str, clothing_head: Path
) -> None:
    registry = registry_of(aws)
    version = registry.publish(clothing_head)
    taxonomy = [d["id"] for d in requests.get(f"{live_api}/departments", timeout=30).json()]
    assert "electronics" in taxonomy
    body = {"image_base64": base64.b64encode(hat_photo().read_bytes()).decode()}

    # WHEN a version is activated while the API runs
    registry.activate(version)
    # THEN the departments, predictions and accepted reviews are the head's, and each prediction keeps features
    assert [d["id"] for d in requests.get(f"{live_api}/departments", timeout=30).json()] == DEPARTMENTS
    created = requests.post(f"{live_api}/predictions", json=body, timeout=30).json()
    assert created["prediction"] == "hat" and created["model_version"].endswith(f"+head-{version}")
    kept = load_embeddings(aws.s3, aws.settings.bucket, ["embeddings/results/"], get_sorter().classifier.info.version)
    assert kept[created["id"]].shape == (1280,)
    review = requests.patch(f"{live_api}/predictions/{created['id']}", json={"category": "shoes"}, timeout=30)
    assert review.status_code == 200 and review.json()["review"]["department"] == "shoes"
    refused = requests.patch(f"{live_api}/predictions/{created['id']}", json={"category": "electronics"}, timeout=30)
    assert refused.status_code == 422  # invalid_request: the one status for a request read but refused
    # AND the nightly batch in the same process sorts with it too, keeping one features file for its run
    aws.put_photo("incoming/hat.jpg", sorted((CLOTHING / "hat").iterdir())[0].read_bytes())
    before = set(aws.keys("embeddings/results/"))
    run_nightly(get_sorter(), aws.store, aws.bucket)
    (batch_result,) = [r for r in aws.store.by_day(report_day(aws)) if r.source.endswith("hat.jpg")]
    assert batch_result.model_version.endswith(f"+head-{version}")
    assert len(set(aws.keys("embeddings/results/")) - before) == 1

    # WHEN rolled back THEN the ImageNet taxonomy is back
    registry.rollback()
    assert [d["id"] for d in requests.get(f"{live_api}/departments", timeout=30).json()] == taxonomy


def test_a_version_trained_on_another_backbone_is_refused_at_activation(
    aws: LocalAws, clothing_head: Path, tmp_path: Path
) -> None:
    # GIVEN a published version whose features came from another backbone (e.g. trained before the model changed)
    other = tmp_path / "other-backbone"
    shutil.copytree(clothing_head, other)
    card = json.loads((other / "version.json").read_text(encoding="utf-8"))
    card |= {"version": card["version"] + "-lite2", "backbone": "efficientnet-lite2-0123456789ab"}
    (other / "version.json").write_text(json.dumps(card), encoding="utf-8")
    registry = registry_of(aws)
    version = registry.publish(other)
    # WHEN someone activates it THEN it is refused with what to do, and nothing points at it
    with pytest.raises(HeadError, match="trained on features of efficientnet-lite2-0123456789ab") as refused:
        registry.activate(version)
    assert "refund-sorter train" in refused.value.message
    assert registry.pointer().version is None
