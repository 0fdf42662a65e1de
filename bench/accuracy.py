"""``make accuracy``: how well a head trained the way ``refund-sorter train`` trains sorts clothing-small.

Run from the repo root: ``.venv/bin/python -m bench.accuracy [--datasets DIR]``. Reads
``<repo>/../shared/datasets/clothing-small/{train,validation}/<class>/*.jpg`` (or ``--datasets``); when the data
is absent it says so and leaves the committed results alone. Writes ``bench/accuracy.json`` (everything) and
``bench/accuracy.md`` (the tables), and prints the table.

The head is trained exactly as the CLI does (:func:`refund_sorter_training.fit.fit`: C by CV on the training
split, a stratified hold-out of ``train/`` choosing the auto-sort threshold) on ``train/`` only, and measured
on ``validation/`` only, applied through the runtime's own :class:`~refund_sorter.heads.Head` and the Sorter's
decision rule (threshold and not-a-product gate). The ImageNet-taxonomy baseline is the same Sorter without a
head, on the same photos. Features are cached in ``out/accuracy/`` so a re-run skips decoding.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from bench.clothing import DEFAULT_DATASETS, clothing_small, evaluate_head, evaluate_taxonomy, list_split, train_head
from bench.common import ROOT
from bench.preprocessing import PREPROCESSING_JSON
from bench.preprocessing import to_markdown as preprocessing_section

if TYPE_CHECKING:
    from refund_sorter.vision.sorter import Sorter

CACHE_DIR: Final = ROOT / "out" / "accuracy"
RESULTS_JSON: Final = ROOT / "bench" / "accuracy.json"
RESULTS_MD: Final = ROOT / "bench" / "accuracy.md"
LEARNING_CURVE: Final = (10, 25, 50, None)  # photos per class; None = all
NOT_PRODUCTS: Final = ("skimage/chelsea", "skimage/rocket", "sklearn/china", "skimage/coffee", "skimage/astronaut")
GATES: Final = (0.3, 0.5, 0.7, 0.9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS, help="default: %(default)s")
    args = parser.parse_args(argv)
    dataset = clothing_small(args.datasets, "make accuracy")
    if dataset is None:
        return 0

    from refund_sorter.config import Settings
    from refund_sorter.heads.model import Head
    from refund_sorter.jobs.embed_labelled import backbone_sorter
    from refund_sorter.vision.images import CROP_FRACTION
    from refund_sorter_training.fit import Labelled, fit, fit_weights

    settings = Settings()
    sorter = backbone_sorter(settings)
    backbone = sorter.classifier.info.version
    train_files, validation_files = list_split(dataset / "train"), list_split(dataset / "validation")
    # The framing is part of the features: a cache made with another crop would measure the wrong photos.
    framing = f"{backbone}-crop{CROP_FRACTION * 256:g}of256"
    train = extract_with_results(sorter, train_files, CACHE_DIR / f"train-{framing}.npz")
    validation = extract_with_results(sorter, validation_files, CACHE_DIR / f"validation-{framing}.npz")
    classes = sorted(set(train["labels"].tolist()))

    # --- the product's head, trained like `refund-sorter train` on train/ only
    head = train_head(train, backbone, settings)
    head_report = evaluate_head(head, validation, classes)
    baseline = evaluate_taxonomy(validation)

    # --- learning curve: n photos per class from train/, all of them fitted (C by CV), top-1 on validation/
    rng = np.random.default_rng(0)
    curve = []
    for per_class in LEARNING_CURVE:
        rows = np.concatenate(
            [rng.permutation(np.flatnonzero(train["labels"] == c))[: per_class or None] for c in classes]
        )
        labels = np.array([classes.index(c) for c in train["labels"][rows]])
        weights, bias, c_value = fit_weights(train["features"][rows].astype(np.float32), labels)
        probe = Head("curve", tuple(classes), weights, bias, backbone, threshold=1.0, gate=1.0)
        predicted = probe.probabilities(validation["features"]).argmax(axis=1)
        truth = np.array([classes.index(c) for c in validation["labels"]])
        curve.append(
            {
                "per_class": per_class or "all",
                "photos": len(rows),
                "C": c_value,
                "top1": round(float((predicted == truth).mean()), 4),
            }
        )

    # --- time to train on every cached feature (~3,400): the whole `fit` (CV, hold-out, metrics)
    everything = Labelled(
        np.concatenate([train["features"], validation["features"]]),
        train["labels"].tolist() + validation["labels"].tolist(),
    )
    started = time.perf_counter()
    fit(everything, backbone=backbone, target_precision=settings.target_precision, gate=settings.not_a_product_gate)
    train_seconds = time.perf_counter() - started

    recording = measure_recording(sorter, validation_files[:64])
    photos_per_second = extraction_rate(sorter, validation_files)
    gate = gate_check(sorter, head, validation)

    report = {
        "dataset": str(dataset),
        "backbone": backbone,
        "train_photos": len(train_files),
        "validation_photos": len(validation_files),
        "head": {
            "version": head.version,
            "C": head.card["training"]["C"],
            "threshold": head.threshold,
            "C_grid": head.card["training"]["C_grid"],
            "holdout": head.card["metrics"],
        },
        "validation": head_report,
        "taxonomy_baseline": baseline,
        "learning_curve": curve,
        "train_seconds_all_cached": round(train_seconds, 2),
        "train_photos_all_cached": len(everything.departments),
        "feature_extraction_photos_per_second": round(photos_per_second, 1) if photos_per_second else None,
        "recording_embeddings": recording,
        "not_a_product_gate": gate,
        "load_average_1_5_15_min": [round(x, 1) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    RESULTS_JSON.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = to_markdown(report, classes)
    RESULTS_MD.write_text(markdown, encoding="utf-8")
    print(markdown)
    return 0


def extract_with_results(sorter: Sorter, files: list[tuple[str, Path]], cache: Path) -> dict[str, Any]:
    """:func:`extract`, reading the Results the Sorter gives alongside the features."""
    from refund_sorter.results import NOT_A_PRODUCT
    from refund_sorter.sources.files import photo_from_path

    if cache.is_file():
        with np.load(cache, allow_pickle=False) as arrays:
            return {key: arrays[key] for key in arrays.files}
    photos = [photo_from_path(path, sorter.settings) for _, path in files]
    started = time.perf_counter()
    outcomes = list(sorter.classify(photos))
    seconds = time.perf_counter() - started
    bad = [o.photo.source for o in outcomes if o.result is None or o.embedding is None]
    assert not bad, bad
    results = [o.result for o in outcomes if o.result is not None]
    data = {
        "labels": np.array([c for c, _ in files]),
        "features": np.stack([o.embedding for o in outcomes if o.embedding is not None]),
        "not_a_product": np.array(
            [{s.department: s.confidence for s in r.top_departments}.get(NOT_A_PRODUCT, 0.0) for r in results]
        ),
        "taxonomy": np.array([r.prediction or "" for r in results]),
        "taxonomy_status": np.array([str(r.status) for r in results]),
        "seconds": np.array(seconds),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, allow_pickle=False, **data)
    return data


def extraction_rate(sorter: Sorter, files: list[tuple[str, Path]]) -> float:
    """Photos per second through the Sorter's batched decode + model path (features included), measured now."""
    from refund_sorter.sources.files import photo_from_path

    photos = [photo_from_path(path, sorter.settings) for _, path in files]
    started = time.perf_counter()
    done = sum(1 for outcome in sorter.classify(photos) if outcome.embedding is not None)
    return done / (time.perf_counter() - started)


def measure_recording(sorter: Sorter, files: list[tuple[str, Path]], repeats: int = 25) -> dict[str, Any]:
    """Extra time per photo of recording features: the second model output, float16, the run file's bytes.

    The two model calls are interleaved and the fastest of many runs is kept: on a shared 2-vCPU machine the
    median of either moves by more than the difference being measured.
    """
    from refund_sorter.heads.embeddings import compact, to_bytes
    from refund_sorter.vision.images import load_image, to_model_input

    backbone = sorter.classifier.info.version
    crops = [load_image(p.read_bytes(), max_bytes=10**8, max_pixels=10**9) for _, p in files]
    batch = to_model_input(crops[:16])
    session = sorter.classifier.session
    name = session.get_inputs()[0].name
    session.run(["logits", "embeddings"], {name: batch})

    def once(function: Any) -> float:
        started = time.perf_counter()
        function()
        return time.perf_counter() - started

    features = session.run(["embeddings"], {name: batch})[0]
    ids = [f"id-{i:032d}" for i in range(len(features))]
    samples: dict[str, list[float]] = {"logits": [], "both": [], "keep": []}
    for _ in range(repeats):
        samples["logits"].append(once(lambda: session.run(["logits"], {name: batch})))
        samples["both"].append(once(lambda: session.run(["logits", "embeddings"], {name: batch})))
        samples["keep"].append(once(lambda: io.BytesIO(to_bytes(ids, compact(features), backbone)).getvalue()))
    logits_only, both, keep = (min(samples[k]) for k in ("logits", "both", "keep"))
    per_photo = (both - logits_only + keep) / len(features) * 1000
    return {
        "batch": len(features),
        "model_logits_only_ms_per_photo": round(logits_only / len(features) * 1000, 3),
        "model_with_embeddings_ms_per_photo": round(both / len(features) * 1000, 3),
        "float16_and_file_bytes_ms_per_photo": round(keep / len(features) * 1000, 4),
        "extra_ms_per_photo": round(per_photo, 3),
        "bytes_per_photo": len(to_bytes(ids, compact(features), backbone)) / len(features),
        "note": "plus one S3 PUT per run (nightly run, fan-out chunk or API call), not per photo",
    }


def gate_check(sorter: Sorter, head: Any, validation: dict[str, Any]) -> dict[str, Any]:
    """The not-a-product gate: what it costs on validation/ and whether it stops the wheel photos."""
    from refund_sorter.heads.active import FixedHead
    from refund_sorter.sources.files import photo_from_path
    from refund_sorter.vision.sorter import Sorter
    from refund_sorter_cli.samples import photo_path

    with_head = Sorter(sorter.settings, sorter.classifier, sorter.taxonomy, heads=FixedHead(head))
    photos = [photo_from_path(photo_path(name), sorter.settings) for name in NOT_PRODUCTS]
    samples = {}
    for name, outcome in zip(NOT_PRODUCTS, with_head.classify(photos), strict=True):
        result = outcome.result
        assert result is not None
        samples[name] = {
            "status": str(result.status),
            "reason": str(result.review_reason),
            "head_says": result.prediction,
            "head_confidence": result.confidence,
        }
    return {
        "gate": head.gate,
        "validation_sent_to_review_by_gate": {
            str(g): round(float((validation["not_a_product"] >= g).mean()), 4) for g in GATES
        },
        "not_products": samples,
    }


def to_markdown(report: dict[str, Any], classes: list[str]) -> str:
    v, b, rec = report["validation"], report["taxonomy_baseline"], report["recording_embeddings"]
    lines = [
        "# Custom departments on clothing-small (`make accuracy`)",
        "",
        f"Head trained like `refund-sorter train` on `train/` ({report['train_photos']} photos; C = "
        f"{report['head']['C']} by 5-fold CV; threshold {report['head']['threshold']:.3f} chosen on a 20 % "
        f"hold-out of `train/` for 98 % precision), measured on `validation/` ({report['validation_photos']} "
        f"photos, never used for fitting or choosing). Backbone `{report['backbone']}`.",
        "",
        "| | custom head | ImageNet taxonomy (today) |",
        "|---|---:|---:|",
        f"| top-1 over the ten classes | **{v['top1']:.1%}** | n/a (no such departments) |",
        f"| three-way clothing / shoes / hat | {v['three_way_accuracy']:.1%} | {b['three_way_accuracy']:.1%} |",
        f"| two-way clothing / shoes | | {b['two_way_accuracy_clothing_or_shoes']:.1%} |",
        f"| auto-sorted (rest waits for a person) | {v['auto_sorted']:.1%} | {b['auto_sorted']:.1%} |",
        f"| precision of the auto-sorted | {_pct(v['auto_sorted_precision'])} | "
        f"{_pct(b['auto_sorted_precision_two_way'])} (two-way) |",
        f"| hats recognised as hats | {v['hat_recall']:.1%} ({v['hats']} hats) | 0 % (no hat department) |",
        f"| hats auto-sorted correctly | {v['hats_auto_sorted_as_hat']} of {v['hats']} | "
        f"{b['hats_auto_sorted_right_two_way']} of {b['hats']} (as clothing) |",
        f"| sent to review by the not-a-product gate | {v['gated_as_not_a_product']:.1%} | |",
        "",
        "Per class (validation):",
        "",
        "| class | precision | recall | F1 | photos |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in classes:
        s = v["per_class"][c]
        lines.append(f"| {c} | {s['precision']:.2f} | {s['recall']:.2f} | {s['f1']:.2f} | {s['support']} |")
    lines += [
        "",
        "Learning curve (n photos per class from `train/`, top-1 on `validation/`):",
        "",
        "| photos per class | photos | C | top-1 |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['per_class']} | {r['photos']} | {r['C']} | {r['top1']:.1%} |" for r in report["learning_curve"]]
    gate = report["not_a_product_gate"]
    lines += [
        "",
        f"Time to train on {report['train_photos_all_cached']:,} cached features (the whole `fit`: 5-fold CV over "
        f"{len(report['head']['C_grid'])} values of C, the hold-out head, its metrics, the refit on all): "
        f"**{report['train_seconds_all_cached']:.1f} s**. Feature extraction (decode + model, the Sorter's batched "
        f"path): {report['feature_extraction_photos_per_second']} photos/s. Measured on {report['cpus']} shared "
        f"vCPUs with load average {report['load_average_1_5_15_min']} (other jobs running): an idle machine is "
        "faster.",
        "",
        f"Recording features: the model's second output adds "
        f"{rec['model_with_embeddings_ms_per_photo'] - rec['model_logits_only_ms_per_photo']:.3f} ms per photo "
        f"({rec['model_logits_only_ms_per_photo']:.2f} → {rec['model_with_embeddings_ms_per_photo']:.2f} ms, batch "
        f"{rec['batch']}), float16 + the run file {rec['float16_and_file_bytes_ms_per_photo']:.4f} ms: "
        f"**{rec['extra_ms_per_photo']:.3f} ms per photo** in all, {rec['bytes_per_photo']:.0f} bytes per photo, "
        f"{rec['note']}.",
        "",
        f"Not-a-product gate (ImageNet not-a-product probability ≥ {gate['gate']}): share of validation photos it "
        "sends to review by gate value: "
        + ", ".join(f"{g}: {share:.1%}" for g, share in gate["validation_sent_to_review_by_gate"].items())
        + ". With the head active:",
        "",
        "| photo | status | reason | the head alone would say |",
        "|---|---|---|---|",
    ]
    for name, s in gate["not_products"].items():
        lines.append(f"| {name} | {s['status']} | {s['reason']} | {s['head_says']} ({s['head_confidence']:.2f}) |")
    if PREPROCESSING_JSON.is_file():  # written by `python -m bench.preprocessing`, which compares crops
        lines += ["", preprocessing_section(json.loads(PREPROCESSING_JSON.read_text(encoding="utf-8"))).rstrip("\n")]
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


if __name__ == "__main__":
    sys.exit(main())
