"""The shipped ONNX model against golden logits recorded once from the PyTorch reference (make model)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from PIL import Image

from refund_sorter.config import DATA_DIR
from refund_sorter.vision.classifier import Classifier, softmax
from refund_sorter.vision.images import CROP_FRACTION, MODEL_SIZE, load_image, to_model_input
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
    (logits,) = session.run(["logits"], {session.get_inputs()[0].name: to_model_input(list(golden["pixels"]))})
    # THEN the logits agree to well within float32 noise and the ranking is the same
    assert len(golden["names"]) >= 5
    assert float(np.abs(logits - golden["logits"]).max()) < 1e-3
    for name, ours, theirs in zip(golden["names"], logits, golden["logits"], strict=True):
        assert list(np.argsort(ours)[::-1][:5]) == list(np.argsort(theirs)[::-1][:5]), name


def _reference_crop(data: bytes, fraction: float) -> np.ndarray:
    """golden.json's recipe ("preprocessing") with the square's side as ``fraction`` of the shorter side: a full
    decode (no JPEG draft), RGB, one bicubic resample of the centre square, offsets floored."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
    width, height = rgb.size
    side = round(min(width, height) * fraction)
    left, top = (width - side) // 2, (height - side) // 2
    box = (left, top, left + side, top + side)
    return np.asarray(rgb.resize((MODEL_SIZE, MODEL_SIZE), Image.Resampling.BICUBIC, box=box))


def test_the_reference_recipe_reproduces_the_golden_pixels(golden: dict[str, np.ndarray]) -> None:
    # The golden pixels were cut by the PyTorch reference (tools/model/reference.py) at the weights' training
    # crop, 224/256: the recipe above must give exactly them, so it is the reference's, not one made up here.
    for name, pixels in zip(golden["names"], golden["pixels"], strict=True):
        assert np.array_equal(_reference_crop(photo_bytes(str(name)), 224 / 256), pixels), name


def test_our_preprocessing_reproduces_the_reference_recipe(golden: dict[str, np.ndarray]) -> None:
    # The runtime frames a wider square than the weights were trained on (CROP_FRACTION says why); everything
    # else is the reference's recipe, which the test above ties to the golden pixels.
    assert CROP_FRACTION == 240 / 256
    for name in golden["names"]:
        data = photo_bytes(str(name))
        ours = load_image(data, max_bytes=50_000_000, max_pixels=64_000_000).astype(int)
        difference = np.abs(ours - _reference_crop(data, CROP_FRACTION).astype(int))
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


# ------------------------------------------------------------------------------------------ the embeddings output


def _final_gemm(proto: onnx.ModelProto) -> onnx.NodeProto:
    (gemm,) = [node for node in proto.graph.node if "logits" in node.output]
    return gemm


def test_the_embeddings_output_leaves_the_logits_bit_identical(golden: dict[str, np.ndarray]) -> None:
    # GIVEN the shipped graph and the same graph with only its logits output (as it was before the edit)
    proto = onnx.load(str(DATA_DIR / "efficientnet_lite0.onnx"))
    assert [o.name for o in proto.graph.output] == ["logits", "embeddings"]
    logits_only = onnx.ModelProto()
    logits_only.CopyFrom(proto)
    logits_only.graph.output.pop()
    batch = to_model_input(list(golden["pixels"]))
    # WHEN both run on the golden pixels
    both = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    single = ort.InferenceSession(logits_only.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, embeddings = both.run(["logits", "embeddings"], {"images": batch})
    (alone,) = single.run(["logits"], {"images": batch})
    # THEN the logits are the very same bits, and still match the PyTorch reference
    assert np.array_equal(logits, alone)
    assert float(np.abs(logits - golden["logits"]).max()) < 1e-3
    assert embeddings.shape == (len(batch), 1280)


def test_the_embeddings_are_what_the_last_layer_reads(sorter: Sorter, golden: dict[str, np.ndarray]) -> None:
    # GIVEN the final Gemm's weights, read from the graph itself
    proto = onnx.load(str(DATA_DIR / "efficientnet_lite0.onnx"))
    gemm = _final_gemm(proto)
    assert gemm.op_type == "Gemm" and gemm.input[0] == "embeddings"
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    w, b = weights[gemm.input[1]], weights[gemm.input[2]]
    trans_b = next((a.i for a in gemm.attribute if a.name == "transB"), 0)
    # WHEN the classifier returns both outputs for the golden pixels
    session = sorter.classifier.session
    logits, embeddings = session.run(["logits", "embeddings"], {"images": to_model_input(list(golden["pixels"]))})
    output = sorter.classifier.run(to_model_input(list(golden["pixels"])))
    # THEN embeddings @ W.T + b gives the logits, and they are the features PyTorch's last layer read
    recomputed = embeddings @ (w.T if trans_b else w) + b
    assert float(np.abs(recomputed - logits).max()) < 1e-4
    assert float(np.abs(embeddings - golden["embeddings"]).max()) < 1e-3
    assert output.embeddings is not None and np.array_equal(output.embeddings, embeddings)
    assert np.allclose(output.probabilities, softmax(logits))


def test_mirror_averaging_sees_a_photo_and_its_mirror_image_alike(sorter: Sorter) -> None:
    # GIVEN a photo and its mirror image
    crop = load_image(photo_bytes("skimage/chelsea"), max_bytes=50_000_000, max_pixels=64_000_000)
    batch = to_model_input([crop, crop[:, ::-1]])
    # WHEN both run with mirror averaging THEN they give the same probabilities and features (each is the average
    # of the same two views), unlike a plain run; and the average is of the plain run's two rows
    plain, mirrored = sorter.classifier.run(batch), sorter.classifier.run(batch, mirror=True)
    assert mirrored.embeddings is not None and plain.embeddings is not None
    assert np.abs(mirrored.probabilities[0] - mirrored.probabilities[1]).max() < 1e-5
    assert np.abs(mirrored.embeddings[0] - mirrored.embeddings[1]).max() < 1e-4
    assert np.abs(plain.probabilities[0] - plain.probabilities[1]).max() > 1e-3
    assert np.allclose(mirrored.embeddings[0], plain.embeddings.mean(axis=0), atol=1e-4)
