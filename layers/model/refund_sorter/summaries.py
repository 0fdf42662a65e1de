"""A night in numbers: what the review page's summary view draws (counts, the review rate, a histogram).

Computed in one pass over the night's Results (streamed from the store), so its cost is one by-day query.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from refund_sorter.results import Status

if TYPE_CHECKING:
    from collections.abc import Iterable

    from refund_sorter.results import Result

# Ten bars of 0.1 each: fine enough to show where the threshold cuts, coarse enough to read at a glance.
HISTOGRAM_BINS = 10


class DepartmentCounts(BaseModel):
    department: str = Field(description="Where the items go now (the model's prediction while they wait)")
    classified: int = 0
    needs_review: int = 0
    reviewed: int = 0
    total: int = 0


class ConfidenceBin(BaseModel):
    low: float
    high: float
    classified: int = Field(0, description="Sorted automatically")
    asked: int = Field(0, description="Sent to a person (waiting or decided)")


class TrendNight(BaseModel):
    """One nightly run, as the Export step recorded it (``nightly-trend.json``)."""

    day: str
    run: str = ""
    photos: int = 0
    auto_sorted_share: float | None = Field(None, description="Share of the night sorted without a person")
    review_rate: float | None = Field(None, description="Share of the night sent to a person")
    review_backlog: int | None = Field(None, description="Results waiting for a person after that night")
    model_version: str | None = Field(None, description="The model that sorted most of the night")


class NightSummary(BaseModel):
    date: str
    total: int = 0
    by_status: dict[str, int] = Field(default_factory=dict)
    by_department: list[DepartmentCounts] = Field(default_factory=list, description="Largest first")
    asked: int = Field(0, description="Results a person was asked about (needs_review now or reviewed since)")
    review_rate: float = Field(0.0, description="asked / Results with a prediction (failed ones excluded)")
    decided: int = Field(0, description="Results a person decided")
    confirmed: int = Field(0, description="Decisions that kept the model's prediction")
    corrected: int = Field(0, description="Decisions that chose another department")
    reviewers: dict[str, int] = Field(default_factory=dict, description="Decisions in force, per person")
    confidence_histogram: list[ConfidenceBin] = Field(default_factory=list)
    trend: list[TrendNight] = Field(
        default_factory=list, description="The last nightly runs, oldest first: is the sorter sorting more?"
    )


def summarize(day: str, results: Iterable[Result]) -> NightSummary:
    """Count one night's Results (``results`` may be a stream: it is read once)."""
    statuses: Counter[str] = Counter()
    departments: dict[str, DepartmentCounts] = {}
    reviewers: Counter[str] = Counter()
    bins = [
        ConfidenceBin(low=round(i / HISTOGRAM_BINS, 2), high=round((i + 1) / HISTOGRAM_BINS, 2))
        for i in range(HISTOGRAM_BINS)
    ]
    asked = predicted = confirmed = corrected = 0
    for result in results:
        statuses[result.status.value] += 1
        if result.status is Status.FAILED or result.prediction is None:
            continue
        predicted += 1
        was_asked = result.status is Status.NEEDS_REVIEW or result.review_reason is not None
        asked += was_asked
        where = result.department or result.prediction
        counts = departments.setdefault(where, DepartmentCounts(department=where))
        setattr(counts, result.status.value, getattr(counts, result.status.value) + 1)
        counts.total += 1
        if result.review is not None:
            reviewers[result.review.by] += 1
            confirmed += result.review.department == result.prediction
            corrected += result.review.department != result.prediction
        confidence = result.confidence or 0.0
        bar = bins[min(HISTOGRAM_BINS - 1, int(confidence * HISTOGRAM_BINS))]
        if was_asked:
            bar.asked += 1
        else:
            bar.classified += 1
    return NightSummary(
        date=day,
        total=sum(statuses.values()),
        by_status=dict(statuses),
        by_department=sorted(departments.values(), key=lambda d: (-d.total, d.department)),
        asked=asked,
        review_rate=round(asked / predicted, 4) if predicted else 0.0,
        decided=confirmed + corrected,
        confirmed=confirmed,
        corrected=corrected,
        reviewers=dict(reviewers.most_common()),
        confidence_histogram=bins,
    )
