"""Custom heads without AWS: `train DIR --out`, `classify --head`, the fit, the threshold, the pointer cache."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import pytest

from refund_sorter.errors import StorageError
from refund_sorter.heads.active import ActiveHead
from refund_sorter.heads.embeddings import UNRECORDED_BACKBONE, compact, from_bytes, to_bytes
from refund_sorter.heads.model import Head, HeadError
from refund_sorter.heads.registry import Pointer
from refund_sorter.vision.sorter import Sorter
from refund_sorter_cli.commands import main
from refund_sorter_cli.samples import photo_path
from refund_sorter_cli.training import sorter_with_head
from refund_sorter_training.fit import choose_threshold, fit_weights
from tests.conftest import CLOTHING

NOT_PRODUCTS = ("skimage/chelsea", "skimage/rocket", "sklearn/china")  # a cat, a rocket, a landscape


def test_train_writes_a_model_version_with_metrics_and_no_pickle(clothing_head: Path, sorter: Sorter) -> None:
    # GIVEN `refund-sorter train tests/fixtures/clothing --out DIR` (the session fixture ran it)
    card = json.loads((clothing_head / "version.json").read_text(encoding="utf-8"))
    # THEN the version names its departments, its backbone and its threshold, and carries its metrics
    assert card["departments"] == ["hat", "pants", "shoes", "t-shirt"]
    assert card["backbone"] == sorter.classifier.info.version
    assert 0 < card["threshold"] <= 1.000001
    metrics = card["metrics"]
    assert set(metrics["per_department"]) == set(card["departments"])
    assert {"precision", "recall", "f1", "support"} <= set(metrics["per_department"]["hat"])
    matrix = np.array(metrics["confusion"]["matrix"])
    assert matrix.shape == (4, 4) and matrix.sum() == metrics["holdout_photos"] == card["training"]["holdout_photos"]
    assert card["training"]["photos_per_department"] == {"hat": 12, "pants": 12, "shoes": 12, "t-shirt": 12}
    assert card["training"]["C"] in card["training"]["C_grid"]
    assert [row["threshold"] for row in metrics["coverage"]] == sorted(row["threshold"] for row in metrics["coverage"])
    # AND the head is plain arrays (loading can run no code), the report shows its two pictures
    with np.load(clothing_head / "head.npz", allow_pickle=False) as arrays:
        assert arrays["weights"].shape == (4, 1280) and arrays["bias"].shape == (4,)
    report = (clothing_head / "report.md").read_text(encoding="utf-8")
    for picture in ("confusion.svg", "coverage.svg"):
        assert f"]({picture})" in report
        svg = ElementTree.parse(clothing_head / picture).getroot()  # well-formed XML, or this raises
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    # the confusion matrix shows every held-out count and names every department
    confusion = (clothing_head / "confusion.svg").read_text(encoding="utf-8")
    assert all(f">{department}</text>" in confusion for department in card["departments"])
    assert confusion.count("<rect ") == matrix.size


def test_classify_with_a_head_names_learned_departments_and_still_knows_a_cat(
    clothing_head: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN three hats and three things that are no product at all
    hats = sorted((CLOTHING / "hat").iterdir())[:3]
    others = [photo_path(name) for name in NOT_PRODUCTS]
    # WHEN classified with the head
    main(["classify", "--head", str(clothing_head), "--json", *map(str, hats + others)])
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    version = json.loads((clothing_head / "version.json").read_text(encoding="utf-8"))["version"]
    # THEN hats are hats, every Result names backbone + head, and the cat, rocket and landscape wait for a person
    assert [r["prediction"] for r in results[:3]] == ["hat"] * 3
    assert all(r["model_version"].endswith(f"+head-{version}") for r in results)
    assert all(r["top_departments"][0]["department"] in {"hat", "pants", "shoes", "t-shirt"} for r in results)
    for result in results[3:]:
        assert (result["status"], result["review_reason"]) == ("needs_review", "not_a_product"), result["source"]
        assert result["department"] is None
        # AND each waiting one carries its place in the informative queue and why it is asked
        assert 0 <= result["priority"] <= 1 and "no product" in result["asked_because"]
    assert all(r["priority"] is None and r["asked_because"] is None for r in results if r["status"] == "classified")


def test_the_queue_order_takes_the_heads_taught_counts(clothing_head: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the head trained on 12 photos a department, and a priority that records what it was given
    from refund_sorter.heads import informative
    from refund_sorter.vision import sorter as sorter_module

    head = Head.load(clothing_head)
    assert sorter_module.taught_counts(head) == {"hat": 12, "pants": 12, "shoes": 12, "t-shirt": 12}
    assert sorter_module.taught_counts(None) is None
    given: list[Any] = []

    def priority(top: Any, *, taught: Any = None) -> float:
        given.append((list(top), taught))
        return 0.25

    monkeypatch.setattr(informative, "review_priority", priority)
    # WHEN a waiting photo's question is made THEN the priority saw its top departments and the taught counts
    top = [("hat", 0.5), ("shoes", 0.4)]
    made = sorter_module.asked(top, None, sorter_module.taught_counts(head))
    assert made["priority"] == 0.25 and given == [(top, {"hat": 12, "pants": 12, "shoes": 12, "t-shirt": 12})]
    assert "hat" in str(made["asked_because"])


def test_a_department_with_too_few_photos_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN 12 hats but only 3 shoes
    shutil.copytree(CLOTHING / "hat", tmp_path / "photos" / "hat")
    (tmp_path / "photos" / "shoes").mkdir()
    for photo in sorted((CLOTHING / "shoes").iterdir())[:3]:
        shutil.copy(photo, tmp_path / "photos" / "shoes")
    # WHEN training THEN it refuses, naming the department and its count, and writes nothing
    assert main(["train", str(tmp_path / "photos"), "--out", str(tmp_path / "out")]) == 2
    assert "'shoes' has 3" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_one_department_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(CLOTHING / "hat", tmp_path / "photos" / "hat")
    assert main(["train", str(tmp_path / "photos"), "--out", str(tmp_path / "out")]) == 2
    assert "at least two departments" in capsys.readouterr().err


def test_a_head_from_another_backbone_is_refused(clothing_head: Path, tmp_path: Path) -> None:
    copy = tmp_path / "other"
    shutil.copytree(clothing_head, copy)
    card = json.loads((copy / "version.json").read_text(encoding="utf-8"))
    (copy / "version.json").write_text(json.dumps(card | {"backbone": "efficientnet-lite0-000000000000"}))
    with pytest.raises(HeadError, match="trained on features of efficientnet-lite0-000000000000") as refused:
        sorter_with_head(copy)
    assert "refund-sorter train" in refused.value.message  # what to do about it


@pytest.mark.parametrize("bad", [b"{}", b"not json", b'{"version": "v"}'])
def test_a_malformed_version_is_a_head_error(clothing_head: Path, bad: bytes) -> None:
    with pytest.raises(HeadError):
        Head.from_bytes(bad, (clothing_head / "head.npz").read_bytes())


@pytest.mark.parametrize("classes", [2, 3])
def test_the_shipped_arrays_are_the_fitted_pipeline(classes: int) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # GIVEN separable-ish clusters in 1280 dimensions with very different scales per feature
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (classes, 1280))
    labels = np.repeat(np.arange(classes), 30)
    features = (centres[labels] + rng.normal(0, 2, (len(labels), 1280))) * rng.uniform(0.1, 5, 1280)
    # WHEN fitted and folded into plain arrays
    weights, bias, c_value = fit_weights(features, labels)
    head = Head("v", tuple(f"d{i}" for i in range(classes)), weights, bias, "backbone", threshold=0.5, gate=0.5)
    # THEN numpy's softmax(x W^T + b) is scikit-learn's predict_proba of the same model
    reference = make_pipeline(
        StandardScaler(), LogisticRegression(C=c_value, class_weight="balanced", max_iter=1000)
    ).fit(features, labels)
    assert np.abs(head.probabilities(features) - reference.predict_proba(features)).max() < 1e-3


def test_the_threshold_is_the_lowest_confidence_that_keeps_the_target_precision() -> None:
    # GIVEN ten photos, most confident first; the 4th and 8th are wrong
    confidence = np.array([0.99, 0.97, 0.95, 0.93, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([1, 1, 1, 0, 1, 1, 1, 0, 1, 1], dtype=bool)
    probabilities = np.stack([confidence, 1 - confidence], axis=1)
    labels = np.where(correct, 0, 1)
    # THEN 100 % precision holds down to 0.95; 85 % down to 0.8 (6 right of 7); 80 % down to 0.5 (8 of 10)
    assert choose_threshold(probabilities, labels, 1.0) == 0.95
    assert choose_threshold(probabilities, labels, 0.85) == 0.8
    assert choose_threshold(probabilities, labels, 0.8) == 0.5
    # AND when nothing reaches the target, nothing is auto-sorted
    assert choose_threshold(probabilities[3:4], labels[3:4], 0.98) > 1.0


def test_without_a_head_the_taxonomy_sorts_and_features_come_along(sorter: Sorter) -> None:
    from refund_sorter.sources.files import photo_from_path

    (outcome,) = sorter.classify([photo_from_path(photo_path("skimage/coffee"), sorter.settings)])
    assert outcome.result is not None and outcome.result.model_version == sorter.classifier.info.version
    assert outcome.result.prediction in sorter.taxonomy.department_ids
    assert outcome.embedding is not None and outcome.embedding.dtype == np.float16
    assert outcome.embedding.shape == (1280,) and outcome.embedding.nbytes == 2560


def test_kept_features_round_trip() -> None:
    features = np.random.default_rng(0).uniform(0, 6, (3, 1280)).astype(np.float32)
    kept = from_bytes(to_bytes(["a", "b", "c"], features, "efficientnet-lite2-0123456789ab"))
    assert list(kept) == ["a", "b", "c"]
    assert np.array_equal(kept["b"], compact(features[1]))


def test_kept_features_of_another_backbone_are_never_read_as_this_ones() -> None:
    # GIVEN features kept by Lite2, and a file written before files named their backbone (Lite0's, then)
    features = np.random.default_rng(0).uniform(0, 6, (2, 1280)).astype(np.float32)
    lite2 = to_bytes(["a", "b"], features, "efficientnet-lite2-0123456789ab")
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(["c"]), embeddings=compact(features[:1]))
    # WHEN a reader asks for one backbone's features THEN it gets only files of that backbone
    assert from_bytes(lite2, "efficientnet-lite0-b36a82426b51") == {}
    assert list(from_bytes(lite2, "efficientnet-lite2-0123456789ab")) == ["a", "b"]
    assert list(from_bytes(buffer.getvalue(), UNRECORDED_BACKBONE)) == ["c"]
    assert from_bytes(buffer.getvalue(), "efficientnet-lite2-0123456789ab") == {}


# ------------------------------------------------------------------------------------------- the pointer cache


class FakeRegistry:
    """Just the two calls ActiveHead makes; moto-backed behaviour is in tests/integration/test_heads_stack.py."""

    def __init__(self, heads: dict[str, Head]) -> None:
        self.heads = heads
        self.version: str | None = None
        self.pointer_reads = 0
        self.failing = False

    def pointer(self) -> Pointer:
        self.pointer_reads += 1
        if self.failing:
            raise StorageError("throttled")
        return Pointer(self.version)

    def load(self, version: str) -> Head:
        return self.heads[version]


def _head(version: str, backbone: str = "bb") -> Head:
    rng = np.random.default_rng(0)
    return Head(
        version,
        ("a", "b"),
        rng.normal(size=(2, 1280)).astype(np.float32),
        np.zeros(2, np.float32),
        backbone,
        threshold=0.5,
        gate=0.5,
    )


def test_the_pointer_is_read_again_only_after_its_ttl() -> None:
    registry = FakeRegistry({"v1": _head("v1"), "v2": _head("v2")})
    now = [0.0]
    active = ActiveHead(registry, "bb", ttl=60, clock=lambda: now[0])  # type: ignore[arg-type]
    assert active.current() is None
    registry.version = "v1"
    now[0] = 59.9
    assert active.current() is None and registry.pointer_reads == 1  # still trusting the first read
    now[0] = 60.0
    assert _version(active) == "v1"
    registry.version, registry.failing = "v2", True
    now[0] = 130
    assert _version(active) == "v1"  # storage trouble: keep sorting with what we have
    registry.failing = False
    now[0] = 190
    assert _version(active) == "v2"


def test_a_version_for_another_backbone_is_not_used(caplog: pytest.LogCaptureFixture) -> None:
    registry = FakeRegistry({"v1": _head("v1", backbone="other")})
    registry.version = "v1"
    assert ActiveHead(registry, "bb", ttl=0).current() is None  # type: ignore[arg-type]
    assert "model version v1 was trained on features of other, but this model is bb" in caplog.text


def _version(active: ActiveHead) -> Any:
    head = active.current()
    return head.version if head else None
