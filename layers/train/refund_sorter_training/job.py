"""The training job on the stack (TrainFunction): learn from the bucket's labelled photos and every reviewed
Result (the challenger), compare it with the active head (the champion) on held-out decisions neither was fitted
on, publish the version with that comparison in its ``version.json`` (``promotion``), and activate it when the
promotion rule says so (or a person asked). A failed training publishes and activates nothing.

What it returns is the summary ``refund-sorter train`` prints: ``{"ok": true, "version": ..., counts, metrics}``,
or ``{"ok": false, "error": {"code", "message"}}`` when the data cannot train a head (too few photos, none at
all): a person's problem to fix, answered as such rather than as a crashed function.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refund_sorter.errors import RefundSorterError, StorageError
from refund_sorter.results import utc_now
from refund_sorter_training.data import StackData, reviewed_results, stack_data
from refund_sorter_training.fit import Labelled, TrainingDataError, fit
from refund_sorter_training.promotion import PromotionRule, decide, evaluate, split_held_out
from refund_sorter_training.report import write_report

if TYPE_CHECKING:
    from refund_sorter.config import Settings
    from refund_sorter.heads.model import Head
    from refund_sorter.heads.registry import Pointer
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


def fit_head(
    data: Labelled, settings: Settings, *, sources: dict[str, Any], seed: int, backbone: str | None = None
) -> Head:
    """Fit and measure a head on ``data`` (``backbone``: the features' model version, default this runtime's)."""
    return fit(
        data,
        backbone=backbone or backbone_version(settings),
        target_precision=settings.target_precision,
        gate=settings.not_a_product_gate,
        minimum=settings.min_photos_per_department,
        seed=seed,
        sources=sources,
    )


def write_version(head: Head, out: Path) -> None:
    """The version folder: ``head.npz``, ``version.json``, ``report.md`` and its two SVG pictures."""
    head.save(out)
    write_report(head, out)


def fit_and_write(
    data: Labelled, settings: Settings, out: Path, *, sources: dict[str, Any], seed: int, backbone: str | None = None
) -> Head:
    """Fit a head on ``data`` and write the version folder to ``out``."""
    head = fit_head(data, settings, sources=sources, seed=seed, backbone=backbone)
    write_version(head, out)
    return head


def rule_of(settings: Settings) -> PromotionRule:
    return PromotionRule(
        auto_activate=settings.auto_activate,
        min_precision_delta=settings.promotion_min_precision_delta,
        min_share_delta=settings.promotion_min_share_delta,
    )


def train_on_stack(
    settings: Settings,
    bucket: PhotoBucket,
    store: DynamoResultStore,
    admin: ModelAdmin,
    *,
    activate: bool | None = None,
    seed: int = 0,
    nightly: bool = False,
) -> dict[str, Any]:
    """Read, fit the challenger, compare it with the champion, publish, and activate per the rule.

    Parameters
    ----------
    activate
        ``None``: the promotion rule decides (:mod:`.promotion`); ``True``: a person asked for it to be active
        (``train --activate``); ``False``: never (``train --no-activate``). Either way the comparison is recorded.
    nightly
        Run by the nightly state machine: skipped (``"skipped": true``) unless at least
        ``retrain_min_decisions`` decisions were made since the last version was trained.
    """
    started = time.perf_counter()
    began_at = utc_now().isoformat()
    last = admin.last_training()
    night: dict[str, Any] = {}
    if nightly:
        new, last_day = decision_counts(store, last.get("at"))
        night = {"new_decisions": new, "decisions_last_day": last_day}
        if new < settings.retrain_min_decisions:
            since = f"since version {last['version']} ({last['at']})" if last else "so far"
            reason = f"{new} new decisions {since}; retraining waits for {settings.retrain_min_decisions}"
            logger.info("not retraining: %s", reason)
            return {"ok": True, "skipped": True, "reason": reason, **night}
    champion_pointer = admin.pointer()  # read before the data: the verdict is about this champion
    data = stack_data(bucket, store, backbone_version(settings))
    held = split_held_out(data.reviewed.ids, fraction=settings.held_out_fraction, seed=settings.held_out_seed)
    training, held_out = data.hold_out(held)
    counts = _counts(data) | {"held_out": len(held_out.departments)}
    try:
        with tempfile.TemporaryDirectory(prefix="model-version-") as scratch:
            sources = {"labelled": counts["labelled"], "reviewed": len(training.reviewed.departments),
                       "bucket": bucket.name, "held_out_decisions": counts["held_out"]}  # fmt: skip
            if data.labelled_without_features:
                sources["labelled_without_features"] = data.labelled_without_features
            head = fit_head(training.combined(), settings, sources=sources, seed=seed)
            promotion = compare(head, champion_pointer, held_out, settings, admin, activate=activate)
            head = dataclasses.replace(head, card=head.card | {"promotion": promotion})
            write_version(head, Path(scratch))
            version = admin.publish(Path(scratch))
    except TrainingDataError as exc:
        logger.warning("cannot train: %s", exc)
        return {"ok": False, "error": {"code": NOT_ENOUGH_DATA, "message": str(exc)}, **counts}
    admin.record_training(began_at, version)
    if promotion["activated"]:
        promotion = _activate(admin, version, champion_pointer, promotion)
    metrics = head.card["metrics"]
    summary = {
        "ok": True,
        "version": version,
        "active": promotion["activated"],
        "promotion": promotion,
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
        **night,
    }
    logger.info("model version %s published%s: %s", version, " and activated" if summary["active"] else "",
                promotion["reason"])  # fmt: skip
    return summary


def compare(
    challenger: Head,
    pointer: Pointer,
    held_out: Labelled,
    settings: Settings,
    admin: ModelAdmin,
    *,
    activate: bool | None,
) -> dict[str, Any]:
    """The ``promotion`` record: both sides' scores on the same held-out decisions and the verdict."""
    target = settings.target_precision
    champion, note = None, ""
    if pointer.version is not None:
        try:
            active = admin.load(pointer.version)
        except RefundSorterError as exc:
            note = f"the active version {pointer.version} cannot be read ({exc.message}); "
        else:
            if active.backbone != challenger.backbone:
                note = f"the active version {pointer.version} was trained on another backbone ({active.backbone}); "
            else:
                champion = evaluate(active, held_out, target_precision=target)
    challenger_scores = evaluate(challenger, held_out, target_precision=target)
    verdict, reason = decide(champion, challenger_scores, rule_of(settings))
    if activate is not None:
        asked = "activated as a person asked" if activate else "kept inactive as a person asked"
        verdict, reason = activate, f"{asked} (the rule says: {reason})"
    return {
        "activated": verdict,
        "reason": note + reason,
        "champion": champion,
        "challenger": challenger_scores,
        "active_before": pointer.version,
    }


def _activate(admin: ModelAdmin, version: str, champion: Pointer, promotion: dict[str, Any]) -> dict[str, Any]:
    """Move the pointer only if it is still the champion's; if it moved meanwhile (a rollback, another
    activation), leave it alone and record why."""
    try:
        admin.activate(version, by="training job", expected=champion)
    except StorageError:
        now = admin.pointer().version
        why = f"the active version changed while training (from {champion.version} to {now})"
    except Exception as exc:
        # The pointer write failed (DynamoDB trouble): the pointer is as it was. Say so, then fail the job.
        admin.amend_promotion(version, _not_activated(promotion, f"activating failed: {exc}"))
        raise
    else:
        return promotion
    promotion = _not_activated(promotion, why)
    admin.amend_promotion(version, promotion)
    logger.warning("model version %s: %s", version, promotion["reason"])
    return promotion


def _not_activated(promotion: dict[str, Any], why: str) -> dict[str, Any]:
    return promotion | {"activated": False, "reason": f"not activated: {why}; the verdict was: {promotion['reason']}"}


def decision_counts(store: DynamoResultStore, since: str | None) -> tuple[int, int]:
    """Decisions in force made after ``since`` (ISO 8601; ``None``: all of them), and in the last 24 hours (the
    night's DecisionsMade metric). One filtered scan of the results (the table has no index by decision time)."""
    from datetime import datetime, timedelta

    after = datetime.fromisoformat(since) if since else None
    day_ago = utc_now() - timedelta(days=1)
    times = [r.review.at for r in reviewed_results(store) if r.review is not None]
    return sum(1 for at in times if after is None or at > after), sum(1 for at in times if at > day_ago)


def _counts(data: StackData) -> dict[str, Any]:
    return {
        "labelled": len(data.labelled.departments),
        "reviewed": len(data.reviewed.departments),
        "labelled_without_features": data.labelled_without_features,
        "reviewed_without_features": data.reviewed_without_features,
        "reviews_left_out": data.reviews_left_out,
    }
