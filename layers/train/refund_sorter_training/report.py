"""The human-readable report of a model version: ``report.md`` with two pictures (SVG).

Written next to ``head.npz`` and ``version.json`` from the very metrics the version carries, so the report a
person reads is the one that was measured (style.md, "Model artifacts are versioned data").

Why SVG written here rather than matplotlib PNGs: the report is written by the training function in Lambda,
whose layer would otherwise carry matplotlib (+ its fonts, Pillow, ~40 MB) for two simple charts; SVG is
text, a few KB, sharp at any size, and every browser and Markdown viewer shows it. The review page draws its
charts as inline SVG too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

if TYPE_CHECKING:
    from pathlib import Path

    from refund_sorter.heads.model import Head

REPORT_FILE = "report.md"
CONFUSION_PICTURE = "confusion.svg"
COVERAGE_PICTURE = "coverage.svg"


def write_report(head: Head, folder: Path) -> Path:
    """Write ``report.md``, ``confusion.svg`` and ``coverage.svg`` into ``folder``; returns the report's path."""
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


FONT = "font-family:system-ui,sans-serif;font-size:12px"
BLUES = ((247, 251, 255), (8, 48, 107))  # light → dark, as matplotlib's "Blues" ends


def _svg(width: float, height: float, body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" style="{FONT}">\n'
        f"<title>{escape(title)}</title>\n" + "\n".join(body) + "\n</svg>\n"
    )


def _blue(share: float) -> str:
    light, dark = BLUES
    return "#" + "".join(f"{round(a + (b - a) * share):02x}" for a, b in zip(light, dark, strict=True))


def confusion_svg(confusion: dict[str, Any]) -> str:
    """The confusion matrix as an SVG heat map: rows are the true departments, columns the predicted ones."""
    labels, matrix = confusion["labels"], confusion["matrix"]
    longest = max(len(label) for label in labels)
    cell, left, top, bottom = 36.0, 12.0 + 7 * longest, 24.0, 12.0 + 7 * longest
    size = cell * len(labels)
    peak = max((count for row in matrix for count in row), default=0) or 1
    body = [f'<text x="{left + size / 2}" y="14" text-anchor="middle">predicted</text>']
    for row, name in enumerate(labels):
        y = top + row * cell
        body.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4}" text-anchor="end">{escape(name)}</text>')
        for column, count in enumerate(matrix[row]):
            x = left + column * cell
            share = count / peak
            body.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{_blue(share)}" stroke="#ddd"/>')
            if count:
                colour = "white" if share > 0.5 else "black"
                body.append(
                    f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" text-anchor="middle" '
                    f'fill="{colour}">{count}</text>'
                )
    for column, name in enumerate(labels):
        x, y = left + column * cell + cell / 2 + 4, top + size + 6
        body.append(f'<text x="{x}" y="{y}" text-anchor="end" transform="rotate(-60 {x} {y})">{escape(name)}</text>')
    body.append(
        f'<text x="12" y="{top + size / 2}" text-anchor="middle" transform="rotate(-90 12 {top + size / 2})">'
        "true department</text>"
    )
    return _svg(left + size + 12, top + size + bottom, body, "confusion matrix (held-out photos)")


def coverage_svg(rows: list[dict[str, Any]], threshold: float) -> str:
    """Share of photos auto-sorted and the accuracy among them, by confidence threshold (the chosen one dashed)."""
    width, height, left, right, top, bottom = 480, 300, 48, 16, 16, 64
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(value: float) -> float:
        return left + value * plot_w

    def y(value: float) -> float:
        return top + (1 - value / 1.02) * plot_h

    body = [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        body += [
            f'<line x1="{x(tick)}" y1="{top}" x2="{x(tick)}" y2="{top + plot_h}" stroke="#eee"/>',
            f'<line x1="{left}" y1="{y(tick)}" x2="{left + plot_w}" y2="{y(tick)}" stroke="#eee"/>',
            f'<text x="{x(tick)}" y="{top + plot_h + 16}" text-anchor="middle">{tick:.1f}</text>',
            f'<text x="{left - 6}" y="{y(tick) + 4}" text-anchor="end">{tick:.1f}</text>',
        ]
    body.append(
        f'<text x="{left + plot_w / 2}" y="{top + plot_h + 32}" text-anchor="middle">confidence threshold</text>'
    )
    series = (
        ("share auto-sorted", "#1f77b4", [(r["threshold"], r["coverage"]) for r in rows]),
        ("accuracy of those", "#ff7f0e", [(r["threshold"], r["accuracy"]) for r in rows if r["accuracy"] is not None]),
    )
    for index, (name, colour, points) in enumerate(series):
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        body.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        body += [f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>' for t, v in points]
        legend_y = height - 10
        legend_x = left + index * 160
        body.append(
            f'<line x1="{legend_x}" y1="{legend_y - 4}" x2="{legend_x + 18}" y2="{legend_y - 4}" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        body.append(f'<text x="{legend_x + 24}" y="{legend_y}">{name}</text>')
    if threshold <= 1.0:  # above 1: no threshold reached the target precision, nothing is auto-sorted
        body.append(
            f'<line x1="{x(threshold):.1f}" y1="{top}" x2="{x(threshold):.1f}" y2="{top + plot_h}" stroke="grey" '
            'stroke-dasharray="5,4"/>'
        )
        body.append(f'<text x="{left + 320}" y="{height - 10}" fill="grey">chosen {threshold:.3f}</text>')
    return _svg(width, height, body, "coverage and accuracy by confidence threshold")


def draw_confusion(confusion: dict[str, Any], path: Path) -> None:
    path.write_text(confusion_svg(confusion), encoding="utf-8")


def draw_coverage(rows: list[dict[str, Any]], threshold: float, path: Path) -> None:
    path.write_text(coverage_svg(rows, threshold), encoding="utf-8")
