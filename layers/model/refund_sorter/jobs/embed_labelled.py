"""Embedding labelled photos is a job: decode each ``labelled/<department>/`` photo version, run the backbone, and
record its features (one object each, where :mod:`refund_sorter.heads.labelled` names them), chunk by chunk.

It runs when photos land (the embed function, on S3 ObjectCreated) and on request for the ones still without
features (``{"embed_missing": true}``), e.g. after the backbone changed: features are kept per backbone, so a new
backbone finds every labelled photo missing and re-embeds them all, reporting how many are left.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from refund_sorter.heads.embeddings import to_bytes
from refund_sorter.heads.labelled import features_key

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from refund_sorter.config import Settings
    from refund_sorter.storage.bucket import PhotoBucket, StoredPhoto
    from refund_sorter.vision.sorter import Sorter

logger = logging.getLogger(__name__)


@dataclass
class EmbedReport:
    """What :func:`embed_labelled` did: photos embedded, photos that could not be read (key → why), and
    photos it had no time left for."""

    embedded: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    remaining: int = 0
    milliseconds_per_photo: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "embedded": self.embedded,
            "failed": self.failed,
            "remaining": self.remaining,
            "milliseconds_per_photo": self.milliseconds_per_photo,
        }


def embed_labelled(
    sorter: Sorter,
    bucket: PhotoBucket,
    photos: Iterable[StoredPhoto],
    *,
    seconds_left: Callable[[], float] = lambda: float("inf"),
    chunk: int = 16,
) -> EmbedReport:
    """Record the features of these labelled photo versions (one object each), chunk by chunk.

    ``sorter`` should apply no head (:func:`backbone_sorter`): the features are the backbone's whatever is
    active. A photo that cannot be read is reported, never fatal; one replaced meanwhile (its ETag no longer
    matches) is skipped, as its new version brings its own event. Stops taking chunks when
    ``seconds_left()`` drops under the settings' ``batch_safety_seconds``; what is left is counted.
    """
    backbone = sorter.classifier.info.version
    todo = list(photos)
    report = EmbedReport()
    started = time.perf_counter()
    position = 0
    while position < len(todo) and seconds_left() > bucket.settings.batch_safety_seconds:
        batch = todo[position : position + chunk]
        position += len(batch)
        by_id = {stored.result_id: stored for stored in batch}
        for outcome in sorter.classify(bucket.photo(stored) for stored in batch):
            stored = by_id[outcome.photo.id]
            if outcome.embedding is None:
                why = outcome.result.error.code if outcome.result and outcome.result.error else "not readable now"
                report.failed[stored.key] = str(why)
                logger.warning("no features for %s: %s", bucket.uri(stored.key), why)
                continue
            body = to_bytes([stored.result_id], outcome.embedding[np.newaxis, :], backbone)
            bucket.client.put_object(Bucket=bucket.name, Key=features_key(bucket, backbone, stored), Body=body)
            report.embedded += 1
    report.remaining = len(todo) - position
    if report.embedded:
        report.milliseconds_per_photo = round((time.perf_counter() - started) * 1000 / report.embedded, 1)
    return report


def backbone_sorter(settings: Settings) -> Sorter:
    """A Sorter that never applies a head (so never reads the ACTIVE pointer): training learns on the backbone's
    features (and measures ImageNet's not-a-product gate), whatever head is active."""
    from refund_sorter.heads.active import FixedHead
    from refund_sorter.vision.sorter import Sorter

    return Sorter(settings, heads=FixedHead(None))
