"""Champion and challenger without AWS: the held-out split, the evaluation, the verdict."""

from __future__ import annotations

import numpy as np
import pytest

from refund_sorter.heads.model import Head
from refund_sorter_training.fit import Labelled
from refund_sorter_training.promotion import PromotionRule, decide, evaluate, split_held_out


def _head(version: str, threshold: float, departments: tuple[str, ...] = ("hat", "shoes")) -> Head:
    # Feature i votes for department i: a photo [a, b] is 'hat' when a > b, with softmax(a, b) as probability.
    weights = np.eye(len(departments), 2, dtype=np.float32)
    return Head(version, departments, weights, np.zeros(len(departments), np.float32), "bb", threshold, 0.5)


def _held_out(rows: list[tuple[float, float, str]]) -> Labelled:
    return Labelled(np.array([[a, b] for a, b, _ in rows], np.float32), [d for _, _, d in rows])


def test_the_split_is_deterministic_and_grows_without_moving_earlier_decisions() -> None:
    ids = [f"decision-{i}" for i in range(2000)]
    held = split_held_out(ids, fraction=0.2, seed=7)
    # GIVEN the same ids and seed THEN the same set; about the fraction asked for
    assert held == split_held_out(list(reversed(ids)), fraction=0.2, seed=7)
    assert 0.17 < len(held) / len(ids) < 0.23
    # AND more decisions later never move an earlier one between the two sides
    more = split_held_out([*ids, *(f"later-{i}" for i in range(500))], fraction=0.2, seed=7)
    assert more & set(ids) == held
    # AND another seed picks another set; nothing is held out at fraction 0
    assert split_held_out(ids, fraction=0.2, seed=8) != held
    assert split_held_out(ids, fraction=0.0, seed=7) == set()
    with pytest.raises(ValueError, match="fraction"):
        split_held_out(ids, fraction=1.5, seed=7)


def test_evaluate_counts_what_the_head_would_auto_sort_with_its_own_threshold() -> None:
    # GIVEN a head auto-sorting at 0.8 and five decisions: two confident and right, one confident and wrong,
    # one unsure, one naming a department the head does not know
    head = _head("v1", threshold=0.8)
    held = _held_out([(3, 0, "hat"), (0, 3, "shoes"), (3, 0, "shoes"), (0.1, 0, "hat"), (0, 3, "pants")])
    scores = evaluate(head, held, target_precision=0.95)
    # THEN top-1 2/5 (the unsure one is right too: 3/5), 4 of 5 auto-sorted, 2 of those 4 right
    assert scores["n"] == 5
    assert scores["top1"] == 0.6
    assert scores["auto_share"] == 0.8
    assert scores["precision"] == 0.5
    assert scores["per_department"]["pants"] == {"n": 1, "top1": 0.0, "auto_share": 1.0, "precision": 0.0}
    assert scores["per_department"]["hat"] == {"n": 2, "top1": 1.0, "auto_share": 0.5, "precision": 1.0}
    assert (scores["threshold"], scores["target_precision"], scores["version"]) == (0.8, 0.95, "v1")
    # AND a head that sorts nothing has no precision; no decisions at all is no score
    assert evaluate(_head("v2", threshold=1.01), held, target_precision=0.95)["precision"] is None
    assert evaluate(head, _held_out([]), target_precision=0.95)["n"] == 0


def _scores(share: float, precision: float | None, n: int = 50) -> dict[str, object]:
    return {"n": n, "auto_share": share, "precision": precision, "target_precision": 0.95}


@pytest.mark.parametrize(
    ("champion", "challenger", "activated", "reason"),
    [
        (None, _scores(0.5, 0.9), True, "no head was active"),
        (_scores(0.6, 0.96), _scores(0.7, 0.97), True, "sorts more on 50 held-out decisions (70.0% vs 60.0%)"),
        (_scores(0.6, 0.96), _scores(0.7, 0.96), True, "at least as precisely"),  # equal precision is enough
        (_scores(0.6, 0.96), _scores(0.9, 0.95), False, "less precise on 50 held-out decisions: 95.0% < 96.0%"),
        (_scores(0.6, 0.96), _scores(0.6, 0.99), False, "does not sort more"),  # equal share is not more
        (_scores(0.6, 0.96), _scores(0.0, None), False, "auto-sorts none"),
        (_scores(0.0, None), _scores(0.3, 0.9), False, "< 95.0% (the target precision)"),
        (_scores(0.0, None), _scores(0.3, 0.97), True, "sorts more"),
        (_scores(0.6, 0.96, n=0), _scores(0.7, 0.99, n=0), False, "no held-out decisions"),
    ],
)
def test_decide(
    champion: dict[str, object] | None, challenger: dict[str, object], activated: bool, reason: str
) -> None:
    verdict, why = decide(champion, challenger, PromotionRule())
    assert verdict is activated
    assert reason in why


def test_the_rule_s_margins_and_switch() -> None:
    champion, challenger = _scores(0.6, 0.96), _scores(0.65, 0.965)
    assert decide(champion, challenger, PromotionRule())[0]
    # a margin on the share or on the precision can hold the same challenger back
    assert not decide(champion, challenger, PromotionRule(min_share_delta=0.1))[0]
    assert not decide(champion, challenger, PromotionRule(min_precision_delta=0.01))[0]
    # with auto-activation off a better challenger is not activated, and the reason says how to
    verdict, why = decide(champion, challenger, PromotionRule(auto_activate=False))
    assert not verdict
    assert "sorts more" in why and "auto-activation is off" in why
