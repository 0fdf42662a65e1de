"""Fit a head on labelled features and measure it: the numbers a model version carries.

scikit-learn does the fitting (a multinomial logistic regression, the regularisation strength chosen by
stratified cross-validation on the training split, classes weighted by their inverse frequency so a small
department counts as much as a large one). What ships is only its arrays (:class:`refund_sorter.heads.Head`):
the runtime applies them with numpy, and the metrics are measured by applying the shipped head, not the
scikit-learn object, so the numbers describe exactly what runs.

It runs in two places, the same code: ``refund-sorter train DIR`` on a laptop, and the training function
(TrainFunction) on the stack, whose layer (TrainLayer) carries scikit-learn and scipy. The model layer never
does: they are ~100 MB, and the running functions only apply the head's arrays with numpy.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from refund_sorter.heads.model import Head

if TYPE_CHECKING:
    from collections.abc import Sequence

# Regularisation strengths tried by cross-validation (features are standardised first).
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
CV_FOLDS = 5
HOLDOUT_FRACTION = 0.2
# Thresholds the coverage table lists (the chosen one is added).
COVERAGE_THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


class TrainingDataError(ValueError):
    """The labelled photos cannot train a head (too few departments or photos); the message says which."""


@dataclass
class Labelled:
    """Training data: one row of features per photo, its department, and where it came from."""

    embeddings: np.ndarray  # float16/32 [N, features]
    departments: list[str]
    sources: list[str] = field(default_factory=list)
    # ImageNet not-a-product probability per photo, where known (NaN: unknown); measures the gate's cost.
    not_a_product: np.ndarray | None = None
    # Per row, the id of the decision (reviewed Result) it comes from, where it is one: picks the held-out ones.
    ids: list[str] = field(default_factory=list)
    # Which photos are a plain sample of the shop's photos (labelled/ photos, spot checks), as opposed to review
    # decisions, which are the photos a head was unsure of. Given, the threshold is chosen on these alone
    # (:func:`fit`); None: the control rule, a hold-out of every photo.
    ordinary: np.ndarray | None = None

    def rows(self, keep: Sequence[int]) -> Labelled:
        """Only the rows ``keep`` (in that order)."""
        rows = list(keep)
        features = self.embeddings[rows] if rows else np.zeros((0, *self.embeddings.shape[1:]), self.embeddings.dtype)
        return Labelled(
            features,
            [self.departments[i] for i in rows],
            [self.sources[i] for i in rows] if self.sources else [],
            self.not_a_product[rows] if self.not_a_product is not None else None,
            [self.ids[i] for i in rows] if self.ids else [],
            self.ordinary[rows] if self.ordinary is not None else None,
        )


def check_counts(departments: Sequence[str], minimum: int) -> Counter[str]:
    """Photos per department; refuses fewer than two departments or a department under ``minimum``."""
    counts = Counter(departments)
    small = sorted((d for d, n in counts.items() if n < minimum), key=lambda d: (counts[d], d))
    if small:
        listed = ", ".join(f"{d!r} has {counts[d]}" for d in small)
        raise TrainingDataError(f"every department needs at least {minimum} photos: {listed}")
    if len(counts) < 2:
        raise TrainingDataError(f"a head needs at least two departments, got {sorted(counts)}")
    return counts


def fit(
    data: Labelled,
    *,
    backbone: str,
    target_precision: float,
    gate: float,
    minimum: int = 10,
    holdout: float = HOLDOUT_FRACTION,
    seed: int = 0,
    sources: dict[str, Any] | None = None,
    now: datetime | None = None,
    bound_z: float = 0.0,
) -> Head:
    """Train, measure on held-out photos, and return the model version (head + its card).

    Without ``data.ordinary`` (the control rule): C is chosen by cross-validation on a stratified training
    split; a head fit there is measured on the hold-out, which also sets the auto-sort threshold.

    With ``data.ordinary`` (:func:`ordinary_probabilities`): C is chosen by cross-validation on every photo, and
    the threshold is set on the ordinary photos alone, each predicted by a head fit on all the other photos
    (k-fold over the ordinary ones). Review decisions still teach the weights, but they never set the threshold:
    they are the photos a head was unsure of, and 98 % precision on them is far stricter than 98 % on the
    everyday photos (bench/loop.md). ``bound_z`` > 0 asks the threshold's precision to hold for the Wilson
    lower bound at that many standard errors (:func:`choose_threshold`), so a few ordinary photos cannot
    certify the target.

    Either way the head that ships is refit with that C on every photo (the hold-out too: with 10 photos a
    department, 2 more is 25 % more to learn from); measured on clothing-small that is +2.6 points of top-1 at
    the same auto-sort precision (bench/accuracy.md).
    """
    from sklearn.model_selection import train_test_split

    counts = check_counts(data.departments, minimum)
    departments = tuple(sorted(counts))
    labels = np.array([departments.index(d) for d in data.departments])
    features = np.asarray(data.embeddings, dtype=np.float32)
    rows = np.arange(len(labels))
    started = time.perf_counter()
    if data.ordinary is None:
        train_rows, holdout_rows = train_test_split(
            rows, test_size=max(holdout, len(departments) / len(rows)), stratify=labels, random_state=seed
        )
        weights, bias, c_value = fit_weights(features[train_rows], labels[train_rows], seed=seed)
        draft = Head("hold-out", departments, weights, bias, backbone, threshold=1.0, gate=gate)
        probabilities = draft.probabilities(features[holdout_rows])
        measured = "a head fit on the training split, on the hold-out"
    else:
        _, _, c_value = fit_weights(features, labels, seed=seed)
        holdout_rows = np.flatnonzero(np.asarray(data.ordinary, dtype=bool))
        train_rows = rows
        probabilities = ordinary_probabilities(features, labels, holdout_rows, departments, c=c_value, seed=seed)
        measured = (
            "the ordinary photos (labelled/, spot checks) only, each by a head fit on all the other photos "
            f"({min(CV_FOLDS, max(len(holdout_rows), 1))}-fold); review decisions teach the weights, never the "
            "threshold"
        )
    weights, bias, _ = fit_weights(features, labels, c=c_value, seed=seed)
    seconds = time.perf_counter() - started

    # A version names one training run: the digest also takes the exact instant, so two runs on the same data in
    # the same second (a nightly retrain next to a person's `train`) are two versions, not a refused publish.
    instant = (now or datetime.now(UTC)).astimezone(UTC)
    created = instant.replace(microsecond=0)
    run = weights.tobytes() + bias.tobytes() + "\n".join(departments).encode() + instant.isoformat().encode()
    digest = hashlib.sha256(run).hexdigest()
    version = f"{created:%Y%m%dT%H%M%SZ}-{digest[:8]}"
    threshold = choose_threshold(probabilities, labels[holdout_rows], target_precision, bound_z=bound_z)
    metrics = measure(probabilities, labels[holdout_rows], departments, threshold)
    if data.not_a_product is not None:
        known = data.not_a_product[holdout_rows]
        known = known[~np.isnan(known)]
        if known.size:
            metrics["gate_sends_to_review"] = round(float((known >= gate).mean()), 4)
    card = {
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "target_precision": target_precision,
        "training": {
            "photos": len(labels),
            "photos_per_department": {d: counts[d] for d in departments},
            "train_photos": len(train_rows),
            "holdout_photos": len(holdout_rows),
            "model": "multinomial logistic regression (scikit-learn), standardised features, balanced classes",
            "measured": f"{measured}; the shipped head is refit on all photos with the same C",
            "threshold_bound_z": bound_z,
            "C": c_value,
            "C_grid": list(C_GRID),
            "cv_folds": _folds(labels[train_rows]),
            "seed": seed,
            "fit_seconds": round(seconds, 2),
            "sources": sources or {},
        },
        "metrics": metrics,
    }
    return Head(version, departments, weights, bias, backbone, threshold=threshold, gate=gate, card=card)


def ordinary_probabilities(
    features: np.ndarray,
    labels: np.ndarray,
    ordinary: np.ndarray,
    departments: tuple[str, ...],
    *,
    c: float,
    seed: int,
) -> np.ndarray:
    """Each ordinary photo's probabilities from a head fit with ``c`` on every other photo (k folds of the
    ordinary photos; the review decisions are always in the fit). An empty ``ordinary`` gives no rows."""
    # A fold that cannot be fit (a department's every photo in it) leaves its photos at a uniform guess, which
    # no threshold a target precision allows would sort.
    probabilities = np.full((len(ordinary), len(departments)), 1 / len(departments), dtype=np.float32)
    folds = min(CV_FOLDS, len(ordinary))
    if folds == 0:
        return probabilities
    fold_of = np.random.default_rng(seed).permutation(len(ordinary)) % folds
    for fold in range(folds):
        out = ordinary[fold_of == fold]
        keep = np.setdiff1d(np.arange(len(labels)), out)
        if len(np.unique(labels[keep])) < len(departments):
            continue
        weights, bias, _ = fit_weights(features[keep], labels[keep], c=c, seed=seed)
        draft = Head("out-of-fold", departments, weights, bias, "", threshold=1.0, gate=1.0)
        probabilities[fold_of == fold] = draft.probabilities(features[out])
    return probabilities


def _folds(labels: np.ndarray) -> int:
    return int(max(2, min(CV_FOLDS, np.bincount(labels).min())))


def fit_weights(
    features: np.ndarray, labels: np.ndarray, *, c: float | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, float]:
    """Standardise, choose C by stratified k-fold CV (unless ``c`` is given), fit; returns (weights, bias, C)
    with the scaling folded in, so ``softmax(x @ weights.T + bias)`` is the fitted pipeline's ``predict_proba(x)``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    scaler = StandardScaler().fit(features)
    common: dict[str, Any] = {
        "class_weight": "balanced",
        "max_iter": 1000,
        "tol": 1e-3,  # 10x scikit-learn's default: the same C and accuracy here, in half the time
        "random_state": seed,
    }
    model: LogisticRegression | LogisticRegressionCV
    if c is not None:
        model = LogisticRegression(C=c, **common)
    else:
        model = LogisticRegressionCV(
            Cs=list(C_GRID),
            l1_ratios=(0.0,),
            cv=StratifiedKFold(n_splits=_folds(labels), shuffle=True, random_state=seed),
            scoring="neg_log_loss",  # the probabilities set the auto-sort threshold: score them, not only argmax
            use_legacy_attributes=False,
            **common,
        )
    # One BLAS thread: the matrices are small, and on a busy 2-vCPU machine BLAS threads fighting over the
    # cores made the same fit ~10x slower (measured: 30 s → 3 s per C).
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        # The widest C of the grid may stop short of full convergence; CV simply scores it lower.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(scaler.transform(features), labels)
    scale = scaler.scale_.astype(np.float64)
    coef = np.asarray(model.coef_, dtype=np.float64) / scale
    intercept = np.asarray(model.intercept_, dtype=np.float64) - coef @ scaler.mean_
    if coef.shape[0] == 1:  # two departments: scikit-learn keeps one row; softmax over (-z/2, z/2) = sigmoid(z)
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    chosen = c if c is not None else float(np.asarray(model.C_).ravel()[0])
    return coef.astype(np.float32), intercept.astype(np.float32), chosen


def choose_threshold(
    probabilities: np.ndarray, labels: np.ndarray, target_precision: float, *, bound_z: float = 0.0
) -> float:
    """The lowest confidence at which the photos auto-sorted (confidence ≥ it) are right often enough.

    ``bound_z`` = 0: their measured precision reaches ``target_precision``. Above 0: the Wilson score lower
    bound of it at ``bound_z`` standard errors does, which needs at least ``bound_z² · p/(1-p)`` photos above the
    threshold even with none wrong (49 for 98 % at z = 1): a handful of photos cannot certify the target.
    Returns 1.0 (+ a tiny margin, so nothing is auto-sorted) when no threshold reaches it.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    order = np.argsort(-confidence, kind="stable")
    covered = np.arange(1, len(order) + 1)
    precision = wilson_lower_bound(np.cumsum(correct[order]), covered, bound_z)
    candidates = confidence[order]
    # Only cut between distinct confidences: photos with equal confidence are sorted alike.
    last_of_value = np.append(candidates[1:] != candidates[:-1], True)
    good = np.flatnonzero(last_of_value & (precision >= target_precision))
    if good.size == 0:
        return 1.000001
    return round(float(candidates[good[-1]]), 6)


def wilson_lower_bound(right: np.ndarray, n: np.ndarray, z: float) -> np.ndarray:
    """The Wilson score interval's lower end for ``right`` of ``n`` (z = 0: the plain share)."""
    share = right / n
    if z == 0.0:
        return share
    z2 = z * z
    centre = share + z2 / (2 * n)
    spread = z * np.sqrt(share * (1 - share) / n + z2 / (4 * n * n))
    return (centre - spread) / (1 + z2 / n)


def measure(
    probabilities: np.ndarray, labels: np.ndarray, departments: Sequence[str], threshold: float
) -> dict[str, Any]:
    """Accuracy, per-department precision/recall/F1, confusion matrix and the coverage table."""
    from sklearn.metrics import confusion_matrix

    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    indices = list(range(len(departments)))
    covered = confidence >= threshold
    return {
        "holdout_photos": len(labels),
        "accuracy": round(float((predicted == labels).mean()), 4),
        "per_department": scores_by_department(labels, predicted, indices, departments),
        "confusion": {
            "labels": list(departments),
            "matrix": confusion_matrix(labels, predicted, labels=indices).tolist(),
        },
        "coverage": coverage_table(probabilities, labels, threshold),
        "threshold": threshold,
        "coverage_at_threshold": round(float(covered.mean()), 4),
        "precision_at_threshold": (
            round(float((predicted[covered] == labels[covered]).mean()), 4) if covered.any() else None
        ),
    }


def scores_by_department(
    truth: np.ndarray, predicted: np.ndarray, labels: Sequence[Any], names: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    """Precision, recall, F1 and support of each department (``labels`` as they appear in ``truth``)."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels, zero_division=0)
    return {
        name: {
            "precision": round(float(p), 4),
            "recall": round(float(r), 4),
            "f1": round(float(f), 4),
            "support": int(n),
        }
        for name, p, r, f, n in zip(names, precision, recall, f1, support, strict=True)
    }


def coverage_table(probabilities: np.ndarray, labels: np.ndarray, chosen: float) -> list[dict[str, float | None]]:
    """For each threshold: the share of photos auto-sorted and the accuracy among them."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    rows = []
    # A chosen threshold above 1 means "never auto-sort": no row for it (the report says so).
    for threshold in sorted({*COVERAGE_THRESHOLDS, *([chosen] if chosen <= 1.0 else [])}):
        covered = confidence >= threshold
        rows.append(
            {
                "threshold": round(float(threshold), 4),
                "coverage": round(float(covered.mean()), 4),
                "accuracy": round(float(correct[covered].mean()), 4) if covered.any() else None,
            }
        )
    return rows
