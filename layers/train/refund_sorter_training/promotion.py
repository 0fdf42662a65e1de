"""Champion and challenger: whether a freshly trained head (the challenger) replaces the active one (the
champion), decided on people's decisions that neither side was fitted on.

The held-out decisions are chosen by a hash of the decision's id and a seed, not drawn at random each run: a
decision held out tonight is held out every night (same seed), so it never leaks into a later challenger's
training and the comparison stays fair as the decisions accumulate.

Both sides are measured the way they would sort in production: a photo is auto-sorted when the head's top
probability reaches the head's own threshold (chosen when it was trained for the target precision). So
"sorts more" and "as precise" compare what each version would really do, not a threshold tuned on the
held-out decisions afterwards (which would make "as precise" true by construction).

Pure functions over numpy arrays and dicts: the training job (:mod:`.job`) and the loop benchmark both call
them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from refund_sorter.heads.model import Head
    from refund_sorter_training.fit import Labelled

# 2**64: the hash's first 8 bytes as a fraction in [0, 1).
_HASH_SPACE = float(1 << 64)


@dataclass(frozen=True)
class PromotionRule:
    """When a challenger replaces the champion by itself.

    Parameters
    ----------
    auto_activate
        Off: every challenger is published and the verdict recorded, but a person activates it.
    min_precision_delta
        The challenger's precision on what it auto-sorts must be at least the champion's plus this.
    min_share_delta
        The challenger must auto-sort strictly more of the held-out decisions than the champion plus this.
    """

    auto_activate: bool = True
    min_precision_delta: float = 0.0  # challenger precision >= champion precision + this
    min_share_delta: float = 0.0  # challenger must sort strictly more than champion + this


def split_held_out(ids: Sequence[str], *, fraction: float, seed: int) -> set[str]:
    """Deterministic (hash of id + seed) set of decision ids held out: never used to fit either side."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), got {fraction}")
    held = set()
    for decision_id in ids:
        digest = hashlib.sha256(f"{seed}:{decision_id}".encode()).digest()
        if int.from_bytes(digest[:8], "big") / _HASH_SPACE < fraction:
            held.add(decision_id)
    return held


def evaluate(head: Head, held_out: Labelled, *, target_precision: float) -> dict[str, Any]:
    """{"top1", "auto_share", "precision", "n", "per_department": {...}} of a head on held-out decisions.

    A decision naming a department the head does not know counts as a miss (it could not have got it right).
    ``precision`` is ``None`` when the head auto-sorts none of them. Also ``threshold`` (the head's own) and
    ``target_precision`` (what the threshold was chosen for), so a verdict can be read on its own.
    """
    truth = list(held_out.departments)
    n = len(truth)
    base: dict[str, Any] = {
        "version": head.version,
        "n": n,
        "threshold": head.threshold,
        "target_precision": target_precision,
    }
    if n == 0:
        return base | {"top1": None, "auto_share": 0.0, "precision": None, "per_department": {}}
    probabilities = head.probabilities(np.asarray(held_out.embeddings, dtype=np.float32))
    predicted = [head.departments[i] for i in probabilities.argmax(axis=1)]
    auto = probabilities.max(axis=1) >= head.threshold
    correct = np.array([p == t for p, t in zip(predicted, truth, strict=True)])
    sorted_right = int((correct & auto).sum())
    return base | {
        "top1": round(float(correct.mean()), 4),
        "auto_share": round(float(auto.mean()), 4),
        "precision": round(sorted_right / int(auto.sum()), 4) if auto.any() else None,
        "per_department": _per_department(truth, predicted, auto),
    }


def _per_department(truth: Sequence[str], predicted: Sequence[str], auto: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per true department: how many decisions, top-1 on them, and the share auto-sorted and its precision."""
    support = Counter(truth)
    rows: dict[str, dict[str, Any]] = {}
    for department in sorted(support):
        mine = np.array([t == department for t in truth])
        right = np.array([p == department for p in predicted]) & mine
        auto_mine = auto & mine
        rows[department] = {
            "n": support[department],
            "top1": round(float(right.sum() / mine.sum()), 4),
            "auto_share": round(float(auto_mine.sum() / mine.sum()), 4),
            "precision": round(float((right & auto).sum() / auto_mine.sum()), 4) if auto_mine.any() else None,
        }
    return rows


def decide(champion: dict[str, Any] | None, challenger: dict[str, Any], rule: PromotionRule) -> tuple[bool, str]:
    """(activate?, reason) — no champion: activate; otherwise at least as precise and sorts more."""
    verdict, reason = _better(champion, challenger, rule)
    if verdict and not rule.auto_activate:
        return False, f"{reason}; auto-activation is off: activate it with `refund-sorter models activate`"
    return verdict, reason


def _better(champion: dict[str, Any] | None, challenger: dict[str, Any], rule: PromotionRule) -> tuple[bool, str]:
    if champion is None:
        return True, "no head was active: the first version is the champion"
    n = int(challenger.get("n") or 0)
    if n == 0:
        return False, "no held-out decisions to compare the two on yet: kept the active version"
    share, share_before = float(challenger["auto_share"]), float(champion["auto_share"])
    precision = challenger.get("precision")
    # A champion that auto-sorts nothing has no precision to keep: the challenger must then reach its target.
    floor = champion.get("precision")
    floor_name = "the champion's"
    if floor is None:
        floor, floor_name = float(challenger.get("target_precision") or 0.0), "the target"
    floor = float(floor) + rule.min_precision_delta
    counts = f"on {n} held-out decisions"
    if precision is None:
        return False, f"it auto-sorts none of the {n} held-out decisions (the active one sorts {share_before:.1%})"
    if float(precision) < floor:
        return False, f"less precise {counts}: {float(precision):.1%} < {floor:.1%} ({floor_name} precision)"
    if share <= share_before + rule.min_share_delta:
        return False, (
            f"does not sort more {counts}: {share:.1%} auto-sorted vs {share_before:.1%}"
            + (f" + {rule.min_share_delta:.1%}" if rule.min_share_delta else "")
        )
    return True, (
        f"sorts more {counts} ({share:.1%} vs {share_before:.1%}) at least as precisely "
        f"({float(precision):.1%} vs {floor_name} {floor - rule.min_precision_delta:.1%})"
    )
