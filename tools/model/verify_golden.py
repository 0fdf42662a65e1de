"""Check the shipped ONNX file(s) against the golden PyTorch logits, with ONNX Runtime on CPU.

Run from the repository root with the model venv::

    .venv-model/bin/python tools/model/verify_golden.py            # fp32 (and int8 if it exists)

For the fp32 file: max |logit difference| and identical top-5 per photo, failing past ``--tolerance``.
For the int8 file: top-1 agreement with fp32 and the logit error, reported only (quantisation is lossy).
Also re-runs the reference preprocessing on the photos and checks it still gives the stored pixels, so a
Pillow upgrade that changes resampling shows up here rather than as a mystery in the runtime's tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

try:  # run as a module from the repository root: python -m tools.model.verify_golden
    from tools.model import reference as ref
except ModuleNotFoundError:  # run as a file: python tools/model/verify_golden.py (its folder is on sys.path)
    import reference as ref  # type: ignore[import-not-found, no-redef]


def run_onnx(path: Path, pixels: np.ndarray) -> np.ndarray:
    """Logits from ONNX Runtime's CPU provider, one batch."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": ref.normalise(pixels)})
    return np.asarray(logits, dtype=np.float32)


def check_pixels(names: list[str], pixels: np.ndarray) -> bool:
    """Whether the reference preprocessing still reproduces the stored crops exactly."""
    by_name = {photo.name: photo for photo in ref.PHOTOS}
    ok = True
    for name, stored in zip(names, pixels, strict=True):
        crop, _, _ = ref.load_photo(by_name[name])
        if not np.array_equal(crop, stored):
            diff = int(np.max(np.abs(crop.astype(np.int16) - stored.astype(np.int16))))
            print(f"PIXELS DIFFER {name}: max |diff| {diff}")
            ok = False
    return ok


def main(argv: list[str] | None = None) -> int:
    """Compare and report; returns 1 if the fp32 file or the pixels disagree with the golden data."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", type=Path, default=ref.GOLDEN_NPZ_PATH)
    parser.add_argument("--model", type=Path, default=ref.ONNX_PATH)
    parser.add_argument("--int8", type=Path, default=ref.INT8_PATH, help="checked too when it exists")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |logit diff| for fp32")
    args = parser.parse_args(argv)

    with np.load(args.golden) as golden:
        names = [str(name) for name in golden["names"]]
        pixels, expected = golden["pixels"], golden["logits"]
    labels = ref.load_labels()
    ok = check_pixels(names, pixels)

    actual = run_onnx(args.model, pixels)
    probs = ref.softmax(actual)
    print(f"fp32 {args.model.name} ({args.model.stat().st_size:,} bytes) vs golden PyTorch logits")
    for i, name in enumerate(names):
        diff = float(np.max(np.abs(actual[i] - expected[i])))
        same_top5 = ref.top_k(actual[i]) == ref.top_k(expected[i])
        best = ref.top_k(actual[i], 1)[0]
        print(
            f"  {name:<28} max|diff| {diff:.2e}  top5 {'same' if same_top5 else 'DIFFERENT'}  "
            f"top1 {labels[best]} ({probs[i, best]:.4f})"
        )
        ok = ok and diff <= args.tolerance and same_top5
    print(f"  overall max|diff| {float(np.max(np.abs(actual - expected))):.2e}")

    if args.int8.exists():
        quantised = run_onnx(args.int8, pixels)
        agree = sum(ref.top_k(q, 1) == ref.top_k(f, 1) for q, f in zip(quantised, actual, strict=True))
        qprobs = ref.softmax(quantised)
        size = args.int8.stat().st_size
        print(f"int8 {args.int8.name} ({size:,} bytes) vs fp32: top-1 agrees on {agree}/{len(names)}")
        for i, name in enumerate(names):
            best, fbest = ref.top_k(quantised[i], 1)[0], ref.top_k(actual[i], 1)[0]
            overlap = len(set(ref.top_k(quantised[i])) & set(ref.top_k(actual[i])))
            print(
                f"  {name:<28} max|diff| {float(np.max(np.abs(quantised[i] - actual[i]))):.3f}  "
                f"top5 overlap {overlap}/5  top1 {labels[best]} ({qprobs[i, best]:.4f})"
                f"{'' if best == fbest else f'  [fp32: {labels[fbest]}]'}"
            )

    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
