"""The ONNX classifier: one onnxruntime session per process, created on first use and reused.

Lambda keeps the process warm between invocations, so the session (≈50 ms to create) is paid once per
cold start; the API only pays it when it first classifies, not when it serves /health or a stored result.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from refund_sorter.errors import ErrorCode, RefundSorterError

if TYPE_CHECKING:
    from pathlib import Path

    import onnxruntime

# The model's outputs (tools/model/export_model.py names the first, tools/model/expose_embeddings.py the second).
LOGITS = "logits"
EMBEDDINGS = "embeddings"


@dataclass(frozen=True)
class ModelInfo:
    """What model.json (written by ``make model``) says about the artifact next to it."""

    name: str
    version: str
    # The side of the square the model takes (model.json's input.size): 224 for Lite0, 240 Lite1, 260 Lite2.
    input_size: int = 224

    @classmethod
    def from_model_path(cls, model_path: Path) -> ModelInfo:
        """Read model.json next to ``model_path``.

        The version is the file's content hash, so a Result names exactly the weights that produced it.
        model.json records the hash of each file ``make model`` writes (hashing 19 MB at every cold start
        would cost ~20 ms); any other file is hashed here.
        """
        from refund_sorter.config import DATA_DIR

        # A model made elsewhere (e.g. the benchmark's int8 variant) describes the same network as ours.
        meta_path = next(p for p in (model_path.parent / "model.json", DATA_DIR / "model.json") if p.is_file())
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        known = meta.get("files", {}).get(model_path.name) or (
            meta["sha256"] if model_path.name == meta.get("file", "efficientnet_lite0.onnx") else None
        )
        digest = known or hashlib.sha256(model_path.read_bytes()).hexdigest()
        stem = model_path.name.removesuffix(".onnx").replace("efficientnet_lite0", meta["name"]).replace("_", "-")
        size = int(meta.get("input", {}).get("size", 224))
        return cls(name=meta["name"], version=f"{stem}-{digest[:12]}", input_size=size)


class Classifier:
    """ImageNet probabilities for batches of preprocessed images.

    Parameters
    ----------
    model_path
        The ``.onnx`` file; ``model.json`` sits next to it.
    intra_op_threads
        onnxruntime's thread count; 0 lets it use one per core.
    """

    def __init__(self, model_path: Path, intra_op_threads: int = 0) -> None:
        self.model_path = model_path
        self.intra_op_threads = intra_op_threads
        self.info = ModelInfo.from_model_path(model_path)
        self._lock = threading.Lock()

    @cached_property
    def session(self) -> onnxruntime.InferenceSession:
        import onnxruntime  # imported here so routes that never classify don't pay for it at cold start

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning worker threads collapse under a noisy neighbour (2.3 → 8.5 ms per batch measured here),
        # and Lambda's vCPUs are exactly that.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return onnxruntime.InferenceSession(
                str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise RefundSorterError(ErrorCode.MODEL_ERROR, f"cannot load the model {self.model_path}: {exc}") from exc

    def warm_up(self) -> None:
        """Create the session now (at init time in Lambda, where the CPU is unthrottled)."""
        with self._lock:
            _ = self.session

    def run(self, batch: np.ndarray, *, mirror: bool = False) -> ModelOutput:
        """Class probabilities and pooled features for a ``float32[N, 3, S, S]`` batch, in one model call.

        The features come free: they are the input of the model's last layer, exposed as a second output
        (``tools/model/expose_embeddings.py``). A model without that output (an older or quantised file)
        gives ``embeddings=None``. With ``mirror``, each photo's mirror image runs in the same call and the
        photo's probabilities and features are the averages of the two (test-time flip averaging).
        """
        with self._lock:  # cached_property is not thread-safe on first access
            session = self.session
        names = [LOGITS] + ([EMBEDDINGS] if self.has_embeddings else [])
        count = len(batch)
        if mirror:
            batch = np.concatenate([batch, batch[..., ::-1]])
        outputs = session.run(names, {session.get_inputs()[0].name: batch})
        probabilities = softmax(np.asarray(outputs[0], dtype=np.float32))
        embeddings = np.asarray(outputs[1], dtype=np.float32) if len(outputs) > 1 else None
        if mirror:
            probabilities = (probabilities[:count] + probabilities[count:]) * np.float32(0.5)
            embeddings = None if embeddings is None else (embeddings[:count] + embeddings[count:]) * np.float32(0.5)
        return ModelOutput(probabilities, embeddings)

    @cached_property
    def has_embeddings(self) -> bool:
        return EMBEDDINGS in {output.name for output in self.session.get_outputs()}

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Softmax over the 1000 classes for a ``float32[N, 3, S, S]`` batch."""
        return self.run(batch).probabilities


@dataclass(frozen=True)
class ModelOutput:
    """What one model call gives: ``probabilities`` ``float32[N, 1000]`` (softmax of the logits) and
    ``embeddings`` ``float32[N, 1280]``, the pooled features a custom head is trained on."""

    probabilities: np.ndarray
    embeddings: np.ndarray | None


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
