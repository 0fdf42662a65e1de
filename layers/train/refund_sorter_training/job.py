"""The training job on the stack (TrainFunction): learn from the bucket's labelled photos and every reviewed
Result, publish the model version, activate it only when asked.

What it returns is the summary ``refund-sorter train`` prints: ``{"ok": true, "version": ..., counts, metrics}``,
or ``{"ok": false, "error": {"code", "message"}}`` when the data cannot train a head (too few photos, none at
all): a person's problem to fix, answered as such rather than as a crashed function.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refund_sorter_training.data import StackData, stack_data
from refund_sorter_training.fit import Labelled, TrainingDataError, fit
from refund_sorter_training.report import write_report

if TYPE_CHECKING:
    from refund_sorter.config import Settings
    from refund_sorter.heads.model import Head
    from refund_sorter.storage.bucket import PhotoBucket
    from refund_sorter.storage.dynamodb import DynamoResultStore
    from refund_sorter_training.admin import ModelAdmin

logger = logging.getLogger(__name__)

NOT_ENOUGH_DATA = "not_enough_data"


def backbone_version(settings: Settings) -> str:
    """The backbone whose features the functions record (model.json next to the model; the training layer
    ships that file, not the 18 MB model)."""
    from refund_sorter.vision.classifier import ModelInfo

    return ModelInfo.from_model_path(settings.model_path).version


def fit_and_write(
    data: Labelled, settings: Settings, out: Path, *, sources: dict[str, Any], seed: int, backbone: str | None = None
) -> Head:
    """Fit a head on ``data`` and write the version folder (``head.npz``, ``version.json``, ``report.md`` and its
    two SVG pictures) to ``out``. ``backbone``: the features' model version (default: this runtime's)."""
    head = fit(
        data,
        backbone=backbone or backbone_version(settings),
        target_precision=settings.target_precision,
        gate=settings.not_a_product_gate,
        minimum=settings.min_photos_per_department,
        seed=seed,
        sources=sources,
    )
    head.save(out)
    write_report(head, out)
    return head


def train_on_stack(
    settings: Settings,
    bucket: PhotoBucket,
    store: DynamoResultStore,
    admin: ModelAdmin,
    *,
    activate: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Read, fit, publish (and activate when ``activate``); returns the summary (see the module docstring)."""
    started = time.perf_counter()
    data = stack_data(bucket, store, backbone_version(settings))
    counts = _counts(data)
    try:
        with tempfile.TemporaryDirectory(prefix="model-version-") as scratch:
            sources = {"labelled": counts["labelled"], "reviewed": counts["reviewed"], "bucket": bucket.name}
            if data.labelled_without_features:
                sources["labelled_without_features"] = data.labelled_without_features
            head = fit_and_write(data.combined(), settings, Path(scratch), sources=sources, seed=seed)
            version = admin.publish(Path(scratch))
    except TrainingDataError as exc:
        logger.warning("cannot train: %s", exc)
        return {"ok": False, "error": {"code": NOT_ENOUGH_DATA, "message": str(exc)}, **counts}
    if activate:
        admin.activate(version, by="training job")
    metrics = head.card["metrics"]
    summary = {
        "ok": True,
        "version": version,
        "active": activate,
        "departments": list(head.departments),
        **counts,
        "photos_per_department": head.card["training"]["photos_per_department"],
        "accuracy": metrics["accuracy"],
        "threshold": head.threshold,
        "coverage_at_threshold": metrics["coverage_at_threshold"],
        "precision_at_threshold": metrics["precision_at_threshold"],
        "target_precision": settings.target_precision,
        "location": f"s3://{admin.bucket}/{admin.key(version, '')}",
        "seconds": round(time.perf_counter() - started, 2),
    }
    logger.info("model version %s published%s", version, " and activated" if activate else "")
    return summary


def _counts(data: StackData) -> dict[str, Any]:
    return {
        "labelled": len(data.labelled.departments),
        "reviewed": len(data.reviewed.departments),
        "labelled_without_features": data.labelled_without_features,
        "reviewed_without_features": data.reviewed_without_features,
        "reviews_left_out": data.reviews_left_out,
    }
