"""The API's request and response bodies (pydantic): what Powertools validates and the OpenAPI document shows."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from refund_sorter.days import parse_day
from refund_sorter.errors import ErrorCode, InvalidRequestError
from refund_sorter.results import Result  # noqa: TC001 - pydantic resolves field types at runtime


def _a_day(text: str) -> str:
    # One rule and one message for every bad day ("today", "2026-13-01", "25/11/2026"): the one in days.py,
    # raised as a validation error so it is answered like any other invalid parameter.
    try:
        return parse_day(text)
    except InvalidRequestError as exc:
        raise PydanticCustomError("day", "{reason}", {"reason": exc.message}) from None


DayParam = Annotated[
    str,
    AfterValidator(_a_day),
    Field(description="A UTC day, YYYY-MM-DD", examples=["2026-11-25"], json_schema_extra={"format": "date"}),
]


PHOTO_SOURCES = ("url", "s3_key", "image_base64")
# A synchronous Lambda invocation carries at most 6 MB (6,291,456 bytes), and API Gateway's whole event for the
# request (headers, the body, base64 when binary) must fit: a bigger request never reaches the function, API
# Gateway answers 413 itself. The local API Gateway stand-in refuses the same requests.
INVOCATION_PAYLOAD_BYTES = 6 * 1024 * 1024
# What that leaves for a photo sent inline: base64 makes 3 bytes 4, and the event's other fields take a few KB.
INLINE_PHOTO_BYTES = (INVOCATION_PAYLOAD_BYTES - 16 * 1024) * 3 // 4


class PredictionRequest(BaseModel):
    """Exactly one of ``url``, ``s3_key`` or ``image_base64``."""

    model_config = ConfigDict(
        extra="forbid",
        # The document states the rule _exactly_one_source enforces: exactly one source, and not null.
        json_schema_extra={
            "oneOf": [{"required": [name], "properties": {name: {"type": "string"}}} for name in PHOTO_SOURCES]
        },
    )

    url: (
        Annotated[str, Field(min_length=1, max_length=2048, examples=["https://example.com/return-1234.jpg"])] | None
    ) = None
    s3_key: Annotated[str, Field(min_length=1, max_length=1024, examples=["incoming/return-1234.jpg"])] | None = None
    # repr=False: Powertools formats the route's arguments into a debug message on every request; a 3 MB
    # photo's repr costs 5-10 ms even with debug logging off.
    image_base64: str | None = Field(
        None,
        description="The photo's bytes, base64; a data URL's data:image/...;base64, prefix is accepted. In AWS the "
        f"request must fit the {INVOCATION_PAYLOAD_BYTES:,} bytes a Lambda invocation carries, so a photo sent this "
        f"way can be at most about {INLINE_PHOTO_BYTES / 1e6:.1f} MB: API Gateway answers 413 to a bigger request "
        "before the function runs (so does the local stack). Send a bigger photo by s3_key or url.",
        repr=False,
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> PredictionRequest:
        given = [name for name in PHOTO_SOURCES if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of url, s3_key, image_base64 (got {', '.join(given) or 'none'})")
        return self


class ErrorDetail(BaseModel):
    code: ErrorCode = Field(description="Stable and machine-readable: branch on this")
    message: str = Field(description="What was wrong and how to fix it, for people")


class ErrorBody(BaseModel):
    """Every refusal and failure the API answers: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


class ReviewRequest(BaseModel):
    """A person's decision: where the item goes."""

    model_config = ConfigDict(extra="forbid")

    category: Annotated[str, Field(min_length=1, max_length=64, examples=["shoes"], description="The department")]
    revision: int | None = Field(
        None,
        ge=0,
        description="The revision of the prediction you saw. Without it the decision is only taken if nobody has "
        "decided yet; with it, only if nothing changed since (409 review_conflict otherwise)",
    )


class QueueCounts(BaseModel):
    """How much of the review queue is left: what the review page's progress shows."""

    date: str = Field(description="The night counted as today (the date filter, or today's UTC date)")
    left_today: int = Field(description="That night's Results still waiting for a person")
    done_today: int = Field(description="That night's Results a person decided")
    left: int = Field(description="Results waiting for a person, all nights")


class PredictionPage(BaseModel):
    date: str | None = Field(None, description="The day listed (optional for the review queue)")
    status: Literal["needs_review"] | None = Field(None, description="Set for the review queue")
    department: str | None = Field(None, description="The queue's predicted-department filter, if any")
    order: Literal["informative", "oldest"] | None = Field(None, description="The review queue's order")
    items: list[Result]
    next_token: str | None = Field(None, description="Pass as next_token for the next page")
    counts: QueueCounts | None = Field(None, description="The review queue's first page only")


class PhotoLink(BaseModel):
    url: str = Field(description="A short-lived link to the photo (a presigned S3 GET)")
    size: Literal["thumbnail", "full"] = Field(description="What the link shows: the thumbnail may fall back to full")
    expires_in: int = Field(description="Seconds the link works")


class DepartmentOut(BaseModel):
    id: str
    name: str
    description: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model_version: str
