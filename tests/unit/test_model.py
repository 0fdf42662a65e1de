"""The shipped ONNX model against golden logits recorded once from the PyTorch reference (make model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from refund_sorter.config import DATA_DIR
from refund_sorter.vision.classifier import Classifier, softmax
from refund_sorter.vision.images import load_image, to_model_input
from refund_sorter.vision.sorter import Sorter
from refund_sorter_cli.samples import photo_bytes

GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden"


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "golden.npz") as data:
        return {key: data[key] for key in data.files}


def test_onnx_logits_match_the_pytorch_reference(sorter: Sorter, golden: dict[str, np.ndarray]) -> None:
    # GIVEN the exact pixels the reference saw WHEN the ONNX model runs on them
    session = sorter.classifier.session
    (logits,) = session.run(None, {session.get_inputs()[0].name: to_model_input(list(golden["pixels"]))})
    # THEN the logits agree to well within float32 noise and the ranking is the same
    assert len(golden["names"]) >= 5
    assert float(np.abs(logits - golden["logits"]).max()) < 1e-3
    for name, ours, theirs in zip(golden["names"], logits, golden["logits"], strict=True):
        assert list(np.argsort(ours)[::-1][:5]) == list(np.argsort(theirs)[::-1][:5]), name


def test_our_preprocessing_reproduces_the_reference_pixels(golden: dict[str, np.ndarray]) -> None:
    for name, pixels in zip(golden["names"], golden["pixels"], strict=True):
        ours = load_image(photo_bytes(str(name)), max_bytes=50_000_000, max_pixels=64_000_000).astype(int)
        difference = np.abs(ours - pixels.astype(int))
        if str(name).endswith(("rocket", "china", "flower", "grace_hopper", "hubble_deep_field")):
            # JPEGs: we decode at a reduced DCT scale (draft), the reference decoded fully.
            assert difference.mean() < 4, name
        else:
            assert difference.max() <= 1, name


def test_top_labels_are_sensible(sorter: Sorter) -> None:
    crops = [
        load_image(photo_bytes(n), max_bytes=50_000_000, max_pixels=64_000_000)
        for n in ("skimage/coffee", "skimage/chelsea")
    ]
    probabilities = sorter.classifier.probabilities(to_model_input(crops))
    labels = sorter.taxonomy.labels
    assert labels[int(probabilities[0].argmax())] == "espresso"
    assert probabilities[0].max() > 0.9
    assert "cat" in labels[int(probabilities[1].argmax())]


def test_model_metadata_names_the_artifact() -> None:
    meta = json.loads((DATA_DIR / "model.json").read_text(encoding="utf-8"))
    info = Classifier(DATA_DIR / "efficientnet_lite0.onnx").info
    assert info.version.endswith(meta["sha256"][:12])


def test_softmax_is_stable_for_large_logits() -> None:
    probabilities = softmax(np.array([[1000.0, 1000.0, -1000.0]], dtype=np.float32))
    assert probabilities.sum() == pytest.approx(1.0)
    assert probabilities[0, 0] == pytest.approx(0.5)
