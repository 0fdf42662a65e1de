"""Quantise the fp32 ONNX classifier to int8 (QDQ) for the CPU-latency benchmark.

Run from the repository root with the model venv, after ``export_model.py``::

    .venv-model/bin/python tools/model/quantize_int8.py

Writes ``out/model/efficientnet_lite0.int8.onnx``: static quantisation in QDQ format,
per-channel int8 weights, uint8 activations, same interface as the fp32 file (``images`` → ``logits``, float32).
Calibration uses seeded random crops and flips of real photos shipped in wheels (the golden photos plus a few
more), so the ranges see varied real content and the result is reproducible. ``verify_golden.py`` reports the
int8 file's agreement with fp32 on the golden photos.

Measured caveat: ONNX Runtime's int8 kernels for uint8 activations by int8 weights can saturate on x86 CPUs
without VNNI (AVX2 only, like this project's machines), so there the int8 file tracks fp32 much worse than the
same graph evaluated exactly. ``--weight-type quint8`` avoids that; the default follows the benchmark's brief.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image

try:  # run as a module from the repository root: python -m tools.model.quantize_int8
    from tools.model import reference as ref
except ModuleNotFoundError:  # run as a file: python tools/model/quantize_int8.py (its folder is on sys.path)
    import reference as ref  # type: ignore[import-not-found, no-redef]

# More shipped photos that are not in the golden set, so calibration is not only the evaluation images.
EXTRA_PHOTOS: tuple[ref.Photo, ...] = (
    ref.Photo("skimage/motorcycle_right", "skimage", "data/motorcycle_right.png"),
    ref.Photo("skimage/retina", "skimage", "data/retina.jpg"),
    ref.Photo("skimage/ihc", "skimage", "data/ihc.png"),
    ref.Photo("skimage/color", "skimage", "data/color.png"),
    ref.Photo("skimage/brick", "skimage", "data/brick.png"),
    ref.Photo("skimage/coins", "skimage", "data/coins.png"),
)

FLIP_PROBABILITY = 0.5
WEIGHT_TYPES = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}


def random_crops(count: int, seed: int) -> list[np.ndarray]:
    """``count`` uint8[224,224,3] crops: each a random square (40 to 100% of the short side), maybe mirrored.

    Starts with the reference centre crop of every photo, so the ranges cover exactly what the runtime sees.
    """
    rng = np.random.default_rng(seed)
    images: list[Image.Image] = []
    for photo in (*ref.PHOTOS, *EXTRA_PHOTOS):
        with Image.open(photo.path()) as opened:
            images.append(opened.convert("RGB"))
    crops = [ref.preprocess(image) for image in images]
    while len(crops) < count:
        image = images[int(rng.integers(len(images)))]
        width, height = image.size
        side = max(1, int(min(width, height) * rng.uniform(0.4, 1.0)))
        left, top = int(rng.integers(width - side + 1)), int(rng.integers(height - side + 1))
        size = (ref.INPUT_SIZE, ref.INPUT_SIZE)
        crop = image.resize(size, Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
        if rng.random() < FLIP_PROBABILITY:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crops.append(np.asarray(crop, dtype=np.uint8))
    return crops[:count]


class PhotoReader(CalibrationDataReader):
    """Feeds the calibration crops to ONNX Runtime's calibrator, one normalised image per call."""

    def __init__(self, crops: list[np.ndarray]) -> None:
        """Normalise every crop up front: calibration reads each once."""
        self._batches = iter([{"images": ref.normalise(crop[None])} for crop in crops])

    def get_next(self) -> dict[str, np.ndarray] | None:
        """Return the next input feed, or ``None`` when calibration data runs out."""
        return next(self._batches, None)


def main(argv: list[str] | None = None) -> int:
    """Quantise; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ref.ONNX_PATH, help="fp32 input (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=ref.INT8_PATH, help="int8 output (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=100, help="calibration images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--weight-type",
        choices=sorted(WEIGHT_TYPES),
        default="qint8",
        help="qint8 (default) is exact on CPUs with VNNI; on AVX2-only CPUs ONNX Runtime's u8s8 kernels can "
        "saturate, and quint8 weights avoid that",
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    crops = random_crops(args.samples, args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        # ORT's recommended pre-pass: shape inference (needed for per-channel axes) and graph optimisation.
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(args.model), str(prepared))
        partial = Path(scratch) / "int8.onnx"
        quantize_static(
            str(prepared),
            str(partial),
            PhotoReader(crops),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=WEIGHT_TYPES[args.weight_type],
            calibrate_method=CalibrationMethod.MinMax,
        )
        args.output.parent.mkdir(parents=True, exist_ok=True)
        partial.replace(args.output)
    seconds = time.perf_counter() - started
    print(f"int8:   {args.output} ({args.output.stat().st_size:,} bytes) from {len(crops)} crops in {seconds:.1f} s")
    print(f"sha256: {ref.sha256_file(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
