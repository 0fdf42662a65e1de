"""The review queue's order: which waiting photo a person sees first, and the sentence that says why."""

from __future__ import annotations

import pytest

from refund_sorter.heads import informative
from refund_sorter.heads.informative import review_priority, why_asked

SCORES = [informative.margin, informative.least_confident, informative.certainty, informative.balanced_margin]
TORN = [("shirt", 0.41), ("t-shirt", 0.38), ("longsleeve", 0.21)]
SURE = [("shoes", 0.93), ("pants", 0.05), ("hat", 0.02)]
EVEN = {"shirt": 40, "t-shirt": 40, "longsleeve": 40, "shoes": 40, "pants": 40, "hat": 40}


@pytest.mark.parametrize("score", SCORES, ids=lambda s: s.__name__)
def test_uncertainty_scores_ask_a_torn_photo_before_a_sure_one_and_stay_within_0_and_1(score: object) -> None:
    assert callable(score)
    for taught in (None, EVEN):
        torn, sure = score(TORN, taught=taught), score(SURE, taught=taught)
        # THEN lower = sooner: the photo the head cannot decide comes first
        assert 0.0 <= torn < sure <= 1.0
    # AND odd inputs stay in range and never raise: nothing listed, one department, rounding above 1
    for top in ([], [("hat", 1.0)], [("hat", 0.7000004), ("shoes", 0.3000004)], [("hat", 0.5), ("shoes", 0.5)]):
        assert 0.0 <= score(top, taught=EVEN) <= 1.0


def test_the_shipped_order_asks_first_the_photo_the_head_was_nearly_sure_enough_to_sort() -> None:
    # GIVEN waiting photos (all under the head's threshold), from nearly sure to lost
    nearly = [("shoes", 0.86), ("pants", 0.1)]
    torn = [("shirt", 0.41), ("t-shirt", 0.38)]
    lost = [("dress", 0.2), ("skirt", 0.19), ("outwear", 0.18)]
    # THEN the one closest to being sorted alone comes first, the lost one last, and ties do not depend on taught
    assert review_priority(nearly) < review_priority(torn) < review_priority(lost)
    assert review_priority(nearly, taught=EVEN) == review_priority(nearly) == pytest.approx(0.14)
    for top in ([], [("hat", 1.0)], [("hat", 1.0000004)], nearly, lost):
        assert 0.0 <= review_priority(top, taught=EVEN) <= 1.0
    assert review_priority([]) == 1.0  # a photo with no suggestion waits behind those the head can nearly sort


def test_the_margin_orders_by_the_gap_between_the_two_best_departments() -> None:
    assert informative.margin([("a", 0.5), ("b", 0.45)]) == pytest.approx(0.05)
    assert informative.margin([("a", 0.6), ("b", 0.1)]) == pytest.approx(0.5)
    # a photo the sorter says nothing about is asked at once
    assert informative.margin([]) == 0.0


def test_entropy_counts_the_departments_a_result_does_not_list() -> None:
    # GIVEN a Result that lists nine of ten departments (the Sorter lists at most nine)
    listed = [(f"d{i}", 0.1) for i in range(9)]
    ten = {f"d{i}": 10 for i in range(10)}
    # THEN the missing 0.1 is the tenth department: all ten equal is the most uncertain there is
    assert informative.certainty(listed, taught=ten) == pytest.approx(0.0, abs=1e-9)
    # AND a sure photo is near 1
    assert informative.certainty([("d0", 0.999), ("d1", 0.001)], taught=ten) > 0.95


def test_class_balance_asks_sooner_about_the_departments_taught_with_few_photos() -> None:
    # GIVEN two photos with the same margin, one between well-taught departments, one involving a rare one
    taught = {"t-shirt": 400, "shirt": 300, "skirt": 10, "dress": 60}
    common = [("t-shirt", 0.55), ("shirt", 0.35)]
    rare = [("skirt", 0.55), ("dress", 0.35)]
    # THEN class balance asks about the rare department first; plain margin cannot tell them apart
    assert informative.balanced_margin(rare, taught=taught) < informative.balanced_margin(common, taught=taught)
    assert informative.margin(rare, taught=taught) == informative.margin(common, taught=taught)
    # AND equal counts (or none known) change nothing: it is then the plain margin
    assert informative.balanced_margin(rare, taught=EVEN | {"skirt": 40, "dress": 40}) == pytest.approx(0.2)
    assert informative.balanced_margin(rare) == pytest.approx(0.2)
    # AND a department the head was never taught counts as none taught (asked soonest), without raising
    assert informative.balanced_margin([("new", 0.6), ("skirt", 0.3)], taught=taught) < 0.3


def test_why_asked_says_in_a_short_sentence_what_the_sorter_hesitates_about() -> None:
    assert why_asked(TORN) == "torn between shirt (0.41) and t-shirt (0.38)"
    assert why_asked([("dress", 0.72), ("skirt", 0.2)]) == "probably dress (0.72), not sure enough to sort it alone"
    assert why_asked([("hat", 0.6)]) == "unsure it is hat (0.60)"
    assert why_asked([]) == "the sorter has no suggestion for this photo"
    # AND it says when one of the two departments was taught with few photos (under half the most-taught one)
    taught = {"shirt": 12, "t-shirt": 300, "longsleeve": 200}
    assert (
        why_asked(TORN, taught=taught)
        == "torn between shirt (0.41) and t-shirt (0.38); only 12 shirt photos taught so far"
    )
    assert why_asked(TORN, taught=EVEN) == "torn between shirt (0.41) and t-shirt (0.38)"
    for top in (TORN, SURE, [("hat", 0.6)]):
        assert len(why_asked(top, taught=taught)) < 100  # one short line under the photo
