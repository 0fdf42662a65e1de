"""A trained head and the files of a model version.

A model version is a folder (on disk, or ``models/<version>/`` in the bucket) holding:

``head.npz``
    ``weights`` ``float32[departments, 1280]`` and ``bias`` ``float32[departments]``: a multinomial logistic
    regression with the feature scaling folded in, so applying it is ``softmax(x @ weights.T + bias)``.
    Plain arrays, read with ``allow_pickle=False``: loading a version can never run code (style.md
    anti-pattern 4).
``version.json``
    the departments (in the order of the weights' rows), the backbone version the features came from, the
    auto-sort threshold, the not-a-product gate, how it was trained and its measured metrics.
``report.md`` and its pictures
    for people; the runtime never reads them.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from refund_sorter.errors import ErrorCode, RefundSorterError

if TYPE_CHECKING:
    from pathlib import Path

HEAD_FILE = "head.npz"
VERSION_FILE = "version.json"


class HeadError(RefundSorterError):
    """A model version that cannot be used: missing, malformed, or trained on another backbone."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.MODEL_ERROR, message)


@dataclass(frozen=True)
class Head:
    """A classification head over the backbone's pooled features.

    Parameters
    ----------
    version
        The model version's id (``models/<version>/``).
    departments
        The departments it predicts, in the order of the rows of ``weights``.
    weights, bias
        ``float32[departments, features]`` and ``float32[departments]``.
    backbone
        The backbone version (``Classifier.info.version``) whose features it was trained on.
    threshold
        Below this probability a photo waits for a person (chosen at training for a target precision).
    gate
        At or above this ImageNet not-a-product probability a photo waits for a person whatever the head
        says: a head only knows its departments, and would name one for a cat too.
    card
        The rest of ``version.json`` (training, metrics), as written.
    """

    version: str
    departments: tuple[str, ...]
    weights: np.ndarray
    bias: np.ndarray
    backbone: str
    threshold: float
    gate: float
    card: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        rows = len(self.departments)
        if rows < 2 or self.weights.shape[0] != rows or self.bias.shape != (rows,):
            raise HeadError(
                f"head {self.version}: {rows} departments but weights {self.weights.shape}, bias {self.bias.shape}"
            )
        if len(set(self.departments)) != rows:
            raise HeadError(f"head {self.version}: departments repeat: {self.departments}")

    @property
    def features(self) -> int:
        return int(self.weights.shape[1])

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """``float[N, features]`` → ``float32[N, departments]``: the softmax of the linear head."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.features:
            raise HeadError(f"head {self.version} takes {self.features} features, got shape {embeddings.shape}")
        logits = embeddings.astype(np.float32) @ self.weights.T + self.bias
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    # ------------------------------------------------------------------ files

    def head_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, weights=self.weights.astype(np.float32), bias=self.bias.astype(np.float32))
        return buffer.getvalue()

    def version_document(self) -> dict[str, Any]:
        return self.card | {
            "version": self.version,
            "departments": list(self.departments),
            "backbone": self.backbone,
            "threshold": self.threshold,
            "gate": {"not_a_product_at_least": self.gate},
            "features": self.features,
        }

    def version_bytes(self) -> bytes:
        return (json.dumps(self.version_document(), indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    def save(self, folder: Path) -> None:
        """Write ``head.npz`` and ``version.json`` into ``folder`` (the report is the trainer's)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / HEAD_FILE).write_bytes(self.head_bytes())
        (folder / VERSION_FILE).write_bytes(self.version_bytes())

    @classmethod
    def from_bytes(cls, version_json: bytes, head_npz: bytes) -> Head:
        """A head from the two files' contents (as read from S3 or disk)."""
        try:
            card = json.loads(version_json)
            with np.load(io.BytesIO(head_npz), allow_pickle=False) as arrays:
                weights, bias = arrays["weights"].astype(np.float32), arrays["bias"].astype(np.float32)
            return cls(
                version=str(card["version"]),
                departments=tuple(str(d) for d in card["departments"]),
                weights=weights,
                bias=bias,
                backbone=str(card["backbone"]),
                threshold=float(card["threshold"]),
                gate=float(card["gate"]["not_a_product_at_least"]),
                card=card,
            )
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise HeadError(f"not a model version (head.npz + version.json): {exc!r}") from exc

    @classmethod
    def load(cls, folder: Path) -> Head:
        """The model version in ``folder`` (what ``refund-sorter train --out`` wrote)."""
        missing = [name for name in (VERSION_FILE, HEAD_FILE) if not (folder / name).is_file()]
        if missing:
            raise HeadError(f"{folder} is not a model version: no {', '.join(missing)}")
        return cls.from_bytes((folder / VERSION_FILE).read_bytes(), (folder / HEAD_FILE).read_bytes())


_HEAD_MARK = "+head-"


def other_backbone(what: str, trained_on: str, running: str) -> str:
    """Why a head trained on another backbone's features is not used, and what to do about it."""
    return (
        f"{what} was trained on features of {trained_on}, but this model is {running}: its weights mean "
        "nothing to these features. Train a new version from the kept photos (`refund-sorter train` embeds the "
        "labelled photos again with this model first)"
    )


def model_version(backbone: str, head: Head | None) -> str:
    """What a Result names as its model: the backbone alone, or backbone and head version."""
    return backbone if head is None else f"{backbone}{_HEAD_MARK}{head.version}"


def made_by_a_head(model_version: str) -> bool:
    """Whether a Result's ``model_version`` names a custom head (so its thresholds were the head's)."""
    return _HEAD_MARK in model_version
