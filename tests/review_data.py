"""A review queue made of real model output: the sample photos (they ship in wheels) classified once by the real
model, with their real thumbnails, copied into a store and bucket as many times as a test or benchmark needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache, partial
from typing import TYPE_CHECKING, Any

from refund_sorter.photos import Photo
from refund_sorter.results import ReviewReason, Status
from refund_sorter.vision.sorter import asked, get_sorter
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


def seed_ranked(
    store: ResultStore, bucket: PhotoBucket, count: int, *, ranked: bool = True, start: int = 0
) -> list[Result]:
    """``count`` waiting Results of the real model's answers on the sample photos, one second apart an hour ago;
    ``ranked``: with the priority and sentence the sorter gives a waiting photo, else as Results stored before
    the queue had an order (neither). Returns them in the order seeded."""
    samples = sample_outcomes()
    began = datetime.now(UTC) - timedelta(hours=1)
    seeded = []
    for index in range(start, start + count):
        result, thumbnail = samples[index % len(samples)]
        reason = result.review_reason or ReviewReason.LOW_CONFIDENCE
        top = [(d.department, d.confidence) for d in result.top_departments]
        # Vary the answer a little per copy so priorities differ, as they do between real photos.
        top = [(top[0][0], round(top[0][1] * (1 - index / 100), 6)), *top[1:]]
        question: dict[str, Any] = asked(top, reason, None) if ranked else {"priority": None, "asked_because": None}
        waiting = result.model_copy(
            update={
                "id": f"{'r' if ranked else 'u'}{index:03d}-{result.id}"[:64],
                "status": Status.NEEDS_REVIEW,
                "review_reason": reason,
                "department": None,
                "timestamp": began + timedelta(seconds=index),
                **question,
            }
        )
        assert store.add(waiting)
        bucket.put_thumbnail(waiting.id, thumbnail)
        seeded.append(waiting)
    return seeded


def informative_order(results: list[Result]) -> list[str]:
    """The ids in the informative queue's order: by priority, then those without one, oldest first."""
    ranked = sorted((r for r in results if r.priority is not None), key=lambda r: (r.priority or 0.0, r.id))
    unranked = sorted((r for r in results if r.priority is None), key=lambda r: (r.timestamp, r.id))
    return [r.id for r in ranked + unranked]
