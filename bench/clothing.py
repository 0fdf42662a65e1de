"""clothing-small (``../shared/datasets/clothing-small/{train,validation}/<class>/*.jpg``): its layout, a head
trained on it exactly as ``refund-sorter train`` trains one, and how a head and the ImageNet taxonomy are scored
on it. Shared by :mod:`bench.accuracy` and :mod:`bench.preprocessing`."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from bench.common import ROOT

if TYPE_CHECKING:
    from pathlib import Path

    from refund_sorter.config import Settings
    from refund_sorter.heads.model import Head

DEFAULT_DATASETS: Final = ROOT.parent / "shared" / "datasets"
THREE_WAY: Final = {"hat": "hat", "shoes": "shoes"}  # every other class is "clothing"


def clothing_small(datasets: Path, command: str) -> Path | None:
    """``datasets/clothing-small`` when its train/ and validation/ are there; otherwise ``None``, after saying so
    (a user's clone has no ../shared: a benchmark then measures nothing and exits 0)."""
    dataset = datasets / "clothing-small"
    if (dataset / "train").is_dir() and (dataset / "validation").is_dir():
        return dataset
    print(f"{command}: no dataset at {dataset} (../shared/datasets next to the repo); nothing measured")
    return None


def three_way(department: str) -> str:
    return THREE_WAY.get(department, "clothing")


def list_split(folder: Path) -> list[tuple[str, Path]]:
    return [(c.name, p) for c in sorted(folder.iterdir()) if c.is_dir() for p in sorted(c.glob("*.jpg"))]


def train_head(train: dict[str, Any], backbone: str, settings: Settings) -> Head:
    """A head fitted on ``train`` (features, labels, not-a-product probabilities) as the CLI fits one."""
    from refund_sorter_training.fit import Labelled, fit

    return fit(
        Labelled(train["features"], train["labels"].tolist(), not_a_product=train["not_a_product"]),
        backbone=backbone,
        target_precision=settings.target_precision,
        gate=settings.not_a_product_gate,
        minimum=settings.min_photos_per_department,
    )


def evaluate_head(head: Any, data: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """The head as the Sorter applies it (threshold, gate) on validation/: top-1, per class, coverage."""
    from refund_sorter_training.fit import scores_by_department

    probabilities = head.probabilities(data["features"])
    predicted = np.array(head.departments)[probabilities.argmax(axis=1)]
    truth = data["labels"]
    confidence = probabilities.max(axis=1)
    gated = data["not_a_product"] >= head.gate
    auto = (confidence >= head.threshold) & ~gated
    return {
        "top1": round(float((predicted == truth).mean()), 4),
        "per_class": scores_by_department(truth, predicted, classes, classes),
        "threshold": head.threshold,
        "auto_sorted": round(float(auto.mean()), 4),
        "auto_sorted_precision": round(float((predicted[auto] == truth[auto]).mean()), 4) if auto.any() else None,
        "gated_as_not_a_product": round(float(gated.mean()), 4),
        "three_way_accuracy": round(
            float(np.mean([three_way(p) == three_way(t) for p, t in zip(predicted, truth, strict=True)])), 4
        ),
        "hat_recall": round(float((predicted[truth == "hat"] == "hat").mean()), 4),
        "hats_auto_sorted_as_hat": int(((predicted == "hat") & (truth == "hat") & auto).sum()),
        "hats": int((truth == "hat").sum()),
    }


def evaluate_taxonomy(data: dict[str, Any]) -> dict[str, Any]:
    """The shipped ImageNet taxonomy on the same photos: clothing/shoes is all it can say (no hat department)."""
    truth = data["labels"]
    expected = np.array(["shoes" if t == "shoes" else "clothing" for t in truth])  # hats count as clothing here
    predicted = data["taxonomy"]
    auto = data["taxonomy_status"] == "classified"
    three = np.array([three_way(t) for t in truth])
    return {
        "two_way_accuracy_clothing_or_shoes": round(float((predicted == expected).mean()), 4),
        "three_way_accuracy": round(float((predicted == three).mean()), 4),  # never says "hat"
        "auto_sorted": round(float(auto.mean()), 4),
        "auto_sorted_precision_two_way": round(float((predicted[auto] == expected[auto]).mean()), 4),
        "hats_auto_sorted": int((auto & (truth == "hat")).sum()),
        "hats_auto_sorted_right_two_way": int((auto & (truth == "hat") & (predicted == "clothing")).sum()),
        "hats": int((truth == "hat").sum()),
        "predictions": dict(Counter(predicted.tolist()).most_common()),
        "top1_ten_classes": "n/a: the taxonomy has no department per clothing class",
    }
