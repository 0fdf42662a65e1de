"""Real photos that ship inside PyPI wheels (scikit-image, scikit-learn, matplotlib): no downloads.

The demo, the benchmark and the tests use them; they need the dev extra (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import io
from importlib.resources import files
from pathlib import Path

from PIL import Image

# name → (package, file). The names double as stable ids in golden files and benchmark corpora.
PHOTOS: dict[str, tuple[str, str]] = {
    "skimage/coffee": ("skimage.data", "coffee.png"),
    "skimage/chelsea": ("skimage.data", "chelsea.png"),
    "skimage/astronaut": ("skimage.data", "astronaut.png"),
    "skimage/rocket": ("skimage.data", "rocket.jpg"),
    "skimage/motorcycle_left": ("skimage.data", "motorcycle_left.png"),
    "skimage/camera": ("skimage.data", "camera.png"),
    "skimage/hubble_deep_field": ("skimage.data", "hubble_deep_field.jpg"),
    "sklearn/china": ("sklearn.datasets.images", "china.jpg"),
    "sklearn/flower": ("sklearn.datasets.images", "flower.jpg"),
    "matplotlib/grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "matplotlib/present": ("matplotlib", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png"),
    "skimage/clock": ("skimage.data", "clock_motion.png"),
}


def photo_path(name: str) -> Path:
    package, relative = PHOTOS[name]
    return Path(str(files(package) / relative))


def photo_bytes(name: str) -> bytes:
    return photo_path(name).read_bytes()


def photo_image(name: str) -> Image.Image:
    with Image.open(photo_path(name)) as image:
        return image.convert("RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()
