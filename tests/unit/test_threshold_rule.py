"""The auto-sort threshold set on a plain sample of the photos (labelled/, spot checks), not on review decisions."""

from __future__ import annotations

import numpy as np
import pytest

from refund_sorter_training.data import StackData
from refund_sorter_training.fit import Labelled, choose_threshold, fit, wilson_lower_bound

TARGET = 0.98
CENTRES = np.array([[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])


def _photos(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, len(CENTRES), n)
    return (CENTRES[labels] + rng.normal(0.0, 0.9, (n, CENTRES.shape[1]))).astype(np.float32), labels


def _decisions(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """What review decisions are: the photos a head could not sort, among them many ambiguous items (a long
    shirt, a short dress) whose department is not the one their looks point to; here one in six."""
    features, labels = _photos(n, rng)
    ambiguous = rng.random(n) < 1 / 6
    return features, np.where(ambiguous, (labels + 1) % len(CENTRES), labels)


def _labelled(features: np.ndarray, labels: np.ndarray, ordinary: np.ndarray | None) -> Labelled:
    return Labelled(features, [f"d{label}" for label in labels], ordinary=ordinary)


def _sorted_share_and_precision(head: object, features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    probabilities = head.probabilities(features)  # type: ignore[attr-defined]
    auto = probabilities.max(axis=1) >= head.threshold  # type: ignore[attr-defined]
    right = probabilities.argmax(axis=1) == labels
    return float(auto.mean()), float(right[auto].mean()) if auto.any() else 1.0


def _mixed(plain_photos: int, decisions: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, ordinary): a plain sample of the photos first, then review decisions."""
    plain, plain_labels = _photos(plain_photos, rng)
    decided, decided_labels = _decisions(decisions, rng)
    ordinary = np.arange(plain_photos + decisions) < plain_photos
    return np.concatenate([plain, decided]), np.concatenate([plain_labels, decided_labels]), ordinary


def test_review_decisions_teach_the_weights_but_do_not_make_the_threshold_over_strict() -> None:
    rng = np.random.default_rng(7)
    features, labels, ordinary = _mixed(300, 300, rng)
    fresh, fresh_labels = _photos(4000, rng)

    control = fit(_labelled(features, labels, None), backbone="bb", target_precision=TARGET, gate=0.5)
    shipped = fit(_labelled(features, labels, ordinary), backbone="bb", target_precision=TARGET, gate=0.5)

    control_share, _ = _sorted_share_and_precision(control, fresh, fresh_labels)
    share, precision = _sorted_share_and_precision(shipped, fresh, fresh_labels)
    # The hold-out of every label is half decisions, one in six of them "wrong" at any confidence: 98 % on it
    # is reached only at the very top, though 98 % of the everyday photos could be sorted at a far lower one.
    assert shipped.threshold < control.threshold
    assert share > control_share + 0.3
    assert precision >= TARGET - 0.03  # ~the target on new photos (a threshold set on 300 photos is that noisy)
    assert shipped.card["metrics"]["holdout_photos"] == 300  # measured on the plain sample alone


def test_too_few_ordinary_photos_certify_nothing_with_the_bound() -> None:
    features, labels, ordinary = _mixed(30, 200, np.random.default_rng(3))

    head = fit(
        _labelled(features, labels, ordinary), backbone="bb", target_precision=TARGET, gate=0.5, bound_z=1.0, minimum=5
    )
    # 30 photos, even all right, cannot show 98 % at one standard error (that takes 49): nothing is auto-sorted.
    assert head.threshold > 1.0
    assert head.card["training"]["threshold_bound_z"] == 1.0


@pytest.mark.parametrize(("right", "cut"), [(48, False), (50, True)])
def test_the_bound_needs_about_49_right_photos_for_98_percent_at_one_standard_error(right: int, cut: bool) -> None:
    probabilities = np.tile([0.99, 0.01], (right, 1))
    labels = np.zeros(right, dtype=int)
    assert (choose_threshold(probabilities, labels, TARGET, bound_z=1.0) <= 1.0) is cut
    assert choose_threshold(probabilities, labels, TARGET) == 0.99  # the plain share: one photo is enough


def test_the_wilson_bound() -> None:
    # n/(n + z²) with none wrong; the textbook 95 % interval of 8 of 10 starts at 0.490.
    assert wilson_lower_bound(np.array([49.0]), np.array([49.0]), 1.0)[0] == pytest.approx(0.98)
    assert wilson_lower_bound(np.array([8.0]), np.array([10.0]), 1.96)[0] == pytest.approx(0.4902, abs=1e-4)
    assert wilson_lower_bound(np.array([8.0]), np.array([10.0]), 0.0)[0] == pytest.approx(0.8)


def test_the_stack_marks_the_labelled_photos_as_the_plain_sample() -> None:
    rng = np.random.default_rng(0)
    labelled = Labelled(rng.normal(size=(3, 4)).astype(np.float16), ["a", "b", "a"], ["l1", "l2", "l3"])
    reviewed = Labelled(rng.normal(size=(2, 4)).astype(np.float16), ["b", "a"], ["r1", "r2"])
    on = StackData(labelled, reviewed, threshold_from_labelled_only=True).combined()
    assert on.ordinary is not None and on.ordinary.tolist() == [True, True, True, False, False]
    assert on.departments == ["a", "b", "a", "b", "a"]
    assert StackData(labelled, reviewed, threshold_from_labelled_only=False).combined().ordinary is None
    # no labelled photos, no plain sample: the control rule (a hold-out of every label) sets the threshold
    nothing = Labelled(np.zeros((0, 0), np.float16), [], [])
    assert StackData(nothing, reviewed, threshold_from_labelled_only=True).combined().ordinary is None


def test_two_training_runs_on_the_same_data_in_the_same_second_are_two_versions() -> None:
    # GIVEN the same photos trained twice within one second (a nightly retrain next to a person's `train`)
    from datetime import UTC, datetime

    rng = np.random.default_rng(3)
    features, labels = _photos(120, rng)
    first, second = (
        fit(
            _labelled(features, labels, None),
            backbone="bb",
            target_precision=TARGET,
            gate=0.5,
            now=datetime(2026, 12, 4, 17, 0, 0, micro, tzinfo=UTC),
        )
        for micro in (1000, 900_000)
    )
    # THEN the weights are the same, yet each run publishes under an id of its own (publishing never overwrites)
    assert np.array_equal(first.weights, second.weights)
    assert first.version != second.version and first.version[:16] == second.version[:16] == "20261204T170000Z"
