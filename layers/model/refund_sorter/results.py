"""The Result: one DynamoDB item, one CSV row, one API response body (design.md §3)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from refund_sorter.errors import RefundSorterError  # noqa: TC001 - used at runtime by from_error


def utc_now() -> datetime:
    return datetime.now(UTC)


# ISO 8601, UTC, millisecond precision, "Z": sorts as text, which the by-day index relies on.
UtcTimestamp = Annotated[
    datetime,
    PlainSerializer(
        lambda t: t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"), return_type=str
    ),
]
Probability = Annotated[float, Field(ge=0, le=1)]
# The department of everything that is no product at all; the taxonomy maps ImageNet's animals, scenes, … here.
NOT_A_PRODUCT = "not_a_product"


class Status(StrEnum):
    CLASSIFIED = "classified"
    NEEDS_REVIEW = "needs_review"
    FAILED = "failed"
    REVIEWED = "reviewed"


class ReviewReason(StrEnum):
    """Why a photo waits for a person."""

    LOW_CONFIDENCE = "low_confidence"  # the department's probability is under the threshold
    NOT_A_PRODUCT = "not_a_product"  # the photo shows no product (an animal, a landscape, a meal)


class LabelScore(BaseModel):
    label: str
    confidence: Probability


class DepartmentScore(BaseModel):
    department: str
    confidence: Probability


class Review(BaseModel):
    """A person's decision. Confirming the model and correcting it are both decisions."""

    department: str = Field(description="Where the person sent the item")
    by: str = Field(description="Who decided: the signed-in user (or 'local' on the local stack)")
    at: UtcTimestamp = Field(default_factory=utc_now)


class ReviewEvent(BaseModel):
    """One line of a Result's review history: a decision, or the taking back of one. The history only grows, so
    no decision is ever lost, even an undone or overruled one."""

    action: Literal["decided", "undone"]
    department: str = Field(description="The department chosen (decided) or taken back (undone)")
    by: str
    at: UtcTimestamp = Field(default_factory=utc_now)


class ResultError(BaseModel):
    code: str = Field(description="Stable machine-readable reason, e.g. corrupt_image")
    message: str = Field(description="What went wrong, for people")


class Result(BaseModel):
    """A photo's classification (or why there is none)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="Stable id: derived from the photo's origin, so a rerun finds it again")
    source: str = Field(description="s3://bucket/key or the URL the photo came from")
    status: Status
    prediction: str | None = Field(None, description="The model's department (see GET /departments); never overwritten")
    confidence: Probability | None = Field(None, description="The model's probability of that department")
    label: str | None = Field(None, description="Top ImageNet label")
    label_confidence: Probability | None = None
    top_k: list[LabelScore] = Field(default_factory=list)
    top_departments: list[DepartmentScore] = Field(
        default_factory=list, description="The model's most likely departments, best first (a reviewer's choices)"
    )
    model_version: str
    timestamp: UtcTimestamp = Field(default_factory=utc_now)
    error: ResultError | None = Field(None, description="Only for status failed")
    review_reason: ReviewReason | None = Field(
        None, description="Why a person was asked (status needs_review; kept once reviewed, for the review rate)"
    )
    department: str | None = Field(
        None,
        description="Where the item goes now: the person's decision when reviewed, the prediction when classified, "
        "empty while needs_review or failed",
    )
    review: Review | None = Field(None, description="The person's decision, once one was made")
    review_history: list[ReviewEvent] = Field(
        default_factory=list, description="Every decision and undo on this Result, oldest first"
    )
    revision: int = Field(
        0, ge=0, description="Counts the decisions and undos; a PATCH that names it only applies to that revision"
    )
    photo_key: str | None = Field(
        None, description="Where the photo is kept now, in the images bucket (processed/, failed/, uploads/)"
    )
    priority: float | None = Field(
        None,
        description="needs_review only: how soon a person should see it in the informative queue (lower = sooner), "
        "fixed when the model answered; absent on Results stored before the queue had an order",
    )
    asked_because: str | None = Field(
        None, description="needs_review only: why a person is asked, in one sentence (the review page shows it)"
    )

    @classmethod
    def from_error(cls, *, id: str, source: str, error: RefundSorterError, model_version: str) -> Result:
        return cls(
            id=id,
            source=source,
            status=Status.FAILED,
            model_version=model_version,
            error=ResultError(code=error.code.value, message=error.message),
        )

    @property
    def day(self) -> str:
        """The UTC day the result belongs to: exports and listings are by day."""
        return self.timestamp.astimezone(UTC).date().isoformat()


def decide(department: str, confidence: float, threshold: float) -> tuple[Status, ReviewReason | None]:
    """The rule that decides whether a photo is sorted automatically or waits for a person."""
    if department == NOT_A_PRODUCT:
        return Status.NEEDS_REVIEW, ReviewReason.NOT_A_PRODUCT
    if confidence < threshold:
        return Status.NEEDS_REVIEW, ReviewReason.LOW_CONFIDENCE
    return Status.CLASSIFIED, None


def stable_id(*parts: str) -> str:
    """A short id that is the same every time for the same origin (bucket, key, ETag; or content digest)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:32]
