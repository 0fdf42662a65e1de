"""Record golden reference logits: the PyTorch model on real photos that ship inside pinned wheels.

Run from the repository root with the model venv::

    .venv-model/bin/python tools/model/record_golden.py

Writes ``tests/fixtures/golden/golden.npz`` (``names`` str[N], ``pixels`` uint8[N,224,224,3], ``logits``
float32[N,1000], ``embeddings`` float32[N,1280] (what the final linear layer reads), ``sizes`` int32[N,2] as
(width, height), ``crop_boxes`` int32[N,4] as PIL boxes) and
``golden.json`` (per photo: source, size, mode, crop box, top-5 labels with softmax probabilities).

The pixels are stored after crop and resize, before normalisation, so tests of the ONNX file need neither the
photos nor a decoder, and tests of the runtime's decoder can compare against them separately. The logits come
from PyTorch (the reference), never from the ONNX file under test.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:  # run as a module from the repository root: python -m tools.model.record_golden
    from tools.model import reference as ref
except ModuleNotFoundError:  # run as a file: python tools/model/record_golden.py (its folder is on sys.path)
    import reference as ref  # type: ignore[import-not-found, no-redef]

# A fixed timestamp for the zip members, so re-recording identical data gives identical bytes (no git churn).
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def reference_outputs(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch logits and pooled features for ``uint8[N,224,224,3]`` crops, one photo at a time.

    The features are the input of the final linear layer (``_fc``), caught with a forward hook.
    """
    model = ref.build_model(fp16_weights=ref.SHIPPED_FP16_WEIGHTS)
    caught: list[np.ndarray] = []
    hook = model._fc.register_forward_hook(lambda _module, inputs, _output: caught.append(inputs[0].numpy()[0]))
    rows = []
    with torch.no_grad():
        for crop in pixels:
            rows.append(model(torch.from_numpy(ref.normalise(crop[None]))).numpy()[0])
    hook.remove()
    return np.stack(rows).astype(np.float32), np.stack(caught).astype(np.float32)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` (``np.load`` reads it), but with fixed zip timestamps: reproducible bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())


def summary(
    photo: ref.Photo, size: tuple[int, int], mode: str, logits: np.ndarray, labels: list[str]
) -> dict[str, Any]:
    """Build the human-readable record of one photo for ``golden.json``."""
    probs = ref.softmax(logits)
    return {
        "name": photo.name,
        "source": f"{photo.package}/{photo.resource}",
        "size": list(size),
        "mode": mode,
        "crop_box": list(ref.crop_box(*size)),
        "top5": [{"index": i, "label": labels[i], "prob": round(float(probs[i]), 6)} for i in ref.top_k(logits)],
    }


def main(argv: list[str] | None = None) -> int:
    """Record the golden files; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=ref.GOLDEN_DIR, help="where to write (default: %(default)s)")
    args = parser.parse_args(argv)
    output_dir: Path = args.output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)

    loaded = [ref.load_photo(photo) for photo in ref.PHOTOS]
    pixels = np.stack([crop for crop, _, _ in loaded])
    sizes = np.array([size for _, size, _ in loaded], dtype=np.int32)
    logits, embeddings = reference_outputs(pixels)
    labels = ref.load_labels()

    save_npz(
        output_dir / ref.GOLDEN_NPZ_PATH.name,
        {
            "names": np.array([photo.name for photo in ref.PHOTOS]),
            "pixels": pixels,
            "logits": logits,
            "embeddings": embeddings,
            "sizes": sizes,
            "crop_boxes": np.array([ref.crop_box(*size) for size in sizes.tolist()], dtype=np.int32),
        },
    )
    records = [
        summary(photo, size, mode, row, labels)
        for photo, (_, size, mode), row in zip(ref.PHOTOS, loaded, logits, strict=True)
    ]
    document = {
        "model": ref.MODEL_NAME,
        "weights_sha256": ref.WEIGHTS_SHA256,
        "logits_from": "PyTorch reference (tools/model/reference.py), batch of 1, float32",
        "preprocessing": (
            "full decode (no JPEG draft), convert('RGB'), centre square of side round(short * 224 / 256) "
            "(Python round, offsets floored), one PIL BICUBIC resample of that box to 224x224; "
            "the model input is (pixels - 127) / 128 as float32 NCHW"
        ),
        "photos": records,
    }
    (output_dir / ref.GOLDEN_JSON_PATH.name).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")

    for record in records:
        best = record["top5"][0]
        print(f"{record['name']:<28} {best['label']:<28} {best['prob']:.4f}")
    print(f"wrote {len(records)} photos to {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
