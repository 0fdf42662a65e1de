"""Which waiting photo a person should see first: the one whose answer teaches the head most.

Two pure functions of a Result's ``top_departments`` (its department probabilities, best first) and, for class
balance, the labelled photos per department the active head was fitted on (``version.json``'s
``training.photos_per_department``). Both are static per Result, computed once when it is written, so the
review queue can be a DynamoDB index sorted on :func:`review_priority`: it cannot look at the other waiting
photos, so no diversity term that compares photos with each other.

The formula is chosen by measurement (``make bench-loop``, ``bench/loop.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


def review_priority(top: Sequence[tuple[str, float]], *, taught: Mapping[str, int] | None = None) -> float:
    """How urgently a person should see this photo: lower = ask sooner, always within [0, 1].

    Parameters
    ----------
    top
        The Result's department probabilities, best first (``(department, probability)``).
    taught
        Labelled examples per department the active head was fitted on; ``None`` when unknown.

    Plain margin between the two best departments: a photo the head is torn about is asked first.
    """
    best, second = _two_best(top)
    return _unit(best - second)


def why_asked(top: Sequence[tuple[str, float]], *, taught: Mapping[str, int] | None = None) -> str:
    """One short human sentence for the review page, e.g. ``'torn between shirt (0.41) and t-shirt (0.38)'``."""
    if not top:
        return "the sorter has no suggestion for this photo"
    (first, p_first), *rest = top
    if not rest:
        return f"unsure it is {first} ({p_first:.2f})"
    second, p_second = rest[0]
    if p_first - p_second < TORN_MARGIN:
        return f"torn between {first} ({p_first:.2f}) and {second} ({p_second:.2f})"
    return f"probably {first} ({p_first:.2f}), but not sure enough to sort it alone"


# Below this gap between the two best departments the page says the sorter is torn between them.
TORN_MARGIN = 0.2


def _two_best(top: Sequence[tuple[str, float]]) -> tuple[float, float]:
    probabilities = sorted((float(p) for _, p in top), reverse=True)
    return (probabilities + [0.0, 0.0])[0], (probabilities + [0.0, 0.0])[1]


def _unit(value: float) -> float:
    return min(1.0, max(0.0, value))
