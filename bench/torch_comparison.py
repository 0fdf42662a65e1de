"""PyTorch eager inference on the same crops, in ``.venv-model`` (PyTorch is never installed in ``.venv``):
``bench/torch_eager.py`` runs there; here its speed and its agreement with onnxruntime's logits."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from bench.common import MEASURED_VCPUS, ROOT
from bench.pipeline import INFERENCE_BATCH

if TYPE_CHECKING:
    from pathlib import Path

    from refund_sorter.vision.classifier import Classifier

MODEL_VENV_PYTHON: Final = ROOT / ".venv-model" / "bin" / "python"


def torch_eager(crops: list[np.ndarray], onnx_logits: np.ndarray, folder: Path) -> dict[str, Any]:
    """PyTorch eager inference in .venv-model (never installed in .venv), on the same crops."""
    if not MODEL_VENV_PYTHON.is_file():
        return {"skipped": "no .venv-model (make model creates it)"}
    probe = subprocess.run([str(MODEL_VENV_PYTHON), "-c", "import torch"], capture_output=True, check=False)
    if probe.returncode != 0:
        return {"skipped": ".venv-model has no torch"}
    crops_path = folder / "crops.npy"
    out_path = folder / "torch.json"
    np.save(crops_path, np.stack(crops))
    run = subprocess.run(
        [str(MODEL_VENV_PYTHON), "bench/torch_eager.py", str(crops_path), str(out_path), str(MEASURED_VCPUS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        return {"skipped": f"torch run failed: {run.stderr.strip()[-300:]}"}
    result: dict[str, Any] = json.loads(out_path.read_text())
    torch_logits = np.load(out_path.with_suffix(".npy"))
    top1 = np.array(result.pop("top1"))
    result["top1_agreement_with_onnx"] = float((top1 == onnx_logits.argmax(axis=1)).mean())
    result["max_abs_logit_difference_vs_onnx"] = float(np.abs(torch_logits - onnx_logits).max())
    return result


def onnx_logits(classifier: Classifier, crops: list[np.ndarray]) -> np.ndarray:
    from refund_sorter.vision.images import to_model_input

    session = classifier.session
    name = session.get_inputs()[0].name
    return np.concatenate(
        [
            session.run(None, {name: to_model_input(crops[i : i + INFERENCE_BATCH])})[0]
            for i in range(0, len(crops), INFERENCE_BATCH)
        ]
    )
