"""The human-readable report of a model version: ``report.md`` with two pictures (matplotlib PNGs).

Written next to ``head.npz`` and ``version.json`` from the very metrics the version carries, so the report a
person reads is the one that was measured (style.md, "Model artifacts are versioned data").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from refund_sorter.heads.model import Head

REPORT_FILE = "report.md"
CONFUSION_PICTURE = "confusion.png"
COVERAGE_PICTURE = "coverage.png"


def write_report(head: Head, folder: Path) -> Path:
    """Write ``report.md``, ``confusion.png`` and ``coverage.png`` into ``folder``; returns the report's path."""
    metrics = head.card["metrics"]
    training = head.card["training"]
    draw_confusion(metrics["confusion"], folder / CONFUSION_PICTURE)
    draw_coverage(metrics["coverage"], head.threshold, folder / COVERAGE_PICTURE)
    lines = [
        f"# Model version {head.version}",
        "",
        f"Backbone `{head.backbone}`; {len(head.departments)} departments; trained {head.card['created_at']} on "
        f"{training['train_photos']} photos, measured on {training['holdout_photos']} held-out photos "
        f"(stratified, never seen by the head measured). {training['model']}, C = {training['C']} chosen by "
        f"{training['cv_folds']}-fold cross-validation; the head shipped is refit with it on all "
        f"{training['photos']} photos; fitting took {training['fit_seconds']} s.",
        "",
        f"**Accuracy {metrics['accuracy']:.1%}.** "
        + (
            f"Photos with confidence ≥ **{head.threshold:.3f}** are sorted automatically (chosen for "
            f"{head.card['target_precision']:.0%} precision): {metrics['coverage_at_threshold']:.1%} of the held-out "
            f"photos, {metrics['precision_at_threshold']:.1%} of them right."
            if metrics["precision_at_threshold"] is not None
            else f"No confidence threshold reached {head.card['target_precision']:.0%} precision on the held-out "
            "photos, so every photo waits for a person: add labelled photos (or reviews) and train again."
        ),
        f"A photo whose ImageNet not-a-product probability is ≥ {head.gate} (an animal, a landscape, a rocket) "
        "waits for a person whatever the head says"
        + (
            f"; on the held-out photos that sends {metrics['gate_sends_to_review']:.1%} to review."
            if "gate_sends_to_review" in metrics
            else "."
        ),
        "",
        "| department | photos | precision | recall | F1 | held out |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for department, scores in metrics["per_department"].items():
        lines.append(
            f"| {department} | {training['photos_per_department'][department]} | {scores['precision']:.2f} | "
            f"{scores['recall']:.2f} | {scores['f1']:.2f} | {scores['support']} |"
        )
    lines += [
        "",
        "## Confusion matrix (held-out photos)",
        "",
        f"![confusion matrix]({CONFUSION_PICTURE})",
        "",
        "## Coverage and accuracy by threshold",
        "",
        f"![coverage curve]({COVERAGE_PICTURE})",
        "",
        "| threshold | auto-sorted | accuracy of those |",
        "|---:|---:|---:|",
    ]
    for row in metrics["coverage"]:
        accuracy = "–" if row["accuracy"] is None else f"{row['accuracy']:.1%}"
        mark = " ← chosen" if abs(row["threshold"] - head.threshold) < 1e-6 else ""
        lines.append(f"| {row['threshold']:.3f}{mark} | {row['coverage']:.1%} | {accuracy} |")
    path = folder / REPORT_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def draw_confusion(confusion: dict[str, Any], path: Path) -> None:
    import numpy as np

    plt = _pyplot()
    labels, matrix = confusion["labels"], np.array(confusion["matrix"])
    size = 1.6 + 0.55 * len(labels)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true department")
    peak = matrix.max() or 1
    for (row, column), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if count > peak / 2 else "black"
            axes.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)


def draw_coverage(rows: list[dict[str, Any]], threshold: float, path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    thresholds = [r["threshold"] for r in rows]
    axes.plot(thresholds, [r["coverage"] for r in rows], marker="o", label="share auto-sorted")
    accurate = [(r["threshold"], r["accuracy"]) for r in rows if r["accuracy"] is not None]
    axes.plot([t for t, _ in accurate], [a for _, a in accurate], marker="s", label="accuracy of those")
    if threshold <= 1.0:  # above 1: no threshold reached the target precision, nothing is auto-sorted
        axes.axvline(threshold, color="grey", linestyle="--", label=f"chosen threshold {threshold:.3f}")
    axes.set_xlabel("confidence threshold")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)
