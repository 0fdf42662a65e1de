"""The API's service (what the routes call) on an in-memory store and bucket: get, list, review, predict."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast

import pytest

from refund_sorter.api.schemas import PredictionRequest, ReviewRequest
from refund_sorter.api.service import PredictionService
from refund_sorter.errors import InvalidRequestError, NotFoundError
from refund_sorter.results import Result, Status
from refund_sorter_cli.samples import photo_bytes
from tests.fakes import MemoryResultStore
from tests.memory_bucket import MemoryBucket
from tests.results import a_result

if TYPE_CHECKING:
    from refund_sorter.config import Settings
    from refund_sorter.storage.dynamodb import DynamoResultStore
    from refund_sorter.vision.sorter import Sorter

DAY = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


@pytest.fixture
def store() -> MemoryResultStore:
    return MemoryResultStore()


@pytest.fixture
def service(settings: Settings, sorter: Sorter, store: MemoryResultStore) -> PredictionService:
    # The service names DynamoResultStore for its idempotency table's client; these tests never reach that.
    return PredictionService(settings, sorter, store=cast("DynamoResultStore", store), bucket=MemoryBucket(settings))


def stored(store: MemoryResultStore, result_id: str, when: datetime) -> Result:
    """A photo waiting for a person, stored at ``when``."""
    result = a_result(
        id=result_id, status=Status.NEEDS_REVIEW, department=None, confidence=0.41, review_reason="low_confidence",
        timestamp=when,
    )  # fmt: skip
    store.add(result)
    return result


def test_predict_from_bytes_stores_the_result(service: PredictionService, store: MemoryResultStore) -> None:
    image = base64.b64encode(photo_bytes("skimage/camera")).decode()
    result, created = service.predict(PredictionRequest(image_base64=image))
    assert created
    assert result.label == "tripod"
    assert store.get(result.id) == result
    assert service.get(result.id) == result


def test_the_same_s3_key_twice_is_one_result(service: PredictionService, store: MemoryResultStore) -> None:
    bucket = cast("MemoryBucket", service.bucket)
    bucket.put("incoming/camera.png", photo_bytes("skimage/camera"))
    first, created = service.predict(PredictionRequest(s3_key="incoming/camera.png"))
    again, created_again = service.predict(PredictionRequest(s3_key="incoming/camera.png"))
    assert (created, created_again) == (True, False)
    assert again == first


def test_get_unknown_and_overlong_ids_are_not_found(service: PredictionService) -> None:
    for result_id in ("0" * 32, "x" * 65):
        with pytest.raises(NotFoundError):
            service.get(result_id)


def test_list_day_pages_through_one_day_only(service: PredictionService, store: MemoryResultStore) -> None:
    for i in range(3):
        stored(store, f"day-{i}", DAY + timedelta(minutes=i))
    stored(store, "next-day", DAY + timedelta(days=1))
    first = service.list_day("2026-11-25", limit=2, next_token=None)
    assert [r.id for r in first.items] == ["day-0", "day-1"]
    assert first.next_token is not None
    second = service.list_day("2026-11-25", limit=2, next_token=first.next_token)
    assert [r.id for r in second.items] == ["day-2"]
    assert second.next_token is None


@pytest.mark.parametrize("day", ["2026-13-01", "25/11/2026", "today"])
def test_list_day_refuses_what_is_not_a_day(service: PredictionService, day: str) -> None:
    with pytest.raises(InvalidRequestError):
        service.list_day(day, limit=10, next_token=None)


def test_review_records_the_decision_and_keeps_the_models_answer(
    service: PredictionService, store: MemoryResultStore
) -> None:
    original = stored(store, "waiting", DAY)
    reviewed = service.review("waiting", ReviewRequest(category="toys_games"))
    assert reviewed.status is Status.REVIEWED
    assert reviewed.department == "toys_games"
    assert reviewed.review is not None and reviewed.review.department == "toys_games"
    assert (reviewed.prediction, reviewed.confidence) == (original.prediction, original.confidence)
    assert store.get("waiting") == reviewed


def test_review_refuses_an_unknown_department_and_an_unknown_id(
    service: PredictionService, store: MemoryResultStore
) -> None:
    stored(store, "waiting", DAY)
    with pytest.raises(InvalidRequestError, match="unknown category"):
        service.review("waiting", ReviewRequest(category="spaceships"))
    unchanged = store.get("waiting")
    assert unchanged is not None and unchanged.status is Status.NEEDS_REVIEW
    with pytest.raises(NotFoundError):
        service.review("0" * 32, ReviewRequest(category="toys_games"))


def test_export_of_a_small_day_is_inline_csv(service: PredictionService, store: MemoryResultStore) -> None:
    stored(store, "a", DAY)
    text, link = service.export("2026-11-25")
    assert link is None
    assert len(text.splitlines()) == 2  # header + 1
