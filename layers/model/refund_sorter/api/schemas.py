"""The API's request and response bodies (pydantic): what Powertools validates and the OpenAPI document shows."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from refund_sorter.results import Result  # noqa: TC001 - pydantic resolves field types at runtime

DayParam = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$", examples=["2026-11-25"])]


class PredictionRequest(BaseModel):
    """Exactly one of ``url``, ``s3_key`` or ``image_base64``."""

    model_config = ConfigDict(extra="forbid")

    url: (
        Annotated[str, Field(min_length=1, max_length=2048, examples=["https://example.com/return-1234.jpg"])] | None
    ) = None
    s3_key: Annotated[str, Field(min_length=1, max_length=1024, examples=["incoming/return-1234.jpg"])] | None = None
    # repr=False: Powertools formats the route's arguments into a debug message on every request; a 3 MB
    # photo's repr costs 5-10 ms even with debug logging off.
    image_base64: str | None = Field(None, description="The photo's bytes, base64", repr=False)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> PredictionRequest:
        given = [name for name in ("url", "s3_key", "image_base64") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of url, s3_key, image_base64 (got {', '.join(given) or 'none'})")
        return self


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
