"""A review queue made of real model output: the sample photos (they ship in wheels) classified once by the real
model, with their real thumbnails, copied into a store and bucket as many times as a test or benchmark needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache, partial
from typing import TYPE_CHECKING

from refund_sorter.photos import Photo
from refund_sorter.results import ReviewReason, Status
from refund_sorter.vision.sorter import get_sorter
from refund_sorter_cli.samples import PHOTOS, photo_bytes

if TYPE_CHECKING:
    from refund_sorter.results import Result
    from refund_sorter.storage.base import ResultStore
    from refund_sorter.storage.bucket import PhotoBucket


@cache
def sample_outcomes() -> tuple[tuple[Result, bytes], ...]:
    """Each sample photo's Result and thumbnail, from the real sorter (once per process)."""
    photos = [Photo(id=name.replace("/", "-"), source=name, read=partial(photo_bytes, name)) for name in PHOTOS]
    outcomes = get_sorter().classify(photos, thumbnails=True)
    return tuple((o.result, o.thumbnail) for o in outcomes if o.result is not None and o.thumbnail is not None)


def seed_queue(
    store: ResultStore,
    bucket: PhotoBucket,
    count: int,
    *,
    newest: datetime | None = None,
    spacing: timedelta = timedelta(seconds=1),
) -> list[Result]:
    """``count`` Results waiting for a person, oldest first, one second apart and ending at ``newest`` (now by
    default), each with a thumbnail in the bucket. Returns them in queue order."""
    newest = newest or datetime.now(UTC)
    samples = sample_outcomes()
    seeded = []
    for index in range(count):
        result, thumbnail = samples[index % len(samples)]
        timestamp = newest - spacing * (count - 1 - index)
        waiting = result.model_copy(
            update={
                "id": f"{timestamp:%Y%m%d%H%M%S%f}-{result.id}"[:64],  # one per seeded moment: seeding twice adds
                "status": Status.NEEDS_REVIEW,
                "review_reason": result.review_reason or ReviewReason.LOW_CONFIDENCE,
                "department": None,
                "timestamp": timestamp,
            }
        )
        store.add(waiting)
        bucket.put_thumbnail(waiting.id, thumbnail)
        seeded.append(waiting)
    return seeded
