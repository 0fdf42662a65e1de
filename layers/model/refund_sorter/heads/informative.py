"""Which waiting photo a person should see first: the one whose answer teaches the head most.

Pure functions of a Result's ``top_departments`` (its department probabilities, best first) and, for class
balance, the labelled photos per department the active head was fitted on (``version.json``'s
``training.photos_per_department``). They are static per Result, computed once when it is written, so the review
queue can be a DynamoDB index sorted on :func:`review_priority`; they cannot look at the other waiting photos,
so there is no diversity term that compares photos with each other.

Every score is within [0, 1], lower = ask sooner. :func:`review_priority` is the one the product uses; the
others are the candidates it was chosen from by measurement (``make bench-loop``, ``bench/loop.md``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# Below this gap between the two best departments the page says the sorter is torn between them.
TORN_MARGIN = 0.2


def review_priority(top: Sequence[tuple[str, float]], *, taught: Mapping[str, int] | None = None) -> float:
    """How urgently a person should see this photo: lower = ask sooner, always within [0, 1].

    Parameters
    ----------
    top
        The Result's department probabilities, best first (``(department, probability)``).
    taught
        Labelled examples per department the active head was fitted on; ``None`` when unknown.

    It is :func:`nearly_sure`: the waiting photo the head was closest to sorting by itself is asked first.
    Chosen on ``train/`` only by ``make bench-loop`` among margin, least confident, entropy, class-balanced margin
    and this (``bench/loop.md``): it ranked first, but every score, random and oldest-first came within the
    spread between seeds of each other there, so the order barely matters for what the head learns; it also puts
    the quickest decisions (the suggestion is usually right) first.
    """
    return nearly_sure(top, taught=taught)


def margin(top: Sequence[tuple[str, float]], *, taught: Mapping[str, int] | None = None) -> float:
    """The gap between the two best departments: a photo the head is torn about is asked first."""
    best, second = _two_best(top)
    return _unit(best - second)


def least_confident(top: Sequence[tuple[str, float]], *, taught: Mapping[str, int] | None = None) -> float:
    """The best department's probability: the photo the head is least sure of is asked first."""
    return _unit(_two_best(top)[0])


def nearly_sure(top: Sequence[tuple[str, float]], *, taught: Mapping[str, int] | None = None) -> float:
    """One minus the best department's probability: of the photos waiting (all under the head's threshold), the
    ones it was nearly sure enough to sort alone are asked first, where a decision moves the threshold's edge."""
    return _unit(1.0 - _two_best(top)[0])


def certainty(top: Sequence[tuple[str, float]], *, taught: Mapping[str, int] | None = None) -> float:
    """One minus the normalised entropy of the probabilities: the most spread-out photo is asked first.

    ``top`` may be cut short (a Result lists at most nine departments): the missing probability is spread evenly
    over the departments not listed (``taught`` says how many there are; else one more than listed).
    """
    listed = [max(0.0, float(p)) for _, p in top]
    departments = max(len(taught or {}), len(listed))
    missing = max(0.0, 1.0 - sum(listed))
    unlisted = departments - len(listed)
    if missing > 1e-6 and unlisted == 0:
        unlisted, departments = 1, departments + 1
    probabilities = listed + ([missing / unlisted] * unlisted if unlisted else [])
    if departments < 2:
        return 1.0
    entropy = -sum(p * math.log(p) for p in probabilities if p > 0.0)
    return _unit(1.0 - entropy / math.log(departments))


def balanced_margin(top: Sequence[tuple[str, float]], *, taught: Mapping[str, int] | None = None) -> float:
    """:func:`margin`, made smaller (asked sooner) when the two departments in question were taught with few
    photos: the square root of their mean count over the largest count. Without ``taught``, plain margin."""
    if not taught or not top:
        return margin(top, taught=taught)
    most = max(taught.values())
    if most <= 0:
        return margin(top, taught=taught)
    named = [taught.get(department, 0) for department, _ in top[:2]]
    return _unit(margin(top) * math.sqrt(sum(named) / len(named) / most))


def why_asked(top: Sequence[tuple[str, float]], *, taught: Mapping[str, int] | None = None) -> str:
    """One short human sentence for the review page, e.g. ``'torn between shirt (0.41) and t-shirt (0.38)'``."""
    if not top:
        return "the sorter has no suggestion for this photo"
    (first, p_first), *rest = top
    if not rest:
        return f"unsure it is {first} ({p_first:.2f})"
    second, p_second = rest[0]
    if p_first - p_second < TORN_MARGIN:
        sentence = f"torn between {first} ({p_first:.2f}) and {second} ({p_second:.2f})"
    else:
        sentence = f"probably {first} ({p_first:.2f}), not sure enough to sort it alone"
    few = _least_taught(first, second, taught)
    return f"{sentence}; only {taught[few]} {few} photos taught so far" if taught and few else sentence


def _least_taught(first: str, second: str, taught: Mapping[str, int] | None) -> str | None:
    """The less-taught of the two departments when it has under half the photos of the most-taught one."""
    if not taught:
        return None
    most = max(taught.values(), default=0)
    known = [d for d in (first, second) if d in taught]
    if not known or most <= 0:
        return None
    few = min(known, key=lambda d: taught[d])
    return few if taught[few] * 2 < most else None


def _two_best(top: Sequence[tuple[str, float]]) -> tuple[float, float]:
    probabilities = [*sorted((float(p) for _, p in top), reverse=True), 0.0, 0.0]
    return probabilities[0], probabilities[1]


def _unit(value: float) -> float:
    return min(1.0, max(0.0, value))
