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
        description="The photo's bytes, base64; a data URL's data:image/...;base64, prefix is accepted",
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
    model_config = ConfigDict(extra="forbid")

    category: Annotated[str, Field(min_length=1, max_length=64, examples=["shoes"])]


class PredictionPage(BaseModel):
    date: str
    items: list[Result]
    next_token: str | None = Field(None, description="Pass as next_token for the next page")


class DepartmentOut(BaseModel):
    id: str
    name: str
    description: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model_version: str
