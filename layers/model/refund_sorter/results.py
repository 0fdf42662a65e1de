"""The Result: one DynamoDB item, one CSV row, one API response body (design.md §3)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

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


class Status(StrEnum):
    CLASSIFIED = "classified"
    NEEDS_REVIEW = "needs_review"
    FAILED = "failed"
    REVIEWED = "reviewed"


class LabelScore(BaseModel):
    label: str
    confidence: Probability


class ResultError(BaseModel):
    code: str = Field(description="Stable machine-readable reason, e.g. corrupt_image")
    message: str = Field(description="What went wrong, for people")


class Result(BaseModel):
    """A photo's classification (or why there is none)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="Stable id: derived from the photo's origin, so a rerun finds it again")
    source: str = Field(description="s3://bucket/key or the URL the photo came from")
    status: Status
    prediction: str | None = Field(None, description="Refund department id (see GET /departments)")
    confidence: Probability | None = Field(None, description="Probability of that department: sum over its classes")
    label: str | None = Field(None, description="Top ImageNet label")
    label_confidence: Probability | None = None
    top_k: list[LabelScore] = Field(default_factory=list)
    model_version: str
    timestamp: UtcTimestamp = Field(default_factory=utc_now)
    error: ResultError | None = Field(None, description="Only for status failed")
    reviewed_at: UtcTimestamp | None = Field(None, description="When a person set the department (status reviewed)")

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


def stable_id(*parts: str) -> str:
    """A short id that is the same every time for the same origin (bucket, key, ETag; or content digest)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:32]
